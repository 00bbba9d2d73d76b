"""Issue #2 on a real Docker Engine: pod lifecycle, restart policies, re-adoption, repair, restarts.

One test-bed host runs dockerd, the coordinator and the agent as real
processes; containers are real. Tests wait on conditions with deadlines.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from atoll.v1 import cluster_pb2, namespace_pb2, pod_pb2
from coordinator import manifests
from coordinator.client.api import Client
from tests.integration.daemons import (
    POD,
    AgentProcess,
    CoordinatorProcess,
    eventually,
    node_ready,
    pod,
    wait_running,
)
from tests.integration.testbed import Host, TestBed

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MANAGED = {"label": "io.atoll.managed=true"}


@dataclass
class OneHost:
    host: Host
    coordinator: CoordinatorProcess
    agent: AgentProcess
    client: Client

    def containers(self, all_: bool = True) -> dict[str, str]:
        """Atoll containers on the engine: name -> id."""
        return {c.name: c.id for c in self.host.docker().containers.list(all=all_, filters=MANAGED)}


@pytest.fixture
async def one_host(testbed_factory: Callable[[int], TestBed]) -> AsyncIterator[OneHost]:
    bed = testbed_factory(1)
    host = bed.hosts[0]
    coordinator = CoordinatorProcess(host, host.dir / "coordinator").start()
    agent = AgentProcess(host, "127.0.0.1:6443", host.dir / "agent", "node-1").start()
    client = Client(coordinator.server)
    try:
        await eventually(lambda: node_ready(client, "node-1"), timeout=60, what="node-1 Ready")
        yield OneHost(host, coordinator, agent, client)
    finally:
        await client.__aexit__(None, None, None)


def busybox_pod(name: str, script: str, policy: int = pod_pb2.RESTART_POLICY_ALWAYS) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.spec.restart_policy = policy  # type: ignore[assignment]
    p.spec.termination_grace_period_seconds = 1
    p.spec.containers.add(name="main", image="atoll/busybox", command=["sh", "-c", script])
    return p


async def test_example_pod_serves_http_and_goes_away(one_host: OneHost) -> None:
    (apache,) = manifests.load_file(EXAMPLES / "apache-pod.json")
    await one_host.client.create(apache)
    running = await wait_running(one_host.client, "apache")
    assert running.spec.node_name == "node-1" and running.status.host_ip == one_host.host.ip
    assert running.status.pod_ip.startswith("172.31.")
    page = one_host.host.http_get("http://127.0.0.1:80/")
    assert page.status == 200 and "Apache" in page.body
    assert "Apache" in one_host.host.http_get(f"http://{running.status.pod_ip}:80/").body
    names = one_host.containers()
    assert any("_POD_apache_" in n for n in names) and any("_apache_apache_" in n for n in names)

    # Logs travel coordinator -> agent -> engine: httpd logs each request it served (httpd -v).
    async def served_logged() -> str:
        logs = b"".join([c async for c in one_host.client.logs(cluster_pb2.GetLogsRequest(pod="apache"))])
        text = logs.decode(errors="replace")
        return text if "response:" in text else ""

    assert "200" in await eventually(served_logged, what="httpd's request log through GetLogs")

    await one_host.client.delete(POD, "default", "apache")

    async def removed() -> bool:
        return not one_host.containers()

    await eventually(removed, what="every container of the pod removed, infra included")


async def test_restart_policies(one_host: OneHost) -> None:
    c = one_host.client
    await c.create(busybox_pod("always", "sleep 1; exit 0"))
    await c.create(busybox_pod("onfailure", "sleep 1; exit 1", pod_pb2.RESTART_POLICY_ON_FAILURE))
    await c.create(busybox_pod("done", "exit 0", pod_pb2.RESTART_POLICY_ON_FAILURE))
    await c.create(busybox_pod("never", "exit 3", pod_pb2.RESTART_POLICY_NEVER))

    async def phase(name: str, want: int) -> bool:
        return (await pod(c, name)).status.phase == want

    await eventually(lambda: phase("done", pod_pb2.POD_PHASE_SUCCEEDED), what="done Succeeded")
    await eventually(lambda: phase("never", pod_pb2.POD_PHASE_FAILED), what="never Failed")
    failed = await pod(c, "never")
    assert failed.status.container_statuses[0].state.terminated.exit_code == 3

    async def restarted(name: str, at_least: int) -> bool:
        cs = (await pod(c, name)).status.container_statuses
        return bool(cs) and cs[0].restart_count >= at_least

    await eventually(lambda: restarted("always", 2), timeout=60, what="always restarted twice")
    await eventually(lambda: restarted("onfailure", 2), timeout=60, what="onfailure restarted twice")
    assert (await pod(c, "done")).status.container_statuses[0].restart_count == 0


async def test_kill_9_agent_keeps_containers(one_host: OneHost) -> None:
    c = one_host.client
    for i in range(3):
        await c.create(busybox_pod(f"steady-{i}", "trap 'exit 0' TERM; while true; do sleep 1; done"))
    for i in range(3):
        await wait_running(c, f"steady-{i}", restarts=0)
    before = one_host.containers()
    started = {
        cid: one_host.host.docker().containers.get(cid).attrs["State"]["StartedAt"] for cid in before.values()
    }

    one_host.agent.kill(signal.SIGKILL)
    one_host.agent.start()
    await eventually(lambda: node_ready(c, "node-1"), what="agent back")
    # The restarted agent first runs on the assignment it saved, and removes nothing until the
    # coordinator's own is in force: only after that is "nothing was killed" a finding.
    await eventually(lambda: _agent_synced(one_host), what="the coordinator's assignment in force")
    after = one_host.containers()
    assert after == before
    for cid, when in started.items():
        assert one_host.host.docker().containers.get(cid).attrs["State"]["StartedAt"] == when
    for i in range(3):
        assert sum(cs.restart_count for cs in (await pod(c, f"steady-{i}")).status.container_statuses) == 0


async def _agent_synced(one_host: OneHost) -> bool:
    # Each agent process logs to a file of its own: this is the restarted one's.
    log = one_host.agent.process.read_log() if one_host.agent.process else ""
    return "the coordinator's assignment at generation" in log


async def test_container_removed_behind_our_back_is_recreated(one_host: OneHost) -> None:
    c = one_host.client
    await c.create(busybox_pod("victim", "trap 'exit 0' TERM; while true; do sleep 1; done"))
    first = await wait_running(c, "victim", restarts=0)
    victim_id = first.status.container_statuses[0].container_id.removeprefix("docker://")
    one_host.host.docker().containers.get(victim_id).remove(force=True)
    second = await wait_running(c, "victim", restarts=1)
    assert second.status.container_statuses[0].container_id != first.status.container_statuses[0].container_id
    assert second.status.container_statuses[0].last_state.terminated.reason == "ContainerMissing"


async def test_coordinator_restart_keeps_pods(one_host: OneHost) -> None:
    c = one_host.client
    await c.create(busybox_pod("kept", "trap 'exit 0' TERM; while true; do sleep 1; done"))
    await wait_running(c, "kept", restarts=0)
    before = one_host.containers()
    one_host.coordinator.kill(signal.SIGKILL)
    one_host.coordinator.start()

    async def listed() -> bool:
        items, _ = await c.list(POD)
        return [p.metadata.name for p in items] == ["kept"]  # type: ignore[attr-defined]

    await eventually(listed, what="pods listed after the coordinator restarted")
    await eventually(lambda: node_ready(c, "node-1"), what="agent reconnected")
    await c.create(busybox_pod("new", "trap 'exit 0' TERM; while true; do sleep 1; done"))
    await wait_running(c, "new")
    await wait_running(c, "kept", restarts=0)
    assert {k: v for k, v in one_host.containers().items() if "_kept_" in k} == before


async def test_env_volumes_and_host_ports(one_host: OneHost) -> None:
    host_dir = one_host.host.dir / "hostdata"
    host_dir.mkdir()
    (host_dir / "data.txt").write_text("from the host\n")
    p = pod_pb2.Pod()
    p.metadata.name = "volumes"
    writer = p.spec.containers.add(name="writer", image="atoll/busybox")
    writer.command.extend(["sh", "-c"])
    writer.args.append(
        'echo "$GREETING" > /shared/hello.txt; cp /host/data.txt /shared/from-host.txt; '
        "trap 'exit 0' TERM; while true; do sleep 1; done"
    )
    writer.env.add(name="GREETING", value="hi from env")
    writer.volume_mounts.add(name="shared", mount_path="/shared")
    writer.volume_mounts.add(name="hostdir", mount_path="/host", read_only=True)
    web = p.spec.containers.add(
        name="web", image="atoll/busybox", command=["httpd", "-f", "-p", "8081", "-h", "/www"]
    )
    web.volume_mounts.add(name="shared", mount_path="/www")
    web.ports.add(container_port=8081, host_port=18081)
    p.spec.volumes.add(name="shared").empty_dir.SetInParent()
    p.spec.volumes.add(name="hostdir").host_path.path = str(host_dir)
    # A host directory is mounted only in a namespace an admin made privileged (README "Pod security").
    default = namespace_pb2.Namespace()
    default.metadata.name = "default"
    default.metadata.labels["pod-security.atoll.io/enforce"] = "privileged"
    await one_host.client.create(default)
    await one_host.client.create(p)
    await wait_running(one_host.client, "volumes")

    async def served(path: str) -> str:
        try:
            return one_host.host.http_get(f"http://127.0.0.1:18081/{path}").body
        except ConnectionError:
            return ""

    assert "hi from env" in await eventually(
        lambda: served("hello.txt"), what="env written into the emptyDir"
    )
    assert "from the host" in await eventually(lambda: served("from-host.txt"), what="hostPath content")


async def test_security_context_on_a_real_engine(one_host: OneHost) -> None:
    """readOnlyRootFilesystem makes writes to / fail, runAsUser/runAsGroup set the ids, and
    runAsNonRoot with an image that runs as root is refused by the agent, as kubelet does."""
    c = one_host.client
    p = busybox_pod("ids", "touch /probe || exit 6; exit 0", pod_pb2.RESTART_POLICY_NEVER)  # root may write /
    ro = p.spec.containers.add(
        name="ro", image="atoll/busybox", command=["sh", "-c", "touch /probe && exit 4; exit 0"]
    )
    ro.security_context.read_only_root_filesystem = True
    ids = p.spec.containers.add(
        name="ids",
        image="atoll/busybox",
        command=["sh", "-c", '[ "$(id -u):$(id -g)" = "1000:3000" ] || exit 5'],
    )
    ids.security_context.run_as_user = 1000
    ids.security_context.run_as_group = 3000
    await c.create(p)
    rootful = busybox_pod("rootful", "sleep 3600")
    rootful.spec.security_context.run_as_non_root = True
    await c.create(rootful)

    async def finished() -> pod_pb2.Pod | None:
        got = await pod(c, "ids")
        done = (pod_pb2.POD_PHASE_SUCCEEDED, pod_pb2.POD_PHASE_FAILED)
        return got if got.status.phase in done else None

    got = await eventually(finished, timeout=60, what="ids finished")
    assert got is not None
    codes = {s.name: s.state.terminated.exit_code for s in got.status.container_statuses}
    assert got.status.phase == pod_pb2.POD_PHASE_SUCCEEDED and codes == {"main": 0, "ro": 0, "ids": 0}, (
        codes,
        [s.state for s in got.status.container_statuses],
    )

    async def refused() -> str:
        statuses = (await pod(c, "rootful")).status.container_statuses
        waiting = statuses[0].state.waiting if statuses else None
        return waiting.message if waiting and waiting.reason == "CreateContainerConfigError" else ""

    message = await eventually(refused, timeout=60, what="rootful refused")
    assert message == "container has runAsNonRoot and image will run as root"
    assert not [n for n in one_host.containers() if "_main_rootful_" in n]
