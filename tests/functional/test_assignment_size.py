"""Finding 6 (d): a node's assignment that would not fit one gRPC message keeps the
oldest pods that fit instead of failing GetAssignment/WatchAssignment for all of them."""

from __future__ import annotations

import pathlib

import pytest

from atoll import kinds
from atoll.v1 import node_api_pb2, pod_pb2
from coordinator.api.node import assignments
from tests.functional.harness import Cluster, eventually

POD = kinds.by_name("Pod")
KIB = 1024


def pinned_pod(name: str, node: str, pad: int) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.spec.node_name = node
    c = p.spec.containers.add(name="main", image="busybox", command=["sleep", "3600"])
    c.env.add(name="PAD", value="x" * pad)
    return p


async def test_oversized_assignment_keeps_the_oldest_pods_that_fit(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real budget is rpc.MAX_RESPONSE_BYTES less 1 MiB; 1 MiB keeps the test small.
    monkeypatch.setattr(assignments, "ASSIGNMENT_BYTES", 1024 * KIB)
    cluster = await Cluster(tmp_path).start()
    try:
        c = cluster.client
        assert c is not None
        node = await cluster.add_node("n1", images=("busybox",))
        for i in range(4):  # pinned: the scheduler's pods-per-node cap does not apply
            await c.create(pinned_pod(f"big-{i}", "n1", 400 * KIB))
        link = node.agent.link
        assert link is not None

        async def assigned() -> list[str] | None:
            resp = await link._stub.GetAssignment(node_api_pb2.GetAssignmentRequest(node_name="n1"))
            names = sorted(p.metadata.name for p in resp.assignment.pods)
            return names if len(names) == 2 else None

        assert await eventually(assigned, what="an assignment of the two oldest pods") == ["big-0", "big-1"]

        async def running(name: str) -> bool:
            pod = await c.get(POD, "default", name)
            return isinstance(pod, pod_pb2.Pod) and pod.status.phase == pod_pb2.POD_PHASE_RUNNING

        await eventually(lambda: running("big-1"), what="the pods that fit to run")
        pod = await c.get(POD, "default", "big-3")
        assert isinstance(pod, pod_pb2.Pod) and pod.status.phase == pod_pb2.POD_PHASE_PENDING
        # Room made by a deletion goes to the next oldest.
        await c.delete(POD, "default", "big-0")
        await eventually(lambda: running("big-2"), what="big-2 to take big-0's room")
    finally:
        await cluster.stop()
