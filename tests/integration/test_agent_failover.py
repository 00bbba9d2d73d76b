"""A real agent on three real coordinators survives the kill -9 of the one it talks to.

Three `coordinator serve` processes on the run's real etcd (a key prefix of
their own), with TLS: one cluster CA shared through the store and the
cluster secret, each coordinator its own serving certificate. The agent is a
real `atoll-agent` process on a test-bed host with its own dockerd, given all
three coordinators; the host reaches them through relays on its own
loopback (the bed has no link to the root namespace), so a killed
coordinator refuses new connections and breaks the open ones as it would.

The agent's pods belong to a replication controller and the eviction timeout
is 1 s: had the node gone silent for the leader (heartbeats on another
coordinator not counting), its pods would have been replaced. After the kill
the same containers run (same IDs, same StartedAt), the node stays Ready,
status and assignments flow through another coordinator, and the node keeps
its certificate (no re-join). Then the second one it talks to is killed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from atoll import kinds
from atoll.v1 import auth_pb2, node_pb2, pod_pb2, workloads_pb2
from coordinator.auth import tokens
from coordinator.client import config as clientconfig
from coordinator.client.api import Client
from tests.integration.coordinators import FAST, free_port
from tests.integration.daemons import AgentProcess, eventually
from tests.integration.etcd import EtcdCluster
from tests.integration.testbed import PortForward, TestBed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
POD = kinds.by_name("Pod")
NODE = kinds.by_name("Node")
TOKEN = kinds.by_name("Token")
GRACE = 3.0  # FAST's node grace period


class TlsCoordinators:
    """Three coordinator processes with TLS on loopback, one cluster on `etcd`."""

    def __init__(self, etcd: EtcdCluster, workdir: pathlib.Path) -> None:
        self.workdir = workdir
        self.store = f"etcd://{etcd.endpoints}/atoll-{uuid.uuid4().hex[:8]}"
        self.ports = [free_port() for _ in range(3)]
        self.token_ports = [free_port() for _ in range(3)]
        self.secret = workdir / "cluster-secret"
        self.secret.write_bytes(os.urandom(32).hex().encode())
        self.secret.chmod(0o600)
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * 3

    def address(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i]}"

    def start(self, i: int) -> None:
        data = self.workdir / f"c{i}"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "coordinator.cli.main", "serve",
            "--listen", self.address(i), "--token-listen", f"127.0.0.1:{self.token_ports[i]}",
            "--data-dir", str(data), "--store", self.store, "--cluster-secret-file", str(self.secret),
            *FAST,
        ]  # fmt: skip
        with open(self.workdir / f"c{i}.log", "ab") as log:
            self.procs[i] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def admin(self, *alive: int) -> Client:
        """An admin client (coordinator 0's admin.conf: one CA, so good on all) on the given ones."""
        conf = clientconfig.parse((self.workdir / "c0" / "admin.conf").read_text(), "admin.conf")
        return Client(",".join(self.address(i) for i in alive), config=conf)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.procs[i] = None

    def stop(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc is None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            self.procs[i] = None


@pytest.fixture
async def coordinators(etcd_cluster: EtcdCluster, tmp_path: pathlib.Path) -> AsyncIterator[TlsCoordinators]:
    three = TlsCoordinators(etcd_cluster, tmp_path)
    try:
        three.start(0)  # first, so that its CA is the one in the store and its admin.conf exists
        await eventually(lambda: _answers(three, 0), timeout=30, what="coordinator 0 serving")
        three.start(1)
        three.start(2)
        for i in (1, 2):
            await eventually(functools.partial(_answers, three, i), timeout=30, what=f"coordinator {i}")
        yield three
    finally:
        three.stop()


async def _answers(three: TlsCoordinators, i: int) -> bool:
    if not (three.workdir / "c0" / "admin.conf").exists():
        return False
    async with three.admin(i) as client:
        await client.cluster_info()
    return True


@contextlib.contextmanager
def relays(bed: TestBed, ports: list[int]) -> Iterator[None]:
    """127.0.0.1:PORT inside the bed's host relayed to 127.0.0.1:PORT of the test's namespace."""
    host = bed.hosts[0]
    opened = [PortForward(host.netns_path, ("127.0.0.1", p), reverse_port=p) for p in ports]
    try:
        yield
    finally:
        for relay in opened:
            relay.close()


def make_rc(name: str, replicas: int) -> workloads_pb2.ReplicationController:
    rc = workloads_pb2.ReplicationController()
    rc.metadata.name = name
    rc.spec.replicas = replicas
    rc.spec.selector["app"] = name
    rc.spec.template.metadata.labels["app"] = name
    rc.spec.template.spec.termination_grace_period_seconds = 1
    rc.spec.template.spec.containers.add(name="main", image="atoll/busybox", command=["sleep", "1d"])
    return rc


async def test_a_real_agent_survives_the_kill_of_its_coordinators(
    coordinators: TlsCoordinators, testbed_factory: Callable[..., TestBed]
) -> None:
    three = coordinators
    bed = testbed_factory(1)
    host = bed.hosts[0]
    token_id, secret = tokens.generate()
    async with three.admin(0) as client:
        await client.create(tokens.new_token(token_id, secret, ttl=3600, description="failover"))
        ca_hash = (await client.cluster_info()).ca_hash
    state = host.dir / "agent"
    with relays(bed, three.ports + three.token_ports[:1]):
        agent = AgentProcess(
            host,
            ",".join(three.address(i) for i in range(3)),
            state,
            "node-0",
            (
                "--join-token", f"{token_id}.{secret}", "--ca-hash", ca_hash,
                "--join-address", f"127.0.0.1:{three.token_ports[0]}", "--heartbeat-interval", "0.3",
            ),
        ).start()  # fmt: skip
        alive = [0, 1, 2]
        async with three.admin(*alive) as client:
            await eventually(lambda: _ready(client), timeout=60, what="node-0 Ready")
            await client.create(make_rc("web", 3))
            await eventually(lambda: _running(client, 3), timeout=60, what="3 replicas Running")
        cert = (state / "pki" / "node.crt").read_bytes()
        before = await asyncio.to_thread(_containers, bed)
        assert len(before) == 6  # three pods: an infra container and the app each

        figures = []
        for _ in range(2):  # the coordinator it talks to, then the next one it talks to
            on = _on(three, state)
            three.kill(on)
            killed = time.monotonic()
            alive.remove(on)

            async def moved(on: int = on) -> bool:
                return _on(three, state) != on

            await eventually(moved, timeout=30, interval=0.02, what="the agent on another coordinator")
            figures.append(time.monotonic() - killed)
            assert _on(three, state) in alive
            async with three.admin(*alive) as client:
                # Heartbeats on a follower count: Ready well past the grace period, no pod replaced.
                until = time.monotonic() + 2 * GRACE
                while time.monotonic() < until:
                    assert await _ready(client), f"node-0 not Ready after the kill of coordinator {on}"
                    await asyncio.sleep(0.3)
                # Assignments and status flow: one more replica starts and is reported Running.
                rc = await client.get(kinds.by_name("ReplicationController"), "default", "web")
                assert isinstance(rc, workloads_pb2.ReplicationController)
                rc.spec.replicas += 1
                await client.update(rc)
                wanted = functools.partial(_running, client, rc.spec.replicas)
                await eventually(wanted, timeout=60, what="the new replica Running")
        print(
            f"\nthe agent answered on another coordinator {', '.join(f'{f:.2f}s' for f in figures)} after each kill"
        )

        after = await asyncio.to_thread(_containers, bed)
        assert {cid: after.get(cid) for cid in before} == before  # same containers, never restarted
        assert (state / "pki" / "node.crt").read_bytes() == cert
        async with three.admin(*alive) as client:
            token = await client.get(TOKEN, "", token_id)
            assert isinstance(token, auth_pb2.Token) and token.status.uses == 1  # joined once
        assert agent.process is not None and agent.process.alive
        agent.kill(signal.SIGTERM)


def _on(three: TlsCoordinators, state: pathlib.Path) -> int:
    """Which coordinator the agent last had an answer from (it keeps it in its state dir)."""
    remembered = (state / "coordinator").read_text().strip()
    return three.ports.index(int(remembered.rpartition(":")[2]))


def _containers(bed: TestBed) -> dict[str, str]:
    """Every Atoll container on the host: ID -> StartedAt."""
    api = bed.hosts[0].docker().api
    found = api.containers(all=True, filters={"label": "io.atoll.container.name"})
    return {c["Id"]: api.inspect_container(c["Id"])["State"]["StartedAt"] for c in found}


async def _ready(client: Client) -> bool:
    got = await client.get(NODE, "", "node-0")
    assert isinstance(got, node_pb2.Node)
    return any(c.type == "Ready" and c.status == 1 for c in got.status.conditions)


async def _running(client: Client, n: int) -> bool:
    pods, _ = await client.list(POD, "default", "app=web")
    running = [p for p in pods if isinstance(p, pod_pb2.Pod) and p.status.phase == pod_pb2.POD_PHASE_RUNNING]
    return len(running) == n == len(pods)
