"""Restart policies, crash-loop backoff, re-adoption and repair, through real gRPC and the fake runtime."""

from __future__ import annotations

import asyncio

import pytest

from atoll import errors, kinds
from atoll.v1 import cluster_pb2, pod_pb2
from tests.functional.harness import Cluster, FakeNode, eventually

POD = kinds.by_name("Pod")


def make_pod(
    name: str, *, policy: int = pod_pb2.RESTART_POLICY_ALWAYS, image: str = "busybox", host_port: int = 0
) -> pod_pb2.Pod:
    pod = pod_pb2.Pod()
    pod.metadata.name = name
    pod.metadata.labels["app"] = name
    pod.spec.restart_policy = policy  # type: ignore[assignment]
    c = pod.spec.containers.add(name="main", image=image, command=["sleep", "3600"])
    if host_port:
        c.ports.add(container_port=80, host_port=host_port)
    return pod


async def fetch(cluster: Cluster, name: str) -> pod_pb2.Pod:
    assert cluster.client is not None
    pod = await cluster.client.get(POD, "default", name)
    assert isinstance(pod, pod_pb2.Pod)
    return pod


async def wait_phase(cluster: Cluster, name: str, phase: int, what: str = "") -> pod_pb2.Pod:
    async def check() -> pod_pb2.Pod | None:
        pod = await fetch(cluster, name)
        return pod if pod.status.phase == phase else None

    result = await eventually(check, what=what or f"pod {name} in phase {phase}")
    assert result is not None
    return result


def app_container(node: FakeNode, pod: str) -> str:
    running = [
        c
        for c in node.runtime.containers.values()
        if c.labels.get("io.atoll.pod.name") == pod
        and c.labels.get("io.atoll.container.name") == "main"
        and c.running
    ]
    assert len(running) == 1, running
    return running[0].id


async def started(cluster: Cluster, node: FakeNode, name: str, restarts: int) -> str:
    async def check() -> str | None:
        pod = await fetch(cluster, name)
        cs = pod.status.container_statuses
        if (
            pod.status.phase == pod_pb2.POD_PHASE_RUNNING
            and cs
            and cs[0].restart_count == restarts
            and cs[0].ready
        ):
            return app_container(node, name)
        return None

    cid = await eventually(check, what=f"{name} running with {restarts} restarts")
    assert cid is not None
    return cid


@pytest.fixture
async def node(cluster: Cluster) -> FakeNode:
    return await cluster.add_node("node-1", images=("busybox",))


async def test_always_restarts_with_backoff(cluster: Cluster, node: FakeNode) -> None:
    assert cluster.client is not None
    await cluster.client.create(make_pod("crasher"))
    first = await started(cluster, node, "crasher", 0)
    node.runtime.exit(first, 1)
    second = await started(cluster, node, "crasher", 1)  # the first restart is immediate
    assert second != first
    node.runtime.exit(second, 1)

    async def backing_off() -> bool:
        pod = await fetch(cluster, "crasher")
        cs = pod.status.container_statuses[0]
        return cs.state.waiting.reason == "CrashLoopBackOff" and cs.last_state.terminated.exit_code == 1

    await eventually(backing_off, what="CrashLoopBackOff")
    await started(cluster, node, "crasher", 2)
    assert "Restarted" in node.recorder.reasons()


async def test_on_failure_and_never(cluster: Cluster, node: FakeNode) -> None:
    assert cluster.client is not None
    await cluster.client.create(make_pod("job-ok", policy=pod_pb2.RESTART_POLICY_ON_FAILURE))
    await cluster.client.create(make_pod("job-bad", policy=pod_pb2.RESTART_POLICY_NEVER))
    ok = await started(cluster, node, "job-ok", 0)
    bad = await started(cluster, node, "job-bad", 0)
    node.runtime.exit(ok, 0)
    node.runtime.exit(bad, 3)
    done = await wait_phase(cluster, "job-ok", pod_pb2.POD_PHASE_SUCCEEDED)
    failed = await wait_phase(cluster, "job-bad", pod_pb2.POD_PHASE_FAILED)
    assert done.status.container_statuses[0].state.terminated.reason == "Completed"
    assert failed.status.container_statuses[0].state.terminated.exit_code == 3
    # A finished pod's infra container is stopped; its app container is kept for logs.
    await eventually(
        lambda: _infra_stopped(node, "job-bad"),  # type: ignore[arg-type]
        what="infra of the finished pod stopped",
    )
    assert node.runtime.containers[bad].state == "exited"


async def _infra_stopped(node: FakeNode, pod: str) -> bool:
    infra = [
        c
        for c in node.runtime.containers.values()
        if c.labels.get("io.atoll.pod.name") == pod and c.labels.get("io.atoll.container.name") == "POD"
    ]
    return bool(infra) and not infra[0].running


async def test_container_removed_behind_our_back_is_recreated_and_counted(
    cluster: Cluster, node: FakeNode
) -> None:
    assert cluster.client is not None
    await cluster.client.create(make_pod("victim"))
    first = await started(cluster, node, "victim", 0)
    node.runtime.vanish(first)
    second = await started(cluster, node, "victim", 1)
    assert second != first
    pod = await fetch(cluster, "victim")
    assert pod.status.container_statuses[0].last_state.terminated.reason == "ContainerMissing"


async def test_agent_restart_readopts_without_touching_containers(cluster: Cluster, node: FakeNode) -> None:
    assert cluster.client is not None
    for i in range(5):
        await cluster.client.create(make_pod(f"keep-{i}"))
    ids = {f"keep-{i}": await started(cluster, node, f"keep-{i}", 0) for i in range(5)}
    before = dict(node.runtime.containers)
    calls = len(node.runtime.calls)
    await node.restart()
    assert node.agent.manager is not None
    await eventually(lambda: _settled(node), what="agent synced after restart")
    await asyncio.sleep(0.3)  # a few relists, so that a wrong decision would show
    mutating = {"create_container", "start_container", "stop_container", "remove_container"}
    assert [c for c in node.runtime.calls[calls:] if c[0] in mutating] == []
    assert node.runtime.containers == before
    for name, cid in ids.items():
        assert app_container(node, name) == cid


async def _settled(node: FakeNode) -> bool:
    manager = node.agent.manager
    link = node.agent.link
    return manager is not None and manager.authoritative and link is not None and link.connected


async def test_pod_deleted_while_agent_down_is_removed_on_return(cluster: Cluster, node: FakeNode) -> None:
    assert cluster.client is not None
    await cluster.client.create(make_pod("doomed"))
    await cluster.client.create(make_pod("stays"))
    await started(cluster, node, "doomed", 0)
    stays = await started(cluster, node, "stays", 0)
    await node.agent.stop()
    await cluster.client.delete(POD, "default", "doomed")
    # Restarted from its persisted assignment, the agent removes nothing until the coordinator speaks.
    await node.restart()

    async def only_stays() -> bool:
        return {c.labels["io.atoll.pod.name"] for c in node.runtime.containers.values()} == {"stays"}

    await eventually(only_stays, what="doomed pod removed, the other kept")
    assert app_container(node, "stays") == stays


async def test_image_pull_failure_is_reported(cluster: Cluster, node: FakeNode) -> None:
    assert cluster.client is not None
    node.runtime.pull_errors["nosuch/image"] = "manifest for nosuch/image:latest not found"
    await cluster.client.create(make_pod("broken", image="nosuch/image"))

    async def pull_failed() -> str:
        pod = await fetch(cluster, "broken")
        cs = pod.status.container_statuses
        return (
            cs[0].state.waiting.message
            if cs and cs[0].state.waiting.reason in ("ErrImagePull", "ImagePullBackOff")
            else ""
        )

    message = await eventually(pull_failed, what="ErrImagePull")
    assert "not found" in message
    assert (await fetch(cluster, "broken")).status.phase == pod_pb2.POD_PHASE_PENDING


async def test_unschedulable_hostport_then_retried(cluster: Cluster, node: FakeNode) -> None:
    assert cluster.client is not None
    await cluster.client.create(make_pod("web-1", host_port=8080))
    await started(cluster, node, "web-1", 0)
    await cluster.client.create(make_pod("web-2", host_port=8080))

    async def pending_reason() -> str:
        pod = await fetch(cluster, "web-2")
        return pod.status.message if pod.status.reason == "Unschedulable" else ""

    message = await eventually(pending_reason, what="web-2 unschedulable")
    assert message == "0/1 nodes available: 1 hostPort 8080/TCP in use"
    await cluster.client.delete(POD, "default", "web-1")
    await started(cluster, node, "web-2", 0)


async def test_logs_flow_from_agent(cluster: Cluster, node: FakeNode) -> None:
    assert cluster.client is not None
    await cluster.client.create(make_pod("talker"))
    cid = await started(cluster, node, "talker", 0)
    node.runtime.logs_by_id[cid] = b"line 1\nline 2\nline 3\n"
    chunks = [c async for c in cluster.client.logs(cluster_pb2.GetLogsRequest(pod="talker", tail_lines=2))]
    assert b"".join(chunks) == b"line 2\nline 3\n"
    with pytest.raises(errors.NotFound):
        [c async for c in cluster.client.logs(cluster_pb2.GetLogsRequest(pod="talker", container="nope"))]


async def test_a_network_resync_that_changes_nothing_writes_no_state(
    cluster: Cluster, node: FakeNode
) -> None:
    networking = node.agent.networking
    assert networking is not None
    state = node.config.state_path / "network.json"

    async def configured() -> bool:
        return networking._config is not None and state.exists()

    await eventually(configured, what="the node's network config applied and saved")
    assert networking._config is not None and networking._acquire is not None
    written = state.stat().st_ino  # a save replaces the file: a new inode
    for _ in range(3):  # the periodic resync, every 30 s in a running agent
        await networking.on_config(networking._config, networking._acquire)
    assert state.stat().st_ino == written
    state.unlink()  # gone behind the agent's back: the next resync writes it again
    await networking.on_config(networking._config, networking._acquire)
    assert state.exists()


async def test_a_new_sandbox_port_goes_into_hairpin_mode_without_a_poll(
    cluster: Cluster, node: FakeNode
) -> None:
    # A pod reaching a service whose endpoint is itself needs its bridge port in hairpin mode;
    # the agent sets it when the sandbox starts, not on a timer.
    assert cluster.client is not None
    before = len(node.netlink.hairpin_bridges)
    await cluster.client.create(make_pod("hairpin"))
    await wait_phase(cluster, "hairpin", pod_pb2.POD_PHASE_RUNNING)

    async def set_since() -> bool:
        return len(node.netlink.hairpin_bridges) > before

    await eventually(set_since, what="hairpin mode set for the new sandbox's port")
    assert node.agent.networking is not None
    assert node.netlink.hairpin_bridges[-1] == node.agent.networking.pod_bridge
