"""Issue #5's fault tests, with real processes: agent kill -9 storms, coordinator kill -9 during
acknowledged writes, a node cut off past the eviction timeout, and a full disk under the store."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from atoll import errors, kinds
from atoll.v1 import pod_pb2, workloads_pb2
from coordinator.client.api import Client
from tests.integration.cluster import pinned_pod, start_cluster
from tests.integration.daemons import AgentProcess, CoordinatorProcess, eventually, node_ready, wait_running
from tests.integration.testbed import Host, TestBed

POD = kinds.by_name("Pod")
MANAGED = {"label": "io.atoll.managed=true"}
LOOP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def sleeper(name: str) -> pod_pb2.Pod:
    pod = pod_pb2.Pod()
    pod.metadata.name = name
    pod.spec.termination_grace_period_seconds = 1
    pod.spec.containers.add(name="main", image="atoll/busybox", command=LOOP)
    return pod


def containers(host: Host) -> dict[str, tuple[str, str]]:
    """Atoll containers: id -> (name, StartedAt).

    The SDK inspects each container it lists: one removed in between (what
    some tests wait for) is a 404, and the listing is simply taken again.
    """
    for _ in range(5):
        try:
            return {
                c.id: (c.name, c.attrs["State"]["StartedAt"])
                for c in host.docker().containers.list(all=True, filters=MANAGED)
            }
        except docker.errors.NotFound:
            continue
    raise AssertionError("containers kept vanishing while they were listed")


async def agent_kill_storm(
    host: Host, client: Client, agent: AgentProcess, pods: int, kills: int
) -> dict[str, int]:
    """Run `pods` pods, kill -9 the agent `kills` times; return what changed (all zero when right)."""
    for i in range(pods):
        await client.create(sleeper(f"storm-{i}"))
    for i in range(pods):
        await wait_running(client, f"storm-{i}", restarts=0, timeout=120)
    before = await asyncio.to_thread(containers, host)
    for round_ in range(kills):
        agent.kill(signal.SIGKILL)
        agent.start()
        await eventually(lambda: _registered(agent), timeout=60, what=f"agent back after kill {round_ + 1}")
    # A few relists and a sync of every pod after the last restart, before judging.
    await eventually(lambda: _synced(agent), timeout=60, what="the last agent synced")
    await asyncio.sleep(3)
    after = await asyncio.to_thread(containers, host)
    items, _ = await client.list(POD)
    restarts = sum(cs.restart_count for p in items for cs in p.status.container_statuses)  # type: ignore[attr-defined]
    desired = {p.metadata.uid for p in items}  # type: ignore[attr-defined]
    orphans = [
        cid
        for cid in after
        if host.docker().containers.get(cid).labels.get("io.atoll.pod.uid") not in desired
    ]
    names = [name for name, _ in after.values()]
    return {
        "new_or_gone_containers": len(set(before) ^ set(after)),
        "restarted_containers": sum(1 for cid in before if cid in after and before[cid][1] != after[cid][1]),
        "restart_count": restarts,
        "orphans": len(orphans),
        "duplicates": len(names) - len(set(names)),
        "containers": len(after),
    }


async def _registered(agent: AgentProcess) -> bool:
    return agent.process is not None and "registered node" in agent.process.read_log()


async def _synced(agent: AgentProcess) -> bool:
    return agent.process is not None and "desired pods at generation" in agent.process.read_log()


async def test_agent_kill_9_twenty_times(testbed_factory: Callable[..., TestBed]) -> None:
    bed = testbed_factory(1)
    host = bed.hosts[0]
    CoordinatorProcess(host, host.dir / "coordinator").start()
    agent = AgentProcess(host, "127.0.0.1:6443", host.dir / "agent", "node-1").start()
    coordinator_socket = host.dir / "coordinator.sock"
    async with Client(f"unix://{coordinator_socket}") as client:
        await eventually(lambda: node_ready(client, "node-1"), timeout=60, what="node Ready")
        result = await agent_kill_storm(host, client, agent, pods=20, kills=20)
    assert result == {
        "new_or_gone_containers": 0,
        "restarted_containers": 0,
        "restart_count": 0,
        "orphans": 0,
        "duplicates": 0,
        "containers": 40,
    }


async def test_coordinator_kill_9_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    socket = tmp_path / "c.sock"
    data = tmp_path / "data"

    def start() -> subprocess.Popen[bytes]:
        socket.unlink(missing_ok=True)
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coordinator.cli.main",
                "serve",
                "--listen",
                f"unix://{socket}",
                "--data-dir",
                str(data),
                # The test measures durability, not admission: lift the per-client rate limit so
                # the 1,000 writes and the checks after the restart never meet RESOURCE_EXHAUSTED.
                "--api-rate",
                "100000",
                "--api-burst",
                "100000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "coordinator.log").open("ab"),
        )

    proc = start()
    acked: list[str] = []
    names = [f"w-{i:04d}" for i in range(1000)]
    try:
        async with Client(f"unix://{socket}") as client:
            await eventually(lambda: _answers(client), timeout=30, what="coordinator up")
            pending = list(names)
            killed = False
            while pending:
                batch, pending = pending[:8], pending[8:]
                results = await asyncio.gather(
                    *(client.create(sleeper(n)) for n in batch), return_exceptions=True
                )
                for name, result in zip(batch, results, strict=True):
                    if isinstance(result, BaseException):
                        if isinstance(result, errors.AlreadyExists):
                            continue  # written but not acknowledged before the kill: fine, once
                        pending.append(name)  # not written (coordinator down): try again
                    else:
                        acked.append(name)
                if not killed and len(acked) >= 400:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
                    killed = True
                    await asyncio.sleep(0.5)
                    proc = start()
                    await eventually(lambda: _answers(client), timeout=30, what="coordinator back")
            items, _ = await client.list(POD)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    stored = [p.metadata.name for p in items]  # type: ignore[attr-defined]
    assert len(stored) == len(set(stored)) == 1000
    assert set(acked) <= set(stored)
    assert len(acked) >= 990
    db = sqlite3.connect(data / "atoll.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def _answers(client: Client) -> bool:
    try:
        await client.list(kinds.by_name("Node"))
    except errors.AtollError:
        return False
    return True


async def test_node_cut_off_past_eviction_keeps_running_and_reconciles(
    testbed_factory: Callable[..., TestBed],
) -> None:
    cluster = await start_cluster(testbed_factory, 2, overlay=False)
    try:
        c = cluster.client
        rc = workloads_pb2.ReplicationController()
        rc.metadata.name = "moved"
        rc.spec.replicas = 2
        rc.spec.selector["app"] = "moved"
        rc.spec.template.metadata.labels["app"] = "moved"
        rc.spec.template.spec.termination_grace_period_seconds = 1
        rc.spec.template.spec.containers.add(name="main", image="atoll/busybox", command=LOOP)
        await c.create(rc)
        pinned = pinned_pod("pinned", cluster.node(0), image="atoll/busybox")
        pinned.spec.containers[0].command.extend(LOOP)
        await c.create(pinned)
        before = await wait_running(c, "pinned", restarts=0)

        async def rc_spread() -> bool:
            items, _ = await c.list(POD, "default", "app=moved")
            return sorted(p.spec.node_name for p in items if p.status.phase == 2) == ["node-0", "node-1"]  # type: ignore[attr-defined]

        await eventually(rc_spread, timeout=60, what="rc pods on both nodes")
        worker = cluster.workers[0]
        cut = [
            "iptables",
            "-I",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            cluster.master.ip,
            "--dport",
            "6443",
            "-j",
            "DROP",
        ]
        assert (await asyncio.to_thread(worker.run, cut)).returncode == 0
        ids_during_cut = await asyncio.to_thread(containers, worker)

        async def moved_away() -> bool:
            items, _ = await c.list(POD, "default", "app=moved")
            running = [p for p in items if p.status.phase == 2]  # type: ignore[attr-defined]
            return len(running) == 2 and all(p.spec.node_name == "node-1" for p in running)  # type: ignore[attr-defined]

        await eventually(moved_away, timeout=60, what="the cut-off node's rc pod replaced on node-1")
        # Cut off past the eviction timeout, the node's containers all still run.
        still = await asyncio.to_thread(containers, worker)
        assert still == ids_during_cut
        pinned_now = await c.get(POD, "default", "pinned")
        assert pinned_now.status.phase == pod_pb2.POD_PHASE_UNKNOWN  # type: ignore[attr-defined]
        heal = [
            "iptables",
            "-D",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            cluster.master.ip,
            "--dport",
            "6443",
            "-j",
            "DROP",
        ]
        assert (await asyncio.to_thread(worker.run, heal)).returncode == 0
        after = await wait_running(c, "pinned", restarts=0, timeout=60)
        assert (
            after.status.container_statuses[0].container_id
            == before.status.container_statuses[0].container_id
        )

        async def lost_pod_removed() -> bool:
            left = await asyncio.to_thread(containers, worker)
            return all("_moved-" not in name for name, _ in left.values())

        await eventually(lost_pod_removed, timeout=60, what="the replaced rc pod removed from the node")
        left = await asyncio.to_thread(containers, worker)
        assert {cid for cid, (name, _) in left.items() if "_pinned_" in name} == {
            cid for cid, (name, _) in ids_during_cut.items() if "_pinned_" in name
        }
    finally:
        await cluster.close()


async def test_full_disk_under_the_store(testbed_factory: Callable[..., TestBed]) -> None:
    bed = testbed_factory(1, docker=False)
    host = bed.hosts[0]
    data = host.dir / "store"
    data.mkdir()
    mounted = await asyncio.to_thread(
        host.run, ["mount", "-t", "tmpfs", "-o", "size=3m", "atoll-test-full", str(data)]
    )
    assert mounted.returncode == 0, mounted.stderr
    try:
        # The socket lives outside the tmpfs, which only the host's mount namespace sees.
        coordinator = CoordinatorProcess(host, data / "c", socket=host.dir / "c.sock").start()
        async with Client(coordinator.server) as client:
            await eventually(lambda: _answers(client), timeout=30, what="coordinator up")
            for i in range(20):
                await client.create(sleeper(f"before-{i}"))
            fill = ["dd", "if=/dev/zero", f"of={data}/filler", "bs=64k"]
            await asyncio.to_thread(host.run, fill, 60)
            with pytest.raises(errors.ResourceExhausted, match="full"):
                for i in range(200):
                    await client.create(sleeper(f"during-{i}"))
            # Reads still work, and nothing half-written shows.
            items, _ = await client.list(POD)
            names = {p.metadata.name for p in items}  # type: ignore[attr-defined]
            assert {f"before-{i}" for i in range(20)} <= names
            await asyncio.to_thread(host.run, ["rm", "-f", f"{data}/filler"])
            await client.create(sleeper("after"))
            coordinator.kill(signal.SIGKILL)
            coordinator.start()
            await eventually(lambda: _answers(client), timeout=30, what="coordinator back")
            items, _ = await client.list(POD)
            names_after = {p.metadata.name for p in items}  # type: ignore[attr-defined]
            assert names <= names_after and "after" in names_after
        check = await asyncio.to_thread(
            host.run,
            [
                sys.executable,
                "-c",
                f"import sqlite3; print(sqlite3.connect('{data}/c/atoll.db').execute('PRAGMA integrity_check').fetchone()[0])",
            ],
        )
        assert check.stdout.strip() == "ok", check.stdout + check.stderr
    finally:
        for proc in host.processes:
            proc.stop(5)
        await asyncio.to_thread(host.run, ["umount", str(data)])
