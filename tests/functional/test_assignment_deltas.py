"""An agent's assignment watch takes deltas after its first whole assignment, and an agent out of
step with a delta reopens the watch and starts whole again."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator

import pytest

from agent.link import CoordinatorLink
from agent.pods.manager import PodManager
from atoll import kinds
from atoll.v1 import node_api_pb2, pod_pb2
from coordinator.api.node.assignments import AssignmentTracker
from coordinator.client.api import Client
from tests.functional.harness import Cluster, eventually

POD = kinds.by_name("Pod")


@contextlib.asynccontextmanager
async def one_node(tmp_path: pathlib.Path) -> AsyncIterator[tuple[Client, PodManager]]:
    """A coordinator and one agent, n1: the API's client and the agent's pod manager."""
    cluster = await Cluster(tmp_path).start()
    try:
        assert cluster.client is not None
        node = await cluster.add_node("n1", images=("busybox",))
        assert node.agent.manager is not None
        yield cluster.client, node.agent.manager
    finally:
        await cluster.stop()


def pinned_pod(name: str, node: str) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.spec.node_name = node
    p.spec.containers.add(name="main", image="busybox", command=["sleep", "3600"])
    return p


async def test_the_agent_follows_deltas_whatever_its_own_generation_says(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[node_api_pb2.Assignment] = []
    trackers: list[AssignmentTracker] = []
    real_delta = AssignmentTracker.delta

    def delta(self: AssignmentTracker, node: str, base: int) -> node_api_pb2.Assignment | None:
        trackers.append(self)
        built = real_delta(self, node, base)
        if built is not None:
            sent.append(built)
        return built

    monkeypatch.setattr(AssignmentTracker, "delta", delta)
    async with one_node(tmp_path) as (c, manager):

        async def desired(*names: str) -> bool:
            return sorted(p.metadata.name for p in manager.desired.values()) == sorted(names)

        await c.create(pinned_pod("a", "n1"))
        await eventually(lambda: desired("a"), what="the first pod, whole")
        await c.create(pinned_pod("b", "n1"))
        await c.create(pinned_pod("c", "n1"))
        await eventually(lambda: desired("a", "b", "c"), what="two more pods")
        await c.delete(POD, "default", "a")
        await eventually(lambda: desired("b", "c"), what="a pod gone")
        assert sent and any(d.removed_uids for d in sent) and all(len(d.pods) <= 2 for d in sent)
        tracker = trackers[-1]
        assert manager.generation == tracker.generation("n1")

        # The agent's generation moved off the stream's (as a fetch that raced the watch moves
        # it): the stream's next delta applies to what the stream itself sent, and still leads
        # to the coordinator's generation. (A delta off the stream's own generation is a gap:
        # tests/unit/test_failover.py.)
        manager.generation -= 1
        deltas_before = len(sent)
        await c.create(pinned_pod("d", "n1"))
        await eventually(lambda: desired("b", "c", "d"), what="the next pod")
        assert len(sent) > deltas_before  # it came as a delta
        assert manager.generation == tracker.generation("n1")
        await c.create(pinned_pod("e", "n1"))
        await eventually(lambda: desired("b", "c", "d", "e"), what="and the one after")


async def test_an_agent_that_does_not_ask_for_deltas_gets_whole_assignments(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[object] = []
    real_delta = AssignmentTracker.delta
    monkeypatch.setattr(AssignmentTracker, "delta", lambda *a: built.append(real_delta(*a)))
    monkeypatch.setattr(CoordinatorLink, "assignment_deltas", False)  # as agents before deltas
    async with one_node(tmp_path) as (c, manager):
        for name in ("a", "b"):
            await c.create(pinned_pod(name, "n1"))

        async def both() -> bool:
            return len(manager.desired) == 2

        await eventually(both, what="two pods, each push whole")
        assert not built
