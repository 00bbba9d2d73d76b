"""Finding 6 (d): a node's assignment larger than one gRPC message travels in parts, which the agent
joins before it acts: never failed, never cut short."""

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


async def test_an_oversized_assignment_arrives_whole_in_parts(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real budget is rpc.MAX_RESPONSE_BYTES less 1 MiB; 1 MiB keeps the test small.
    monkeypatch.setattr(assignments, "ASSIGNMENT_BYTES", 1024 * KIB)
    cluster = await Cluster(tmp_path).start()
    try:
        c = cluster.client
        assert c is not None
        node = await cluster.add_node("n1", images=("busybox",))
        for i in range(5):  # pinned: the scheduler's pods-per-node cap does not apply
            await c.create(pinned_pod(f"big-{i}", "n1", 400 * KIB))
        link = node.agent.link
        assert link is not None

        async def in_parts() -> int:
            resp = await link._stub.GetAssignment(node_api_pb2.GetAssignmentRequest(node_name="n1"))
            return int(resp.assignment.parts) if len(node.agent.manager.desired) == 5 else 0  # type: ignore[union-attr]

        assert await eventually(in_parts, what="five pods in a multi-part assignment") >= 3

        async def running(name: str) -> bool:
            pod = await c.get(POD, "default", name)
            return isinstance(pod, pod_pb2.Pod) and pod.status.phase == pod_pb2.POD_PHASE_RUNNING

        for i in range(5):
            await eventually(lambda i=i: running(f"big-{i}"), what=f"big-{i} running")  # type: ignore[misc]
        await c.delete(POD, "default", "big-0")

        async def four() -> bool:
            return len(node.agent.manager.desired) == 4  # type: ignore[union-attr]

        await eventually(four, what="the deletion pushed in parts too")
        await link.fetch_assignment()  # a fetch joins the parts as the push does
        assert len(node.agent.manager.desired) == 4  # type: ignore[union-attr]
    finally:
        await cluster.stop()
