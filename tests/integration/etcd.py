"""A real etcd cluster on loopback for tests: Debian's etcd-server, its own data dirs and free ports.

Three members are healthy about 2 s after launch (../shared/notes/etcd.md). A
member can be killed -9 and restarted into the same cluster
(``--initial-cluster-state existing``). Everything stops and its directory is
removed on `stop`, also after a failed test.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"


@dataclass
class EtcdCluster:
    size: int = 3
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="atoll-etcd-")))
    members: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i in range(self.size):
            self.members.append(Member(f"e{i}", _free_port(), _free_port(), self.base / f"e{i}"))

    @property
    def endpoints(self) -> str:
        """``h1:p1,h2:p2,...``: what ``coordinator serve --store etcd://`` takes."""
        return ",".join(m.endpoint for m in self.members)

    def _argv(self, m: Member, state: str) -> list[str]:
        peers = ",".join(f"{x.name}=http://127.0.0.1:{x.peer_port}" for x in self.members)
        return [
            "etcd",
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url,
            "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-cluster", peers,
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.base.name,
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--quota-backend-bytes", str(256 * 2**20),
        ]  # fmt: skip

    def start(self, timeout: float = 30) -> EtcdCluster:
        for m in self.members:
            self._launch(m, "new")
        self.wait_healthy(timeout)
        return self

    def _launch(self, m: Member, state: str) -> None:
        m.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = (self.base / f"{m.name}.log").open("ab")
        m.process = subprocess.Popen(self._argv(m, state), stdout=log, stderr=subprocess.STDOUT)

    def healthy(self, m: Member) -> bool:
        try:
            with urllib.request.urlopen(f"{m.client_url}/health", timeout=1) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except OSError:
            return False

    def wait_healthy(self, timeout: float = 30, members: list[Member] | None = None) -> None:
        deadline = time.monotonic() + timeout
        wanted = members or self.members
        while not all(self.healthy(m) for m in wanted):
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd members not healthy after {timeout}s; logs in {self.base}")
            for m in wanted:
                if m.process is not None and m.process.poll() is not None:
                    log = (self.base / f"{m.name}.log").read_text()[-2000:]
                    raise RuntimeError(f"etcd {m.name} exited {m.process.returncode}:\n{log}")
            time.sleep(0.05)

    def kill(self, i: int) -> None:
        m = self.members[i]
        if m.process is not None:
            m.process.kill()
            m.process.wait(10)
            m.process = None

    def restart(self, i: int, timeout: float = 30) -> None:
        m = self.members[i]
        self._launch(m, "existing")
        self.wait_healthy(timeout, [m])

    def restart_all(self, timeout: float = 30) -> None:
        """After losing every member: they need each other (a quorum) before any is healthy."""
        for m in self.members:
            if m.process is None:
                self._launch(m, "existing")
        self.wait_healthy(timeout)

    def stop(self) -> None:
        for i in range(len(self.members)):
            self.kill(i)
        shutil.rmtree(self.base, ignore_errors=True)
