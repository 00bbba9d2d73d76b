"""Silent nodes lose their pods at a pace, zone by zone, and not at all when every node is silent."""

from __future__ import annotations

from typing import Any

from atoll.v1 import meta_pb2, node_pb2
from coordinator.controllers.evictionpace import EvictionPacer, EvictionPolicy, ZoneState, zone_state
from coordinator.controllers.nodelifecycle import NodeHealth, NodeLifecycle
from tests.unit.test_node_silence import Clock, Nodes, RecordingRegistry, ready_node


def test_zone_states_follow_kubernetes() -> None:
    assert zone_state(10, 0, 0.55) is ZoneState.NORMAL
    assert zone_state(4, 2, 0.55) is ZoneState.NORMAL  # two silent nodes never make a disruption
    assert zone_state(5, 3, 0.55) is ZoneState.PARTIAL_DISRUPTION
    assert zone_state(100, 54, 0.55) is ZoneState.NORMAL
    assert zone_state(1, 1, 0.55) is ZoneState.FULL_DISRUPTION


def test_one_node_at_once_then_one_per_period() -> None:
    clock = Clock(0.0)
    pacer = EvictionPacer(EvictionPolicy(rate=0.1), clock)
    pacer.observe([("", True), ("", True), ("", False), ("", False), ("", False)])
    assert pacer.admit("") and not pacer.admit("")
    clock.now = 9.9
    assert not pacer.admit("")
    clock.now = 10.0
    assert pacer.admit("")


def test_partial_disruption_slows_a_large_zone_and_stops_a_small_one() -> None:
    clock = Clock(0.0)
    pacer = EvictionPacer(EvictionPolicy(rate=0.1, secondary_rate=0.01, large_zone=50), clock)
    pacer.observe([("big", i < 60) for i in range(100)] + [("small", i < 6) for i in range(10)])
    assert pacer.states == {"big": ZoneState.PARTIAL_DISRUPTION, "small": ZoneState.PARTIAL_DISRUPTION}
    assert pacer.admit("big") and not pacer.admit("small")
    clock.now = 99.0
    assert not pacer.admit("big")
    clock.now = 100.0
    assert pacer.admit("big") and not pacer.admit("small")


def test_every_node_silent_stops_evictions_until_one_is_heard() -> None:
    clock = Clock(0.0)
    pacer = EvictionPacer(EvictionPolicy(), clock)
    pacer.observe([("a", True), ("b", True)])
    assert pacer.all_disrupted and not pacer.admit("a")
    pacer.observe([("a", True), ("b", False)])  # zone b is heard: zone a's silence is real
    assert pacer.admit("a")


class Pods:
    def __init__(self, nodes: list[str]) -> None:
        from atoll.v1 import pod_pb2

        self.pods = []
        for n in nodes:
            p = pod_pb2.Pod()
            p.metadata.name, p.spec.node_name = f"pod-on-{n}", n
            p.metadata.owner_references.add(kind="ReplicationController", name="rc", uid="u", controller=True)
            self.pods.append(p)

    def items(self, predicate: Any = None) -> list[Any]:
        return self.pods


def silent_node(name: str, since: float) -> node_pb2.Node:
    node = node_pb2.Node()
    node.metadata.name = name
    cond = node.status.conditions.add(type="Ready", status=meta_pb2.CONDITION_STATUS_UNKNOWN)
    cond.last_transition_time.FromNanoseconds(int(since * 1e9))
    return node


async def test_the_lifecycle_evicts_the_longest_silent_node_first_and_paces_the_rest() -> None:
    clock = Clock(1000.0)
    health = NodeHealth(clock)
    for n in ("ok-1", "ok-2", "ok-3", "ok-4"):
        health.beat(n)
    names = ["late", "early"]
    nodes = Nodes(
        silent_node("late", 990.0),
        silent_node("early", 980.0),
        *(ready_node(n, 1000.0) for n in ("ok-1", "ok-2", "ok-3", "ok-4")),
    )
    registry = RecordingRegistry()
    lifecycle = NodeLifecycle(
        registry,  # type: ignore[arg-type]
        nodes,  # type: ignore[arg-type]
        health,
        grace=8.0,
        eviction_timeout=2.0,
        pods=Pods(names),  # type: ignore[arg-type]
        clock=clock,
    )
    await lifecycle.check()
    assert registry.updates == ["pod-on-early"]
    clock.now = 1005.0
    await lifecycle.check()
    assert registry.updates == ["pod-on-early"]
    clock.now = 1010.0
    for n in ("ok-1", "ok-2", "ok-3", "ok-4"):
        health.beat(n)
    await lifecycle.check()
    assert registry.updates == ["pod-on-early", "pod-on-late"]
