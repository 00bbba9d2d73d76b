"""Issue #3 end to end on three namespace hosts: pods reach each other by pod IP over the
agents' VXLAN overlay, leases survive restarts, kernel entries come and go with peers."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import AsyncIterator, Callable

import pytest

from atoll import errors, kinds
from atoll.v1 import network_pb2
from tests.integration.cluster import Cluster, pinned_pod, start_cluster
from tests.integration.daemons import eventually, node_ready, wait_running
from tests.integration.testbed import TestBed

SUBNET = kinds.by_name("Subnet")


@pytest.fixture
async def three(testbed_factory: Callable[..., TestBed]) -> AsyncIterator[Cluster]:
    cluster = await start_cluster(testbed_factory, 3)
    try:
        yield cluster
    finally:
        await cluster.close()


async def leases(cluster: Cluster) -> dict[str, network_pb2.Subnet]:
    items, _ = await cluster.client.list(SUBNET)
    return {lease.spec.node_name: lease for lease in items if isinstance(lease, network_pb2.Subnet)}


async def kernel_entries(cluster: Cluster, i: int) -> str:
    routes = await cluster.sh(i, "ip", "route", "show", "dev", "flannel.1")
    neigh = await cluster.sh(i, "ip", "neigh", "show", "dev", "flannel.1")
    fdb = await cluster.sh(i, "bridge", "fdb", "show", "dev", "flannel.1")
    return "\n".join(sorted(routes.splitlines()) + sorted(neigh.splitlines()) + sorted(fdb.splitlines()))


async def test_pods_reach_each_other_across_hosts(three: Cluster) -> None:
    c = three.client
    held = await eventually(lambda: _n_leases(three, 3), what="three leases")
    for i in range(3):
        await c.create(pinned_pod(f"web-{i}", three.node(i)))
    pods = [await wait_running(c, f"web-{i}") for i in range(3)]
    for i, p in enumerate(pods):
        subnet = ipaddress.ip_network(held[three.node(i)].spec.cidr)
        assert ipaddress.ip_address(p.status.pod_ip) in subnet, (p.status.pod_ip, subnet)
        env = await three.sh(i, "cat", str(three.workers[i].dir / "subnet.env"))
        assert (
            "FLANNEL_NETWORK=10.100.0.0/16" in env
            and f"FLANNEL_SUBNET={subnet.network_address + 1}/24" in env
        )
        node = await c.get(kinds.by_name("Node"), "", three.node(i))
        assert node.spec.pod_cidr == str(subnet)  # type: ignore[attr-defined]
    # A pod can run before its peers have routed its node's new lease (as in flannel: the
    # overlay converges on its own); once they have, every pair must answer at the first try.
    for i in range(3):
        await eventually(lambda i=i: _peers_programmed(three, i, 2), what=f"peers programmed on node-{i}")
    for i, source in enumerate(pods):
        for j, target in enumerate(pods):
            if i == j:
                continue
            code, out = await three.pod_exec(
                i, source, "timeout", "5", "ping", "-c", "1", "-W", "3", target.status.pod_ip
            )
            assert code == 0, f"ping {source.metadata.name} -> {target.metadata.name}: {out}"
            code, out = await three.pod_exec(
                i, source, "timeout", "5", "wget", "-qO-", f"http://{target.status.pod_ip}/"
            )
            assert code == 0 and "Apache" in out, (
                f"http {source.metadata.name} -> {target.metadata.name}: {out}"
            )
    # The server saw the client's own pod IP: no masquerade inside the overlay.
    for j, target in enumerate(pods):
        cid = target.status.container_statuses[0].container_id.removeprefix("docker://")
        container = await asyncio.to_thread(three.workers[j].docker().containers.get, cid)
        logs = (await asyncio.to_thread(container.logs)).decode()
        for i, source in enumerate(pods):
            if i != j:
                assert re.search(rf"\b{re.escape(source.status.pod_ip)}\b", logs), (
                    source.status.pod_ip,
                    logs,
                )


async def _n_leases(cluster: Cluster, n: int) -> dict[str, network_pb2.Subnet] | None:
    held = await leases(cluster)
    return held if len(held) == n else None


async def test_kill_9_keeps_subnet_and_kernel_entries(three: Cluster) -> None:
    before_leases = await eventually(lambda: _n_leases(three, 3), what="three leases")
    await eventually(lambda: _peers_programmed(three, 0, 2), what="peers programmed on node-0")
    before = await kernel_entries(three, 0)
    three.kill_agent(0)
    agent = three.agent_for(0).start()
    three.agents[three.node(0)] = agent
    await eventually(lambda: node_ready(three.client, three.node(0)), what="agent back")
    await eventually(lambda: _logged(agent, "leased subnet"), what="lease renewed after restart")
    after_leases = await leases(three)
    assert after_leases[three.node(0)].spec.cidr == before_leases[three.node(0)].spec.cidr
    assert await kernel_entries(three, 0) == before


async def _logged(agent: object, text: str) -> bool:
    return text in agent.process.read_log()  # type: ignore[attr-defined]


async def _peers_programmed(cluster: Cluster, i: int, peers: int) -> bool:
    routes = await cluster.sh(i, "ip", "route", "show", "dev", "flannel.1")
    fdb = await cluster.sh(i, "bridge", "fdb", "show", "dev", "flannel.1")
    neigh = await cluster.sh(i, "ip", "neigh", "show", "dev", "flannel.1")
    return (
        len([r for r in routes.splitlines() if "onlink" in r]) == peers
        and len([f for f in fdb.splitlines() if " dst " in f]) == peers
        and len([n for n in neigh.splitlines() if "PERMANENT" in n]) == peers
    )


async def test_host_removed_and_readded(three: Cluster) -> None:
    held = await eventually(lambda: _n_leases(three, 3), what="three leases")
    gone = held[three.node(2)].spec.cidr
    await eventually(lambda: _peers_programmed(three, 0, 2), what="two peers on node-0")
    three.kill_agent(2, 15)
    await three.client.delete(SUBNET, "", held[three.node(2)].metadata.name)

    async def entries_gone() -> bool:
        routes = await three.sh(0, "ip", "route", "show", "dev", "flannel.1")
        return gone.split("/")[0] not in routes and await _peers_programmed(three, 0, 1)

    await eventually(entries_gone, what="node-2's route, neighbour and FDB entries removed on node-0")
    await three.start_agent(2)
    await eventually(lambda: _n_leases(three, 3), what="node-2 leased again")
    await eventually(lambda: _peers_programmed(three, 0, 2), what="node-2's entries back on node-0")
    await eventually(lambda: _peers_programmed(three, 1, 2), what="node-2's entries back on node-1")


async def test_network_config_change_that_orphans_is_refused(three: Cluster) -> None:
    await eventually(lambda: _n_leases(three, 3), what="three leases")
    net = await three.client.get(kinds.by_name("Network"), "", "default")
    assert isinstance(net, network_pb2.Network)
    net.spec.subnet_max = "10.100.50.0"
    with pytest.raises(errors.FailedPrecondition, match="orphan"):
        await three.client.update(net)
