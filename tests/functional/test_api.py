"""The cluster API over real gRPC: validation, compare-and-swap, watch, restart of the coordinator."""

from __future__ import annotations

import asyncio
import pathlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from atoll import errors, kinds, rpc
from atoll.v1 import cluster_pb2, pod_pb2
from tests.functional.harness import Cluster, eventually
from tests.functional.test_agent_behaviour import make_pod, started

POD = kinds.by_name("Pod")


async def test_invalid_pod_is_refused_with_field_and_nothing_stored(cluster: Cluster) -> None:
    assert cluster.client is not None
    pod = make_pod("bad")
    pod.spec.containers[0].ports.add(container_port=70000)
    with pytest.raises(errors.InvalidArgument) as info:
        await cluster.client.create(pod)
    assert info.value.field == "spec.containers[0].ports[0].containerPort"
    assert "between 1 and 65535" in info.value.message
    items, _ = await cluster.client.list(POD)
    assert items == []


async def test_unknown_errors_do_not_leak_tracebacks(cluster: Cluster) -> None:
    assert cluster.client is not None
    with pytest.raises(errors.InvalidArgument) as info:
        await cluster.client.create(pod_pb2.Pod())  # no kind problem, but empty name
    assert "Traceback" not in str(info.value)
    with pytest.raises(errors.InvalidArgument):
        await rpc.unary(cluster.client.stub.Create(cluster_pb2.CreateRequest()))
    with pytest.raises(errors.InvalidArgument):
        await cluster.client.list(POD, selector="name in (a,")


async def test_update_is_compare_and_swap(cluster: Cluster) -> None:
    assert cluster.client is not None
    pinned = make_pod("cas")
    pinned.spec.node_name = "nowhere"  # bound at creation: no scheduler write races the test
    created = await cluster.client.create(pinned)
    assert isinstance(created, pod_pb2.Pod)
    first = pod_pb2.Pod()
    first.CopyFrom(created)
    first.metadata.labels["tier"] = "one"
    updated = await cluster.client.update(first)
    assert updated.metadata.resource_version > created.metadata.resource_version  # type: ignore[attr-defined]
    stale = pod_pb2.Pod()
    stale.CopyFrom(created)
    stale.metadata.labels["tier"] = "two"
    with pytest.raises(errors.Conflict):
        await cluster.client.update(stale)
    changed = pod_pb2.Pod()
    changed.CopyFrom(updated)  # type: ignore[arg-type]
    changed.spec.restart_policy = pod_pb2.RESTART_POLICY_NEVER
    with pytest.raises(errors.InvalidArgument, match="may not change"):
        await cluster.client.update(changed)


async def test_update_without_resource_version_is_unconditional(cluster: Cluster) -> None:
    """Like Kubernetes: no resourceVersion means last write wins, even when writes race
    (the scheduler binding a pod between the API's read and its compare-and-swap)."""
    assert cluster.client is not None
    created = await cluster.client.create(make_pod("racy"))
    assert isinstance(created, pod_pb2.Pod)

    async def relabel(i: int) -> None:
        assert cluster.client is not None
        blind = make_pod("racy")  # as written in a manifest: no resourceVersion
        blind.metadata.labels["writer"] = str(i)
        await cluster.client.update(blind)

    await asyncio.gather(*(relabel(i) for i in range(12)))
    final = await cluster.client.get(POD, "default", "racy")
    assert final.metadata.labels["writer"] in {str(i) for i in range(12)}  # type: ignore[attr-defined]
    assert final.metadata.resource_version > created.metadata.resource_version  # type: ignore[attr-defined]


async def test_watch_from_a_revision_and_too_old(cluster: Cluster) -> None:
    assert cluster.client is not None
    _, revision = await cluster.client.list(POD)
    events: list[tuple[int, str]] = []

    async def follow() -> None:
        async for type_, obj in cluster.client.watch(POD, "default", "app=w1", revision):  # type: ignore[union-attr]
            events.append((type_, obj.metadata.name))  # type: ignore[attr-defined]

    task = asyncio.create_task(follow())
    await cluster.client.create(make_pod("w1"))
    await cluster.client.create(make_pod("w2"))  # filtered out by the selector
    await cluster.client.delete(POD, "default", "w1")
    await eventually(lambda: _deleted(events), what="the DELETED event")
    task.cancel()
    # The scheduler may touch w1 in between (MODIFIED); w2 never shows.
    assert events[0] == (cluster_pb2.EVENT_TYPE_ADDED, "w1")
    assert events[-1] == (cluster_pb2.EVENT_TYPE_DELETED, "w1")
    assert {name for _, name in events} == {"w1"}


async def _deleted(events: list[tuple[int, str]]) -> bool:
    return any(t == cluster_pb2.EVENT_TYPE_DELETED for t, _ in events)


async def test_watch_too_old(tmp_path: pathlib.Path) -> None:
    cluster = await Cluster(tmp_path, store_history=100).start()
    try:
        assert cluster.client is not None
        for i in range(110):
            await cluster.client.create(make_pod(f"p{i}"))
        with pytest.raises(errors.Gone, match="too old"):
            async for _ in cluster.client.watch(POD, resource_version=1):
                pass
    finally:
        await cluster.stop()


async def test_health_and_reflection(cluster: Cluster) -> None:
    assert cluster.admin is not None
    creds = cluster.admin.credentials(cluster.admin.server)
    async with grpc.aio.secure_channel(cluster.admin.server, creds) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        resp = await health.Check(health_pb2.HealthCheckRequest(service="atoll.v1.ClusterService"))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        async for r in responses:
            names = {s.name for s in r.list_services_response.service}
            assert {"atoll.v1.ClusterService", "atoll.v1.NodeService", "grpc.health.v1.Health"} <= names
            break


async def test_coordinator_restart_keeps_state_and_agents_reconnect(tmp_path: pathlib.Path) -> None:
    cluster = await Cluster(tmp_path).start()
    try:
        node = await cluster.add_node("node-1", images=("busybox",))
        assert cluster.client is not None
        await cluster.client.create(make_pod("survivor"))
        cid = await started(cluster, node, "survivor", 0)
        port = cluster.coordinator.port
        await cluster.coordinator.stop()
        from coordinator.server import Coordinator
        from tests.functional.harness import serve_config

        cluster.coordinator = Coordinator(serve_config(tmp_path, listen=f"127.0.0.1:{port}"))
        await cluster.coordinator.start()
        listed = await eventually(lambda: _names(cluster), what="API answering after restart")
        assert listed == ["survivor"]
        await cluster.client.create(make_pod("after"))
        await started(cluster, node, "after", 0)
        assert await started(cluster, node, "survivor", 0) == cid
    finally:
        await cluster.stop()


async def _names(cluster: Cluster) -> list[str] | None:
    assert cluster.client is not None
    try:
        items, _ = await cluster.client.list(POD)
    except errors.Unavailable:
        return None
    return [p.metadata.name for p in items]  # type: ignore[attr-defined]
