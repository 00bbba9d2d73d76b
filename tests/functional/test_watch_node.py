"""WatchNode: an agent follows its assignment, the node config and the services on one stream,
and on three, as before, from a coordinator that lacks it."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from atoll import errors, kinds
from atoll.v1 import node_api_pb2, pod_pb2, workloads_pb2
from coordinator.api.node.service import NodeServicer
from tests.functional.harness import Cluster, FakeNode, eventually
from tests.functional.test_agent_behaviour import make_pod, wait_phase

SERVICE = kinds.by_name("Service")


def web_service() -> workloads_pb2.Service:
    svc = workloads_pb2.Service()
    svc.metadata.name = "web"
    svc.spec.selector["app"] = "web"
    svc.spec.ports.add(port=80, target_port=8080)
    return svc


async def all_three_arrive(cluster: Cluster, node: FakeNode) -> None:
    """A pod runs (its assignment came), a service reaches the node's proxy, and the node config
    was applied (the networking has it)."""
    assert cluster.client is not None
    await cluster.client.create(make_pod("web"))
    await wait_phase(cluster, "web", pod_pb2.POD_PHASE_RUNNING)
    link = node.agent.link
    assert link is not None
    before = link.services_received[0]
    await cluster.client.create(web_service())

    async def services_moved() -> bool:
        return link.services_received[0] > before

    await eventually(services_moved, what="the new service at the agent")

    async def configured() -> bool:
        networking = node.agent.networking
        return networking is not None and networking._config is not None

    await eventually(configured, what="the node config applied")


async def test_one_stream_carries_the_three_pushes(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, bool, bool, bool]] = []
    real = NodeServicer.WatchNode

    async def recorded(
        self: NodeServicer, request: node_api_pb2.WatchNodeRequest, context: Any
    ) -> AsyncIterator[Any]:
        calls.append((request.node_name, request.assignment, request.node_config, request.services))
        async for push in real(self, request, context):
            yield push

    monkeypatch.setattr(NodeServicer, "WatchNode", recorded)
    cluster = await Cluster(tmp_path).start()
    try:
        node = await cluster.add_node("node-1", images=("busybox",))
        await all_three_arrive(cluster, node)
        assert calls == [("node-1", True, True, True)]
    finally:
        await cluster.stop()


async def test_a_coordinator_without_watch_node_gets_three_streams(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    async def unimplemented(
        self: NodeServicer, request: node_api_pb2.WatchNodeRequest, context: Any
    ) -> AsyncIterator[Any]:
        calls.append(request.node_name)
        raise errors.Unimplemented("method not implemented")
        yield  # an async generator, as the real one

    monkeypatch.setattr(NodeServicer, "WatchNode", unimplemented)
    cluster = await Cluster(tmp_path).start()
    try:
        node = await cluster.add_node("node-1", images=("busybox",))
        await all_three_arrive(cluster, node)
        assert calls == ["node-1"]  # asked once, then the three streams of old
    finally:
        await cluster.stop()
