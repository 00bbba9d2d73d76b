"""Node silence as the leader's node lifecycle sees it, with several coordinators."""

from __future__ import annotations

from typing import Any

from atoll.v1 import meta_pb2, node_pb2
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
