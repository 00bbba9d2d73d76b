"""An agent given three coordinators survives the death of the one it talks to.

Three in-process coordinators share one store (and, through it and the
cluster secret, one CA; each has its own serving certificate). The third
leads (scheduler, node lifecycle); the first two only serve, as followers
do. The agent starts on the first; stopping it costs the agent one
reconnect to the next: no re-join (same certificate, the join token spent
once), no container started or stopped again, its heartbeats on a follower
keep the node Ready for the leader, and new pods still arrive and report.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import time
from collections.abc import AsyncIterator

import pytest

from atoll import kinds
from atoll.v1 import auth_pb2, node_pb2, pod_pb2
from coordinator.auth import tokens
from coordinator.cli.main import main
from coordinator.client import config as clientconfig
from coordinator.client.api import Client
from coordinator.server import Coordinator
from coordinator.store.election import LeaderWork, Member, SoleLeader, new_identity
from coordinator.store.memory import MemoryStore
from tests.functional.harness import FakeNode, eventually, serve_config

POD = kinds.by_name("Pod")
NODE = kinds.by_name("Node")
TOKEN = kinds.by_name("Token")
GRACE = 2.0  # serve_config's node grace period


class Follower:
    """An elector that never wins: a coordinator that serves while another leads."""

    def __init__(self) -> None:
        self._id = new_identity()

    @property
    def identity(self) -> str:
        return self._id

    async def run(self, stop: asyncio.Event, work: LeaderWork) -> None:
        await stop.wait()

    async def members(self) -> list[Member]:
        return [Member(self._id, "", time.time())]


class ThreeCoordinators:
    def __init__(self, tmp: pathlib.Path) -> None:
        secret = tmp / "cluster-secret"
        secret.write_bytes(os.urandom(32).hex().encode())
        secret.chmod(0o600)
        store = MemoryStore()
        self.coordinators = [
            Coordinator(
                serve_config(tmp / f"c{i}", cluster_secret_file=str(secret)),
                store=store,
                elector=SoleLeader() if i == 2 else Follower(),
            )
            for i in range(3)
        ]
        self.client: Client | None = None

    def address(self, i: int) -> str:
        return f"127.0.0.1:{self.coordinators[i].port}"


@pytest.fixture
async def three(tmp_path: pathlib.Path) -> AsyncIterator[ThreeCoordinators]:
    cluster = ThreeCoordinators(tmp_path)
    leader = cluster.coordinators[2]
    await leader.start()  # first: it puts the cluster CA in the store
    await asyncio.gather(*(c.start() for c in cluster.coordinators[:2]))
    admin = clientconfig.parse((leader.cfg.data_path / "admin.conf").read_text(), "admin.conf")
    cluster.client = Client(config=admin)  # the leader's: it outlives the test's kill
    try:
        yield cluster
    finally:
        await cluster.client.close()
        for c in cluster.coordinators:
            await c.stop()


def pod(name: str) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.spec.containers.add(name="main", image="busybox")
    return p


async def test_a_dead_coordinator_costs_one_reconnect(
    three: ThreeCoordinators, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = three.client
    assert client is not None
    token_id, secret = tokens.generate()
    await client.create(tokens.new_token(token_id, secret, ttl=3600, description="failover"))
    first = three.coordinators[0]
    assert first.security is not None
    node = FakeNode(
        tmp_path,
        "n1",
        first.port,
        images=("busybox",),
        coordinator=",".join(three.address(i) for i in range(3)),
        join_token=f"{token_id}.{secret}",
        ca_hash=first.security.info.ca_hash,
        join_address=f"127.0.0.1:{first.token_port}",
    )
    await node.start()
    try:
        link, connection = node.agent.link, node.agent.connection
        assert link is not None and connection is not None
        assert connection.target == three.address(0)
        await client.create(pod("before"))
        await eventually(lambda: _running(client, "before"), what="pod Running")
        # The agent answers through the first; the node is Ready for the leader (the third).
        await eventually(lambda: _ready(client), what="node Ready")
        cert = (node.config.state_path / "pki" / "node.crt").read_bytes()
        starts, stops = (
            list(node.runtime.calls_of("start_container")),
            node.runtime.calls_of("stop_container"),
        )
        containers = {c.id: c.started_at for c in node.runtime.containers.values()}

        killed = time.monotonic()
        await first.stop()

        async def moved() -> bool:
            return connection.target != three.address(0) and link.connected

        await eventually(moved, timeout=5 * GRACE, what="the agent on another coordinator")
        reconnect = time.monotonic() - killed
        print(f"reconnected to {connection.target} {reconnect:.2f}s after the coordinator stopped")
        assert reconnect < 10 * node.config.heartbeat_interval  # a few heartbeats
        assert connection.targets.hops == 1  # one reconnect: straight to the next, which answered

        # Heartbeats on a follower count: the leader keeps the node Ready well past the grace period.
        until = time.monotonic() + 2 * GRACE
        while time.monotonic() < until:
            assert await _ready(client), "the node went NotReady/Unknown while heartbeating to a follower"
            await asyncio.sleep(0.2)
        # Status and assignments flow through the new coordinator.
        await client.create(pod("after"))
        await eventually(lambda: _running(client, "after"), what="a new pod Running after the failover")

        # No re-join, no container touched.
        assert (node.config.state_path / "pki" / "node.crt").read_bytes() == cert
        token = await client.get(TOKEN, "", token_id)
        assert isinstance(token, auth_pb2.Token) and token.status.uses == 1
        assert node.runtime.calls_of("stop_container") == stops
        before = [c for c in node.runtime.calls_of("start_container") if c in containers]
        assert before == starts
        assert {cid: node.runtime.containers[cid].started_at for cid in containers} == containers
        assert connection.renewals == 0
        remembered = (node.config.state_path / "coordinator").read_text().strip()
        assert remembered == connection.target

        # The CLI on every coordinator, the dead one first: `coordinator get pods` answers.
        admin = three.coordinators[2].cfg.data_path / "admin.conf"
        everyone = ",".join(three.address(i) for i in range(3))
        code = await asyncio.to_thread(main, ["--config", str(admin), "--server", everyone, "get", "pods"])
        out = capsys.readouterr().out
        assert code == 0 and "before" in out and "after" in out, out
    finally:
        await node.stop()


async def _running(client: Client, name: str) -> bool:
    got = await client.get(POD, "default", name)
    assert isinstance(got, pod_pb2.Pod)
    return got.status.phase == pod_pb2.POD_PHASE_RUNNING


async def _ready(client: Client) -> bool:
    got = await client.get(NODE, "", "n1")
    assert isinstance(got, node_pb2.Node)
    return any(c.type == "Ready" and c.status == 1 for c in got.status.conditions)
