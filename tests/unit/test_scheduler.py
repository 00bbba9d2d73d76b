"""Scheduler decisions as data: filters, counted reasons, spreading, sampling."""

from __future__ import annotations

import asyncio

from atoll import kinds
from atoll.v1 import meta_pb2, node_pb2, pod_pb2
from coordinator.objects.informer import Informer
from coordinator.objects.registry import Registry
from coordinator.scheduler.nodeinfo import NodeInfo
from coordinator.scheduler.scheduler import Scheduler, nodes_to_find, unschedulable_message
from coordinator.store.memory import MemoryStore


def node(
    name: str,
    *,
    ready: bool = True,
    cpu: int = 4000,
    mem: int = 8 << 30,
    labels: dict[str, str] | None = None,
) -> node_pb2.Node:
    n = node_pb2.Node()
    n.metadata.name = name
    n.metadata.labels.update(labels or {})
    n.status.allocatable.cpu_millis, n.status.allocatable.memory_bytes, n.status.allocatable.pods = (
        cpu,
        mem,
        110,
    )
    n.status.conditions.add(
        type="Ready", status=meta_pb2.CONDITION_STATUS_TRUE if ready else meta_pb2.CONDITION_STATUS_UNKNOWN
    )
    return n


def pod(
    name: str, *, host_port: int = 0, cpu: int = 0, owner: str = "", selector: dict[str, str] | None = None
) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name, p.metadata.namespace, p.metadata.uid = name, "default", f"uid-{name}"
    if owner:
        p.metadata.owner_references.add(kind="ReplicationController", name=owner, uid=owner, controller=True)
    c = p.spec.containers.add(name="c", image="busybox")
    c.resources.requests.cpu_millis = cpu
    if host_port:
        c.ports.add(container_port=80, host_port=host_port, protocol=meta_pb2.PROTOCOL_TCP)
    p.spec.node_selector.update(selector or {})
    return p


def scheduler(*nodes: node_pb2.Node) -> Scheduler:
    registry = Registry(MemoryStore())
    s = Scheduler(
        registry, Informer(registry, kinds.by_name("Pod")), Informer(registry, kinds.by_name("Node"))
    )
    for n in nodes:
        s.nodes[n.metadata.name] = NodeInfo(n)
    return s


def bind(s: Scheduler, p: pod_pb2.Pod, where: str) -> None:
    p.spec.node_name = where
    s.nodes[where].add(p)


def test_hostport_conflicts_are_counted() -> None:
    s = scheduler(node("a"), node("b"), node("c"))
    for i, where in enumerate("abc"):
        bind(s, pod(f"web-{i}", host_port=80), where)
    decision = s.decide(pod("web-3", host_port=80))
    assert decision.node is None
    assert decision.message == "0/3 nodes available: 3 hostPort 80/TCP in use"


def test_mixed_reasons_and_fit() -> None:
    s = scheduler(node("a", ready=False), node("b", cpu=500), node("c", labels={"disk": "ssd"}))
    s.nodes["c"].node.spec.unschedulable = True
    decision = s.decide(pod("p", cpu=1000))
    assert (
        decision.message == "0/3 nodes available: 1 insufficient cpu, 1 node(s) cordoned, 1 node(s) not ready"
    )
    s.nodes["c"].node.spec.unschedulable = False
    assert s.decide(pod("p", cpu=1000, selector={"disk": "ssd"})).node == "c"
    assert "2 node(s) didn't match the node selector" in s.decide(pod("p", selector={"disk": "hdd"})).message


def test_spreads_replicas_of_one_controller() -> None:
    s = scheduler(node("a"), node("b"), node("c"))
    placed = []
    for i in range(6):
        p = pod(f"r{i}", owner="rc-1")
        where = s.decide(p).node
        assert where is not None
        bind(s, p, where)
        placed.append(where)
    assert sorted(placed) == ["a", "a", "b", "b", "c", "c"]


def test_sampling_for_large_clusters() -> None:
    assert nodes_to_find(50) == 50
    assert nodes_to_find(1000) == 420
    assert nodes_to_find(5000) == 500
    assert unschedulable_message(0, {}) == "0/0 nodes available: no nodes are registered"


def test_no_event_loop_needed_for_decisions() -> None:
    # decide() is synchronous CPU work: it must not need the loop (it runs between awaits).
    s = scheduler(node("a"))
    assert asyncio.iscoroutinefunction(s.decide) is False
