"""In-process clusters for functional tests: a real coordinator (real gRPC on port 0,
real SQLite) and agents with the recording fake runtime.

Secure like a real cluster: the coordinator makes its CA, the client uses the
admin.conf it writes, agents join with a token and the CA pin, and everything
speaks mutual TLS. `Cluster(tmp, insecure=True)` runs plain text on loopback
for tests that are about something else and need raw access.
"""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from agent.daemon import Agent
from agent.host.metrics import FakeMetrics
from agent.network import FakeFirewall, FakeNetlink
from agent.network.sandbox import RecordingPlumber
from agent.pods.events import RecordingRecorder
from agent.proxy import FakeNetfilter
from agent.runtime.fake import FakeRuntime
from atoll.agentconfig import AgentConfig
from coordinator.auth import tokens
from coordinator.client import config as clientconfig
from coordinator.client.api import Client
from coordinator.client.config import ClientConfig
from coordinator.config import ServeConfig
from coordinator.server import Coordinator

T = TypeVar("T")

INFRA_IMAGE = "atoll/pause:1.0"


async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll `check` until it returns a truthy value or raises nothing; fail with the last result."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = await check()
            if result:
                return result
            last = result
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


def serve_config(tmp: pathlib.Path, **overrides: object) -> ServeConfig:
    values: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "data_dir": str(tmp / "coordinator"),
        "heartbeat_interval": 0.2,
        "node_grace_period": 2.0,
        "node_status_interval": 1.0,
        "scheduler_retry_interval": 0.5,
        "store_sync": "NORMAL",
        "token_listen": "127.0.0.1:0",
    }
    values.update(overrides)
    return ServeConfig(**values)  # type: ignore[arg-type]


def agent_config(tmp: pathlib.Path, name: str, coordinator_port: int, **overrides: object) -> AgentConfig:
    values: dict[str, object] = {
        "coordinator": f"127.0.0.1:{coordinator_port}",
        "node_name": name,
        "state_dir": str(tmp / f"agent-{name}"),
        "listen": "127.0.0.1:0",
        "node_ip": "127.0.0.1",
        "relist_interval": 0.05,
        "resync_interval": 2.0,
        "backoff_base": 0.2,
        "backoff_max": 1.0,
        "heartbeat_interval": 0.2,
    }
    values.update(overrides)
    return AgentConfig(**values)  # type: ignore[arg-type]


class FakeNode:
    """An agent running in-process on a FakeRuntime."""

    def __init__(
        self, tmp: pathlib.Path, name: str, coordinator_port: int, images: tuple[str, ...] = (), **cfg: object
    ) -> None:
        self.name = name
        self.runtime = FakeRuntime(images=(INFRA_IMAGE, *images))
        self.recorder = RecordingRecorder()
        self.config = agent_config(tmp, name, coordinator_port, **cfg)
        # The kernel is faked too: functional tests never touch the machine's network.
        self.netlink = FakeNetlink()
        self.firewall = FakeFirewall()
        self.netfilter = FakeNetfilter()
        self.plumber = RecordingPlumber()
        self.agent = self._new_agent()

    async def start(self) -> FakeNode:
        """Start the agent and wait until it has registered (joining first takes a few round trips)."""
        await self.agent.start()
        assert self.agent.link is not None
        await asyncio.wait_for(self.agent.link.registered.wait(), 10)
        return self

    async def stop(self) -> None:
        await self.agent.stop()

    async def restart(self) -> None:
        """A new agent process on the same state dir and the same (fake) engine."""
        await self.agent.stop()
        self.runtime_calls_before_restart = list(self.runtime.calls)
        self.agent = self._new_agent()
        await self.agent.start()

    def _new_agent(self) -> Agent:
        return Agent(
            self.config,
            runtime=self.runtime,
            metrics=FakeMetrics(hostname=self.name),
            recorder=self.recorder,
            netlink=lambda: self.netlink,
            firewall=lambda: self.firewall,
            netfilter=lambda: self.netfilter,
            plumber=lambda: self.plumber,
        )


class Cluster:
    def __init__(
        self,
        tmp: pathlib.Path,
        *,
        insecure: bool = False,
        clock: Callable[[], float] = time.monotonic,
        **serve: object,
    ) -> None:
        """`clock`: the coordinator's clock for rate limits; serve options go to ServeConfig."""
        self.tmp = tmp
        self.insecure = insecure
        if insecure:
            serve = {"insecure": True, "token_listen": "", **serve}
        self.coordinator = Coordinator(serve_config(tmp, **serve), clock=clock)
        self.nodes: list[FakeNode] = []
        self.client: Client | None = None
        self.admin: ClientConfig | None = None
        self.join_token = ""

    @property
    def admin_conf(self) -> pathlib.Path:
        return self.coordinator.cfg.data_path / "admin.conf"

    async def start(self) -> Cluster:
        await self.coordinator.start()
        if self.insecure:
            self.client = Client(f"127.0.0.1:{self.coordinator.port}")
            return self
        self.admin = clientconfig.parse(self.admin_conf.read_text(), "admin.conf")
        self.client = Client(config=self.admin)
        token_id, secret = tokens.generate()
        await self.client.create(tokens.new_token(token_id, secret, ttl=3600, description="test nodes"))
        self.join_token = f"{token_id}.{secret}"
        return self

    def cli_args(self) -> list[str]:
        """How the `coordinator` CLI reaches this cluster: its admin.conf (a plain address if insecure)."""
        if self.insecure:
            return ["--server", f"127.0.0.1:{self.coordinator.port}"]
        return ["--config", str(self.admin_conf)]

    def join_settings(self) -> dict[str, object]:
        """What an agent needs to join this cluster (nothing for an insecure one)."""
        if self.insecure:
            return {"insecure": True}
        assert self.admin is not None
        security = self.coordinator.security
        assert security is not None
        return {
            "join_token": self.join_token,
            "ca_hash": security.info.ca_hash,
            "join_address": f"127.0.0.1:{self.coordinator.token_port}",
        }

    async def add_node(self, name: str, images: tuple[str, ...] = (), **cfg: object) -> FakeNode:
        node = FakeNode(self.tmp, name, self.coordinator.port, images, **{**self.join_settings(), **cfg})
        await node.start()
        self.nodes.append(node)
        return node

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()
        if self.client is not None:
            await self.client.__aexit__(None, None, None)
        await self.coordinator.stop()
