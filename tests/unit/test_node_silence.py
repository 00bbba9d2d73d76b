"""Node silence as the leader's node lifecycle sees it, with several coordinators."""

from __future__ import annotations

from typing import Any

from atoll.loopstalls import Deafness, LoopStalls
from atoll.v1 import meta_pb2, node_pb2
from coordinator.api.callqueue import CallQueueProbe
from coordinator.controllers.nodelifecycle import NodeHealth, NodeLifecycle


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Nodes:
    """An informer's cache, as far as the node lifecycle reads it."""

    def __init__(self, *nodes: node_pb2.Node) -> None:
        self.nodes = list(nodes)

    def items(self, predicate: Any = None) -> list[node_pb2.Node]:
        return self.nodes


class RecordingRegistry:
    """Records the writes the controller asks for."""

    def __init__(self) -> None:
        self.updates: list[str] = []

    async def guaranteed_update(self, info: Any, namespace: str, name: str, mutate: Any) -> None:
        self.updates.append(name)


def ready_node(name: str, heartbeat: float) -> node_pb2.Node:
    node = node_pb2.Node()
    node.metadata.name = name
    node.status.conditions.add(type="Ready", status=meta_pb2.CONDITION_STATUS_TRUE)
    node.status.last_heartbeat_time.FromNanoseconds(int(heartbeat * 1e9))
    return node


def test_silence_counts_the_heartbeat_the_node_object_holds() -> None:
    clock = Clock(1000.0)
    health = NodeHealth(clock)
    clock.now = 2000.0
    assert health.silent_for("n") == 1000.0
    assert health.silent_for("n", persisted=1995.0) == 5.0
    health.beat("n")
    clock.now = 2003.0
    assert health.silent_for("n", persisted=1995.0) == 3.0


async def test_a_node_that_just_registered_at_another_coordinator_is_not_silent() -> None:
    """The follower it registered with wrote its Node (with the heartbeat time) at once; its
    lease reaches the leader seconds later. Meanwhile the leader must not call it silent."""
    clock = Clock(1000.0)
    health = NodeHealth(clock)  # the leader has been up long past the grace period
    clock.now = 2000.0
    registry = RecordingRegistry()
    nodes = Nodes(ready_node("fresh", heartbeat=1999.0), ready_node("gone", heartbeat=1980.0))
    lifecycle = NodeLifecycle(registry, nodes, health, grace=8.0, clock=clock)  # type: ignore[arg-type]
    await lifecycle.check()
    assert registry.updates == ["gone"]


def test_stalls_count_only_within_the_window() -> None:
    clock = Clock(100.0)
    stalls = LoopStalls(clock=clock)
    stalls.record(90.0, 93.0)  # 3 s stalled, 7-10 s ago
    stalls.record(98.0, 99.5)  # 1.5 s stalled, 0.5-2 s ago
    assert stalls.within(1.0) == 0.5
    assert stalls.within(5.0) == 1.5
    assert stalls.within(8.0) == 1.5 + 1.0
    assert stalls.within(60.0) == 4.5


async def test_silence_while_the_coordinator_was_stalled_is_not_the_nodes() -> None:
    """A scheduling burst held the loop: heartbeats waited in it, through no fault of the nodes."""
    wall = Clock(1000.0)
    health = NodeHealth(wall)  # up long past the grace period
    wall.now = 2000.0
    mono = Clock(500.0)
    stalls = LoopStalls(clock=mono)
    stalls.record(490.0, 496.0)  # the loop ran nothing for 6 of the last 10 seconds
    registry = RecordingRegistry()
    nodes = Nodes(ready_node("busy", heartbeat=1990.0), ready_node("dead", heartbeat=1975.0))
    lifecycle = NodeLifecycle(registry, nodes, health, grace=8.0, clock=wall, stalls=stalls)  # type: ignore[arg-type]
    await lifecycle.check()
    assert registry.updates == ["dead"]  # silent 25 s, 6 of them stalled: still past the grace


def test_the_longest_hold_within_the_window_counts_not_their_sum() -> None:
    """A node sends its next heartbeat after the answer to the last: a queue full for long
    delays it by one hold, not by all of them."""
    clock = Clock(100.0)
    probe = CallQueueProbe("/nonexistent.sock", threshold=0.25, clock=clock)
    probe.record(80.0, 80.1)  # answered at once: not deaf
    probe.record(90.0, 94.0)  # held 4 s, answered 6 s ago
    probe.record(94.5, 96.0)  # held 1.5 s, answered 4 s ago
    assert probe.within(5.0) == 1.5
    assert probe.within(10.0) == 4.0
    assert probe.within(3.0) == 0.0
    assert probe.within(2.0) == 0.0
    assert probe.slowest == 4.0


def test_a_call_still_waiting_counts_until_now() -> None:
    clock = Clock(100.0)
    probe = CallQueueProbe("/nonexistent.sock", threshold=0.25, clock=clock)
    probe.record(90.0, 92.0)
    probe._pending_since = 95.0  # sent 5 s ago, no answer yet
    assert probe.within(10.0) == 5.0
    assert probe.within(2.0) == 2.0  # capped at the window
    probe._pending_since = 99.9  # in flight for less than the threshold: an ordinary call
    assert probe.within(10.0) == 2.0


def test_deafness_takes_the_larger_measure_not_their_sum() -> None:
    clock = Clock(100.0)
    stalls = LoopStalls(clock=clock)
    stalls.record(95.0, 97.0)  # the loop stalled 2 s...
    probe = CallQueueProbe("/nonexistent.sock", clock=clock)
    probe.record(94.0, 98.0)  # ...and so a call sent meanwhile waited 4 s
    assert Deafness([stalls, probe]).within(10.0) == 4.0
    assert Deafness([]).within(10.0) == 0.0


async def test_silence_while_calls_waited_in_the_queue_is_not_the_nodes() -> None:
    """The loop turned, but heartbeats waited in gRPC's queue behind a burst of status reports."""
    wall = Clock(1000.0)
    health = NodeHealth(wall)
    wall.now = 2000.0
    mono = Clock(500.0)
    probe = CallQueueProbe("/nonexistent.sock", clock=mono)
    probe.record(493.0, 499.0)  # a probe call held 6 s
    registry = RecordingRegistry()
    nodes = Nodes(ready_node("busy", heartbeat=1990.0), ready_node("dead", heartbeat=1975.0))
    lifecycle = NodeLifecycle(  # type: ignore[arg-type]
        registry, nodes, health, grace=8.0, clock=wall, stalls=Deafness([LoopStalls(clock=mono), probe])
    )
    await lifecycle.check()
    assert registry.updates == ["dead"]


async def test_each_check_reads_the_objects_the_informer_holds_now() -> None:
    """The lifecycle keeps what it read of each Node object; an object the informer replaced (a
    newer stored heartbeat, a Ready condition turned Unknown) is read afresh, and a deleted one
    is forgotten."""
    clock = Clock(1000.0)
    health = NodeHealth(clock)
    clock.now = 2000.0
    registry = RecordingRegistry()
    stale = ready_node("a", heartbeat=1980.0)
    nodes = Nodes(stale, ready_node("b", heartbeat=1999.0))
    lifecycle = NodeLifecycle(registry, nodes, health, grace=8.0, clock=clock)  # type: ignore[arg-type]

    nodes.nodes[0] = ready_node("a", heartbeat=1998.0)  # its status was written again
    await lifecycle.check()
    assert registry.updates == []

    unknown = ready_node("a", heartbeat=1980.0)
    unknown.status.conditions[0].status = meta_pb2.CONDITION_STATUS_UNKNOWN
    nodes.nodes[0] = unknown  # another coordinator marked it: not marked again
    clock.now = 2010.0
    await lifecycle.check()
    assert registry.updates == ["b"]

    nodes.nodes.pop(1)
    await lifecycle.check()
    assert [facts.name for facts in lifecycle._facts.values()] == ["a"]
