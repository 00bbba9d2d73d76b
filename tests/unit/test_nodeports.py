"""The node port allocator and its rules, on the in-memory store: ranges, claims, carry-over, status."""

from __future__ import annotations

import random

import pytest

from atoll import errors
from atoll.v1 import meta_pb2, workloads_pb2
from coordinator.config import parse_port_range
from coordinator.network import nodeports
from coordinator.network.nodeports import NodePortAllocator
from coordinator.store.base import Op
from coordinator.store.memory import MemoryStore


def svc(*node_ports: int, type: int = workloads_pb2.SERVICE_TYPE_NODE_PORT) -> workloads_pb2.Service:
    s = workloads_pb2.Service()
    s.metadata.namespace, s.metadata.name = "default", "web"
    s.spec.type = type  # type: ignore[assignment]
    for i, number in enumerate(node_ports):
        s.spec.ports.add(name=f"p{i}", port=80 + i, protocol=meta_pb2.PROTOCOL_TCP, node_port=number)
    return s


def test_port_ranges_as_kubernetes_writes_them() -> None:
    assert parse_port_range("30000-32767", "r") == range(30000, 32768)
    assert parse_port_range("8080-8080", "r") == range(8080, 8081)
    for bad in ("30000", "a-b", "32767-30000", "0-10", "1-70000"):
        with pytest.raises(errors.InvalidArgument, match=r"^r: expected FIRST-LAST"):
            parse_port_range(bad, "r")


async def test_claims_take_new_ports_and_give_back_the_ones_dropped() -> None:
    store = MemoryStore()
    alloc = NodePortAllocator(store, range(30000, 30010), random.Random(1))
    new = svc(0, 30005)
    ops = await alloc.claim(new)
    picked = new.spec.ports[0].node_port
    assert picked in range(30000, 30010) and picked != 30005
    assert sorted((op.type, op.key) for op in ops) == sorted(
        [("create", f"/nodeports/{picked}"), ("create", "/nodeports/30005")]
    )
    await store.txn(ops)
    # The update keeps one port, moves the other: one create, one delete.
    moved = svc(picked, 30006)
    assert await alloc.claim(moved, new) == [
        Op("create", "/nodeports/30006", b"default/web"),
        Op("delete", "/nodeports/30005"),
    ]
    # Back to ClusterIP: every port given back.
    plain = svc(0, 0, type=workloads_pb2.SERVICE_TYPE_CLUSTER_IP)
    assert {op.key for op in await alloc.claim(plain, new)} == {f"/nodeports/{picked}", "/nodeports/30005"}
    assert {op.key for op in NodePortAllocator.release(new)} == {f"/nodeports/{picked}", "/nodeports/30005"}


async def test_one_port_for_tcp_and_udp_of_one_service_is_one_key() -> None:
    s = svc(30001, 30001)
    s.spec.ports[1].protocol = meta_pb2.PROTOCOL_UDP
    ops = await NodePortAllocator(MemoryStore(), range(30000, 30010)).claim(s)
    assert ops == [Op("create", "/nodeports/30001", b"default/web")]


async def test_taken_out_of_range_and_full_are_refused() -> None:
    store = MemoryStore()
    await store.create("/nodeports/30001", b"default/other")
    alloc = NodePortAllocator(store, range(30000, 30002))
    with pytest.raises(errors.InvalidArgument) as info:
        await alloc.claim(svc(0, 30001))
    assert (info.value.field, info.value.message) == (
        "spec.ports[1].nodePort",
        "30001: provided port is already allocated",
    )
    with pytest.raises(errors.InvalidArgument, match="range of valid ports is 30000-30001") as info:
        await alloc.claim(svc(31000))
    assert info.value.field == "spec.ports[0].nodePort"
    with pytest.raises(errors.ResourceExhausted, match="30000-30001 is full"):
        await alloc.claim(svc(0, 0))


async def test_reserved_ports_are_never_node_ports() -> None:
    alloc = NodePortAllocator(MemoryStore(), range(30000, 30002))
    with pytest.raises(errors.InvalidArgument, match="30000: reserved for Atoll's daemons and sshd") as info:
        await alloc.claim(svc(30000), reserved=frozenset({30000}))
    assert info.value.field == "spec.ports[0].nodePort"
    for _ in range(5):
        s = svc(0)
        await alloc.claim(s, reserved=frozenset({30000}))
        assert s.spec.ports[0].node_port == 30001


def test_carry_over_keeps_left_out_ports_and_drops_repeated_ones_with_the_type() -> None:
    old = svc(30001, 30002)
    new = svc(0, 0)
    nodeports.carry_over(new, old)
    assert [p.node_port for p in new.spec.ports] == [30001, 30002]
    # Back to ClusterIP with the ports read back unchanged: dropped; a new number stays (and
    # validation refuses it by name).
    plain = svc(30001, 30009, type=workloads_pb2.SERVICE_TYPE_CLUSTER_IP)
    nodeports.carry_over(plain, old)
    assert [p.node_port for p in plain.spec.ports] == [0, 30009]


def test_the_status_says_no_load_balancer_exists_and_keeps_its_transition_time() -> None:
    lb = svc(30001, type=workloads_pb2.SERVICE_TYPE_LOAD_BALANCER)
    lb.metadata.generation = 1
    nodeports.set_status(lb, now=100.0)
    assert lb.status.HasField("load_balancer") and not lb.status.load_balancer.ingress
    (cond,) = lb.status.conditions
    assert (cond.type, cond.status, cond.reason) == (
        "LoadBalancerProvisioned",
        meta_pb2.CONDITION_STATUS_FALSE,
        "NoLoadBalancerProvider",
    )
    lb.metadata.generation = 2
    nodeports.set_status(lb, now=200.0)
    assert lb.status.conditions[0].last_transition_time.seconds == 100
    assert lb.status.conditions[0].observed_generation == 2
    lb.spec.type = workloads_pb2.SERVICE_TYPE_NODE_PORT
    nodeports.set_status(lb, now=300.0)
    assert not lb.status.conditions and lb.status.HasField("load_balancer")


async def test_a_port_held_before_the_range_changed_stays_valid() -> None:
    old = svc(30005)
    alloc = NodePortAllocator(MemoryStore(), range(31000, 31010))
    assert await alloc.claim(svc(30005), old) == []
