"""NodePort and LoadBalancer services through the real API: node ports allocated from the
configured range, never twice, kept on update, given back on delete and on a change of type."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from atoll import errors, kinds
from atoll.v1 import meta_pb2, workloads_pb2
from coordinator.network import nodeports
from tests.functional.harness import Cluster

SERVICE = kinds.by_name("Service")
NODE_PORT = workloads_pb2.SERVICE_TYPE_NODE_PORT


@pytest.fixture
async def small(tmp_path: pathlib.Path) -> AsyncIterator[Cluster]:
    """A range of three ports, so that it runs out."""
    c = await Cluster(tmp_path, service_node_port_range="31000-31002").start()
    try:
        yield c
    finally:
        await c.stop()


def service(
    name: str, *node_ports: int, type: workloads_pb2.ServiceType.ValueType = NODE_PORT
) -> workloads_pb2.Service:
    svc = workloads_pb2.Service()
    svc.metadata.name = name
    svc.spec.selector["app"] = name
    svc.spec.type = type
    for i, number in enumerate(node_ports or (0,)):
        svc.spec.ports.add(name=f"p{i}" if len(node_ports) > 1 else "", port=80 + i, node_port=number)
    return svc


async def held_keys(c: Cluster) -> list[str]:
    kvs, _ = await c.coordinator.store.list(nodeports.PREFIX)
    return [kv.key.removeprefix(nodeports.PREFIX) for kv in kvs]


async def test_allocated_from_the_range_never_twice_and_given_back(small: Cluster) -> None:
    client = small.client
    assert client is not None
    got = [await client.create(service(f"s{i}")) for i in range(3)]
    ports = sorted(s.spec.ports[0].node_port for s in got)  # type: ignore[attr-defined]
    assert ports == [31000, 31001, 31002]
    assert await held_keys(small) == ["31000", "31001", "31002"]
    with pytest.raises(errors.ResourceExhausted, match="31000-31002 is full"):
        await client.create(service("s3"))
    items, _ = await client.list(SERVICE)
    assert len(items) == 3  # nothing half-written
    # A cluster IP service never takes one.
    await client.create(service("plain", type=workloads_pb2.SERVICE_TYPE_UNSPECIFIED))
    await client.delete(SERVICE, "default", "s1")
    freed = got[1].spec.ports[0].node_port  # type: ignore[attr-defined]
    again = await client.create(service("s3"))
    assert again.spec.ports[0].node_port == freed  # type: ignore[attr-defined]


async def test_a_chosen_port_is_checked_by_name(small: Cluster) -> None:
    client = small.client
    assert client is not None
    await client.create(service("a", 31001))
    with pytest.raises(errors.InvalidArgument) as info:
        await client.create(service("b", 0, 31001))
    assert info.value.field == "spec.ports[1].nodePort"
    assert "already allocated" in info.value.message
    with pytest.raises(errors.InvalidArgument) as info:
        await client.create(service("c", 30080))
    assert info.value.field == "spec.ports[0].nodePort"
    assert "range of valid ports is 31000-31002" in info.value.message
    assert await held_keys(small) == ["31001"]  # the refused creates took nothing


async def test_kept_on_update_and_given_back_with_the_type(cluster: Cluster) -> None:
    client = cluster.client
    assert client is not None
    created = await client.create(service("web"))
    assert isinstance(created, workloads_pb2.Service)
    port = created.spec.ports[0].node_port
    assert 30000 <= port <= 32767
    # An update that leaves the node port out keeps it, like the cluster IP.
    sent = service("web")
    sent.spec.selector["tier"] = "front"
    updated = await client.update(sent)
    assert updated.spec.ports[0].node_port == port  # type: ignore[attr-defined]
    # Moving it to another free port takes that one and gives the old one back.
    sent.spec.ports[0].node_port = 30000 if port != 30000 else 30001
    moved = await client.update(sent)
    assert await held_keys(cluster) == [str(moved.spec.ports[0].node_port)]  # type: ignore[attr-defined]
    # Back to ClusterIP with the node port read back unchanged: dropped, and given back.
    current = await client.get(SERVICE, "default", "web")
    assert isinstance(current, workloads_pb2.Service)
    current.spec.type = workloads_pb2.SERVICE_TYPE_CLUSTER_IP
    plain = await client.update(current)
    assert [p.node_port for p in plain.spec.ports] == [0]  # type: ignore[attr-defined]
    assert await held_keys(cluster) == []
    # A ClusterIP service asking for one by number is refused by name.
    current = await client.get(SERVICE, "default", "web")
    current.spec.ports[0].node_port = 30005  # type: ignore[attr-defined]
    with pytest.raises(errors.InvalidArgument) as info:
        await client.update(current)
    assert info.value.field == "spec.ports[0].nodePort"
    await client.delete(SERVICE, "default", "web")
    assert await held_keys(cluster) == []


async def test_a_load_balancer_is_a_node_port_whose_status_says_none_exists(cluster: Cluster) -> None:
    client = cluster.client
    assert client is not None
    got = await client.create(service("lb", type=workloads_pb2.SERVICE_TYPE_LOAD_BALANCER))
    assert isinstance(got, workloads_pb2.Service)
    assert got.spec.ports[0].node_port
    assert got.status.HasField("load_balancer") and not got.status.load_balancer.ingress
    (condition,) = got.status.conditions
    assert (condition.type, condition.status, condition.reason) == (
        "LoadBalancerProvisioned",
        meta_pb2.CONDITION_STATUS_FALSE,
        "NoLoadBalancerProvider",
    )
    since = condition.last_transition_time
    got.spec.selector["tier"] = "front"
    updated = await client.update(got)
    assert updated.status.conditions[0].last_transition_time == since  # type: ignore[attr-defined]
    assert updated.status.conditions[0].observed_generation == 2  # type: ignore[attr-defined]
    got = await client.get(SERVICE, "default", "lb")
    got.spec.type = workloads_pb2.SERVICE_TYPE_NODE_PORT  # type: ignore[attr-defined]
    as_node_port = await client.update(got)
    assert not as_node_port.status.conditions  # type: ignore[attr-defined]
