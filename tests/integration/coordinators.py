"""Several `coordinator serve` processes on the run's real etcd, on loopback: killed with -9 by the tests.

Each coordinator is a real process (the venv's Python, what `coordinator
serve` runs) with its own data dir and its own port, on a key prefix of its
own in the shared etcd, so a test gets a fresh cluster. Plain text on
loopback (--insecure): what is under test here is the store and the
election, not TLS.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from coordinator.client.api import Client
from tests.integration.etcd import EtcdCluster

FAST = (
    "--heartbeat-interval", "0.3",
    "--node-grace-period", "3",
    "--pod-eviction-timeout", "1",
    "--scheduler-retry-interval", "0.5",
    "--leader-ttl", "2",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CoordinatorProcesses:
    """`n` coordinators of one cluster on `etcd` (a key prefix of their own)."""

    def __init__(self, etcd: EtcdCluster, workdir: Path, n: int = 3, extra: Sequence[str] = ()) -> None:
        self.etcd = etcd
        self.workdir = workdir
        self.prefix = f"atoll-{uuid.uuid4().hex[:8]}"
        self.ports = [free_port() for _ in range(n)]
        self.extra = tuple(extra)
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n

    @property
    def store(self) -> str:
        return f"etcd://{self.etcd.endpoints}/{self.prefix}"

    def address(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i]}"

    def start(self, i: int | None = None) -> CoordinatorProcesses:
        for j in range(len(self.ports)) if i is None else [i]:
            data = self.workdir / f"c{j}"
            data.mkdir(parents=True, exist_ok=True)
            argv = [
                sys.executable, "-m", "coordinator.cli.main", "serve",
                "--listen", self.address(j), "--data-dir", str(data),
                "--store", self.store, "--insecure", "--token-listen", "",
                *FAST, *self.extra,
            ]  # fmt: skip
            with open(self.workdir / f"c{j}.log", "ab") as log:
                self.procs[j] = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
        return self

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.procs[i] = None

    def alive(self) -> list[int]:
        return [i for i, p in enumerate(self.procs) if p is not None and p.poll() is None]

    def client(self, i: int) -> Client:
        return Client(self.address(i))

    async def leader(self, via: int) -> int | None:
        """Index of the leading coordinator, as `via` sees the members (None: no leader right now)."""
        async with self.client(via) as client:
            members = (await client.coordinators()).members
        for m in members:
            if m.leader and m.address in [self.address(i) for i in self.alive()]:
                return [self.address(i) for i in range(len(self.ports))].index(m.address)
        return None

    def log_tail(self, i: int, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.workdir / f"c{i}.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

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
