"""Atoll's daemons on test-bed hosts: a coordinator and agents as real processes.

Each daemon runs inside its host's namespaces, started with the venv's Python
so that a test exercises exactly what `atoll-agent` and `coordinator serve`
run. The test process reaches the coordinator through a unix socket it also
listens on (the hosts have no link to the root namespace): the socket is mode
0600 and its peers are admin, which the test process (root, like the
coordinator) is.

Agents join like an operator's would: the first one to start creates a join
token with `coordinator token create` over that socket, and every agent gets
`--join-token` and `--ca-hash` (ignored once its state dir holds a node
certificate, so restarted agents keep their identity).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from atoll import errors, kinds
from atoll.v1 import node_pb2, pod_pb2
from coordinator.client.api import Client
from tests.integration.testbed import Host, Process

T = TypeVar("T")

POD = kinds.by_name("Pod")
NODE = kinds.by_name("Node")

FAST_AGENT = (
    "--relist-interval",
    "0.2",
    "--backoff-base",
    "1",
    "--backoff-max",
    "4",
    "--heartbeat-interval",
    "1",
)
FAST_COORDINATOR = (
    "--heartbeat-interval",
    "1",
    "--node-grace-period",
    "5",
    "--scheduler-retry-interval",
    "1",
)


# Running coordinators by the IP of their host, for agents to find the one they join.
_RUNNING: dict[str, CoordinatorProcess] = {}


def cli(server: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """The real `coordinator` CLI, run from the test process against `server`."""
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli.main", "--server", server, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class CoordinatorProcess:
    def __init__(
        self, host: Host, data_dir: Path, extra: Sequence[str] = (), *, socket: Path | None = None
    ) -> None:
        self.host = host
        self.data_dir = data_dir
        # The test process reaches the socket through the shared filesystem.
        self.socket = socket or data_dir.parent / f"{data_dir.name}.sock"
        self.address = f"{host.ip}:6443"
        self.extra = tuple(extra)
        self.process: Process | None = None
        self._join: tuple[str, ...] | None = None

    @property
    def server(self) -> str:
        return f"unix://{self.socket}"

    def create_token(self, *args: str, timeout: float = 60) -> dict[str, str]:
        """`coordinator token create -o json ARGS` once the coordinator answers."""
        deadline = time.monotonic() + timeout
        while True:
            res = cli(self.server, "token", "create", "-o", "json", *args)
            if res.returncode == 0:
                return dict(json.loads(res.stdout))
            if time.monotonic() > deadline:
                raise AssertionError(f"coordinator token create kept failing: {res.stderr.strip()}")
            time.sleep(0.3)

    def join_args(self) -> tuple[str, ...]:
        """--join-token and --ca-hash for this coordinator's agents (one token for the test)."""
        if self._join is None:
            made = self.create_token("--ttl", "2h", "--uses", "0", "--description", "test bed")
            self._join = ("--join-token", made["token"], "--ca-hash", made["caHash"])
        return self._join

    def start(self) -> CoordinatorProcess:
        self.socket.unlink(missing_ok=True)
        argv = [
            sys.executable, "-m", "coordinator.cli.main", "serve",
            "--listen", f"0.0.0.0:6443,unix://{self.socket}",
            "--data-dir", str(self.data_dir),
            *FAST_COORDINATOR, *self.extra,
        ]  # fmt: skip
        self.process = self.host.spawn(argv, label="coordinator")
        _RUNNING[self.host.ip] = self
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        self.process.kill(sig)
        self.process.wait(10)


class AgentProcess:
    def __init__(
        self, host: Host, coordinator: str, state_dir: Path, name: str, extra: Sequence[str] = ()
    ) -> None:
        self.host = host
        self.coordinator = coordinator
        self.state_dir = state_dir
        self.name = name
        self.extra = tuple(extra)
        self.process: Process | None = None

    def join_args(self) -> tuple[str, ...]:
        if "--join-token" in self.extra or "--insecure" in self.extra:
            return ()
        host = self.coordinator.rpartition(":")[0]
        coordinator = _RUNNING.get(self.host.ip if host.startswith("127.") else host)
        return coordinator.join_args() if coordinator is not None else ()

    def start(self) -> AgentProcess:
        argv = [
            sys.executable, "-m", "agent.main",
            "--coordinator", self.coordinator,
            "--node-name", self.name,
            "--node-ip", self.host.ip,
            "--docker-host", self.host.docker_host,
            "--state-dir", str(self.state_dir),
            "--docker-config", str(self.host.dir / "daemon.json"),
            "--docker-pidfile", str(self.host.dir / "dockerd.pid"),
            *FAST_AGENT, *self.join_args(), *self.extra,
        ]  # fmt: skip
        self.process = self.host.spawn(argv, label=f"agent-{self.name}")
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        self.process.kill(sig)
        self.process.wait(10)


async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Poll `check` until it returns something truthy; fail with the last value or error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = None
    while True:
        try:
            result = await check()
            if result:
                return result
            last = result
        except (AssertionError, errors.AtollError) as exc:
            last = exc
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


async def node_ready(client: Client, name: str) -> bool:
    try:
        node = await client.get(NODE, "", name)
    except errors.NotFound:
        return False
    assert isinstance(node, node_pb2.Node)
    return any(c.type == "Ready" and c.status == 1 for c in node.status.conditions)


async def pod(client: Client, name: str, namespace: str = "default") -> pod_pb2.Pod:
    obj = await client.get(POD, namespace, name)
    assert isinstance(obj, pod_pb2.Pod)
    return obj


async def wait_running(
    client: Client, name: str, *, restarts: int | None = None, timeout: float = 60
) -> pod_pb2.Pod:
    async def check() -> pod_pb2.Pod | None:
        p = await pod(client, name)
        ready = p.status.phase == pod_pb2.POD_PHASE_RUNNING and all(
            cs.ready for cs in p.status.container_statuses
        )
        counted = restarts is None or sum(cs.restart_count for cs in p.status.container_statuses) == restarts
        return p if ready and p.status.container_statuses and counted else None

    return await eventually(check, timeout=timeout, what=f"pod {name} Running (restarts={restarts})")
