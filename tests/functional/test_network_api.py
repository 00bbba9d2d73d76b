"""Overlay config and subnet leases through the real coordinator: uniqueness, renewal, orphans."""

from __future__ import annotations

import asyncio
import json
import pathlib
import random

import pytest

from agent.configview import NodeConfigView
from atoll import errors, kinds, rpc
from atoll.v1 import network_pb2, node_api_pb2, node_api_pb2_grpc
from coordinator.network.subnetleases import OWNER_PREFIX, LeaseManager
from coordinator.objects.registry import Registry
from coordinator.store.sqlite import SqliteStore
from tests.functional.harness import Cluster, eventually

NET = {
    "Network": "10.100.0.0/16",
    "SubnetLen": 24,
    "SubnetMin": "10.100.50.0",
    "SubnetMax": "10.100.199.0",
    "Backend": {"Type": "vxlan", "VNI": 1},
}


@pytest.fixture
async def net_cluster(tmp_path: pathlib.Path) -> Cluster:
    conf = tmp_path / "flannel.json"
    conf.write_text(json.dumps(NET))
    c = await Cluster(tmp_path, network_config=str(conf)).start()
    yield c  # type: ignore[misc]
    await c.stop()


def node_stub(cluster: Cluster) -> node_api_pb2_grpc.NodeServiceStub:
    """As admin, who may act as any node (a node's own certificate may act only as itself)."""
    assert cluster.admin is not None
    channel = rpc.open_channel(
        cluster.admin.server, credentials=cluster.admin.credentials(cluster.admin.server)
    )
    return node_api_pb2_grpc.NodeServiceStub(channel)


async def acquire(
    stub: node_api_pb2_grpc.NodeServiceStub, node: str, ip: str, mac: str
) -> network_pb2.Subnet:
    resp = await rpc.unary(
        stub.AcquireLease(node_api_pb2.AcquireLeaseRequest(node_name=node, public_ip=ip, vtep_mac=mac))
    )
    return resp.lease


async def test_concurrent_registration_never_shares_a_subnet(net_cluster: Cluster) -> None:
    stub = node_stub(net_cluster)
    leases = await asyncio.gather(
        *(acquire(stub, f"node-{i}", f"198.51.100.{i + 10}", f"02:00:00:00:00:{i:02x}") for i in range(60))
    )
    cidrs = [lease.spec.cidr for lease in leases]
    assert len(set(cidrs)) == 60
    assert all(c.startswith("10.100.") and c.endswith("/24") for c in cidrs)
    assert all(50 <= int(c.split(".")[2]) <= 199 for c in cidrs)
    # Asking again (a restarted agent) keeps the subnet and renews the lease.
    again = await acquire(stub, "node-7", "198.51.100.99", "02:00:00:00:00:99")
    assert again.spec.cidr == leases[7].spec.cidr
    assert again.spec.public_ip == "198.51.100.99"
    assert again.spec.expiration.ToNanoseconds() >= leases[7].spec.expiration.ToNanoseconds()
    assert net_cluster.client is not None
    listed, _ = await net_cluster.client.list(kinds.by_name("Subnet"))
    assert len(listed) == 60


async def test_bad_requests_and_orphaning_change_refused(net_cluster: Cluster) -> None:
    stub = node_stub(net_cluster)
    with pytest.raises(errors.InvalidArgument, match="public_ip"):
        await acquire(stub, "node-1", "not-an-ip", "02:00:00:00:00:01")
    lease = await acquire(stub, "node-1", "198.51.100.10", "02:00:00:00:00:01")
    assert net_cluster.client is not None
    net = await net_cluster.client.get(kinds.by_name("Network"), "", "default")
    assert isinstance(net, network_pb2.Network)
    net.spec.network = "10.200.0.0/16"
    net.spec.subnet_min, net.spec.subnet_max = "10.200.1.0", "10.200.100.0"
    with pytest.raises(errors.FailedPrecondition, match=f"orphan 1 existing lease.*{lease.spec.cidr}"):
        await net_cluster.client.update(net)
    bad = await net_cluster.client.get(kinds.by_name("Network"), "", "default")
    assert isinstance(bad, network_pb2.Network)
    bad.spec.backend.vni = 1 << 25
    with pytest.raises(errors.InvalidArgument) as info:
        await net_cluster.client.update(bad)
    assert info.value.field == "spec.backend.vni"


async def test_node_config_stream_carries_leases(net_cluster: Cluster) -> None:
    stub = node_stub(net_cluster)
    await acquire(stub, "node-a", "198.51.100.10", "02:00:00:00:00:0a")
    seen: list[node_api_pb2.NodeConfig] = []

    async def follow() -> None:
        async for resp in rpc.stream(
            stub.WatchNodeConfig(node_api_pb2.WatchNodeConfigRequest(node_name="node-a"))
        ):
            seen.append(resp.config)

    task = asyncio.create_task(follow())
    await eventually(lambda: _has(seen, 1), what="first node config")
    assert seen[-1].network.network == "10.100.0.0/16" and seen[-1].network.backend.port == 8472
    await acquire(stub, "node-b", "198.51.100.11", "02:00:00:00:00:0b")
    await eventually(lambda: _has(seen, 2, leases=2), what="config with the second lease")
    task.cancel()


async def test_node_config_stream_sends_lease_deltas_to_agents_that_accept_them(net_cluster: Cluster) -> None:
    stub = node_stub(net_cluster)
    await acquire(stub, "node-a", "198.51.100.10", "02:00:00:00:00:0a")
    seen: list[node_api_pb2.WatchNodeConfigResponse] = []
    view = NodeConfigView()

    async def follow() -> None:
        request = node_api_pb2.WatchNodeConfigRequest(node_name="node-a", accept_deltas=True)
        async for resp in rpc.stream(stub.WatchNodeConfig(request)):
            view.apply(resp)
            seen.append(resp)

    task = asyncio.create_task(follow())
    try:
        await eventually(lambda: _got(seen, 1), what="first node config")
        assert seen[0].HasField("config") and len(seen[0].config.leases) == 1
        await acquire(stub, "node-b", "198.51.100.11", "02:00:00:00:00:0b")
        await eventually(lambda: _got(seen, 2), what="the second lease")
        assert seen[1].HasField("delta") and not seen[1].HasField("config")
        assert [lease.spec.node_name for lease in seen[1].delta.leases] == ["node-b"]
        config = view.config()
        assert config.network.network == "10.100.0.0/16"
        assert sorted(lease.spec.node_name for lease in config.leases) == ["node-a", "node-b"]
    finally:
        task.cancel()


async def _got(seen: list[node_api_pb2.WatchNodeConfigResponse], n: int) -> bool:
    return len(seen) >= n


async def _has(seen: list[node_api_pb2.NodeConfig], n: int, leases: int = 1) -> bool:
    return len(seen) >= n and len(seen[-1].leases) == leases


async def test_expired_lease_is_reclaimed_only_after_ttl(tmp_path: pathlib.Path) -> None:
    store = await SqliteStore.open(tmp_path / "s.db")
    now = [1000.0]
    registry = Registry(store, clock=lambda: now[0])
    net = network_pb2.Network()
    net.metadata.name = "default"
    net.spec.network, net.spec.subnet_len = "10.100.0.0/16", 24
    net.spec.subnet_min = net.spec.subnet_max = "10.100.50.0"  # room for exactly one lease
    await registry.create(net)
    leases = LeaseManager(registry, ttl=100, clock=lambda: now[0], rng=random.Random(1))
    first = await leases.acquire("old", "198.51.100.10", "02:00:00:00:00:01")
    with pytest.raises(errors.ResourceExhausted):
        await leases.acquire("new", "198.51.100.11", "02:00:00:00:00:02")
    now[0] += 99
    with pytest.raises(errors.ResourceExhausted):
        await leases.acquire("new", "198.51.100.11", "02:00:00:00:00:02")
    now[0] += 2
    taken = await leases.acquire("new", "198.51.100.11", "02:00:00:00:00:02")
    assert taken.spec.cidr == first.spec.cidr and taken.spec.node_name == "new"
    assert await store.get(OWNER_PREFIX + "old") is None
    await store.close()
