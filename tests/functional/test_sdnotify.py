"""The agent under systemd's notification protocol: READY only once registered and synced; watchdog; stop.

The agent is the real one on a fake runtime against an in-process
coordinator; the notifier is a recording fake, and one test sends over a
real datagram socket as systemd would receive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pathlib
import signal
import socket
from collections.abc import Mapping

import pytest

from agent import service
from atoll.sdnotify import RecordingNotifier, SocketNotifier
from tests.functional.harness import Cluster, FakeNode, eventually
from tests.functional.test_agent_behaviour import make_pod


class WitnessNotifier(RecordingNotifier):
    """Records, at READY=1, whether the node was registered and the coordinator's assignment in force."""

    def __init__(self, node: FakeNode) -> None:
        super().__init__()
        self.node = node
        self.state_at_ready: tuple[bool, bool, int] | None = None

    def send(self, *fields: str) -> None:
        if "READY=1" in fields and self.state_at_ready is None:
            agent = self.node.agent
            assert agent.link is not None and agent.manager is not None
            running = sum(1 for s in agent.manager.statuses.values() if s.phase == 2)
            self.state_at_ready = (agent.link.registered.is_set(), agent.manager.authoritative, running)
        super().send(*fields)


async def test_ready_only_once_registered_and_synced_then_watchdog_and_stopping(
    cluster: Cluster, tmp_path: pathlib.Path
) -> None:
    assert cluster.client is not None
    first = await cluster.add_node("node-0", images=("busybox",))
    await cluster.client.create(make_pod("p"))
    await eventually(lambda: _running(first), what="the pod running on node-0")
    await first.stop()  # the same node comes back as a service: its pod is waiting for it

    node = FakeNode(tmp_path, "node-0", cluster.coordinator.port, ("busybox",), **cluster.join_settings())
    node.runtime = first.runtime
    node.agent = node._new_agent()
    notifier = WitnessNotifier(node)
    run = asyncio.create_task(
        service.run(node.agent, notifier, watchdog_interval=0.05, install_signals=False)
    )
    try:
        await eventually(lambda: _said(notifier, "READY=1"), timeout=20, what="READY=1")
        assert notifier.state_at_ready == (True, True, 1), notifier.state_at_ready
        statuses = notifier.sent("STATUS=")
        assert statuses[0] == "STATUS=starting" and statuses[1].startswith("STATUS=registering node node-0")
        assert "running 1 pods" in statuses[-1] and "link up" in statuses[-1], statuses
        await eventually(lambda: _said(notifier, "WATCHDOG=1"), what="watchdog pets")
    finally:
        node.agent.stop_event.set()
        await asyncio.wait_for(run, 30)
    assert notifier.sent("STOPPING=1")
    left = await node.runtime.list_containers({})
    assert [c for c in left if c.state == "running"], "stopping the agent stopped containers"


async def test_not_ready_while_the_coordinator_is_unreachable(tmp_path: pathlib.Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node = FakeNode(tmp_path, "lonely", port, insecure=True)
    notifier = RecordingNotifier()
    run = asyncio.create_task(service.run(node.agent, notifier, install_signals=False))
    try:
        await eventually(lambda: _said(notifier, "STATUS=registering"), what="registering status")
        await asyncio.sleep(1.0)
        assert not notifier.sent("READY=1")
    finally:
        node.agent.stop_event.set()
        await asyncio.wait_for(run, 30)


async def test_reload_says_reloading_then_ready_and_applies_log_level_and_registry_files(
    cluster: Cluster, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # restored at teardown, whatever the reload sets
    registries = tmp_path / "registries.yaml"
    registries.write_text("search: [before.lab]\n")
    node = FakeNode(
        tmp_path,
        "node-r",
        cluster.coordinator.port,
        registries_file=str(registries),
        **cluster.join_settings(),
    )
    notifier = RecordingNotifier()
    run = asyncio.create_task(service.run(node.agent, notifier, install_signals=False))
    try:
        await eventually(lambda: _said(notifier, "READY=1"), timeout=20, what="READY=1")
        assert node.agent.registries.settings.search == ("before.lab",)
        conf = tmp_path / "agent.yaml"
        conf.write_text(
            f"coordinator: {node.agent.cfg.coordinator}\nlog_level: debug\nheartbeat_interval: 7\n"
        )
        registries.write_text("search: [after.lab]\n")
        before = len(notifier.messages)

        await service.reload(node.agent, ["--config", str(conf)], notifier)

        reloading, ready = notifier.messages[before:]
        assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC="), reloading
        assert int(reloading[1].removeprefix("MONOTONIC_USEC=")) > 0
        assert ready[0] == "READY=1" and "running 0 pods" in ready[1], ready
        assert logging.getLogger().level == logging.DEBUG and node.agent.cfg.log_level == "debug"
        assert node.agent.registries.settings.search == ("after.lab",)
        (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reloaded: ")]
        assert "only applied on restart" in line and "heartbeat_interval" in line, line
        assert node.agent.cfg.heartbeat_interval != 7  # not live: kept until a restart

        # A bad file changes nothing, and systemd still hears READY=1 (the reload is over).
        conf.write_text("log_level: loud\n")
        before = len(notifier.messages)
        await service.reload(node.agent, ["--config", str(conf)], notifier)
        assert [m[0] for m in notifier.messages[before:]] == ["RELOADING=1", "READY=1"]
        assert logging.getLogger().level == logging.DEBUG
        assert any("configuration not changed" in r.getMessage() for r in caplog.records)
    finally:
        node.agent.stop_event.set()
        await asyncio.wait_for(run, 30)


async def test_stop_finishes_a_pod_sync_in_flight_and_says_so(
    cluster: Cluster, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM (what its handler does: set stop_event) in the middle of a pod's sync: the sync is
    finished, not abandoned, before the agent exits, and the log says what the stop did."""
    caplog.set_level(logging.INFO)
    assert cluster.client is not None
    node = FakeNode(tmp_path, "node-s", cluster.coordinator.port, **cluster.join_settings())
    node.runtime.pullable.add("redis")
    pulling, release = asyncio.Event(), asyncio.Event()
    pull = node.runtime.pull_image

    async def held_pull(ref: str, auth: Mapping[str, str] | None = None) -> None:
        pulling.set()
        await release.wait()
        await pull(ref, auth)

    node.runtime.pull_image = held_pull  # type: ignore[method-assign]
    notifier = RecordingNotifier()
    run = asyncio.create_task(service.run(node.agent, notifier, install_signals=False))
    try:
        await eventually(lambda: _said(notifier, "READY=1"), timeout=20, what="READY=1")
        await cluster.client.create(make_pod("slow", image="redis"))
        await asyncio.wait_for(pulling.wait(), 20)
        node.agent.stop_event.set()
        await asyncio.sleep(0.5)
        assert not run.done(), "the agent exited with a pod sync in flight"
        assert notifier.sent("STOPPING=1")
        release.set()
        await asyncio.wait_for(run, 30)
    finally:
        release.set()
        node.agent.stop_event.set()
        await asyncio.wait_for(run, 30)
    # The sync went on past the stop: the image pulled, the app container created and started.
    assert "redis" in node.runtime.images
    (main,) = [
        c
        for c in node.runtime.containers.values()
        if c.labels.get("io.atoll.pod.name") == "slow" and c.labels.get("io.atoll.container.name") == "main"
    ]
    assert main.running
    messages = [r.getMessage() for r in caplog.records]
    assert "stopping: 1 pods keep running; finishing syncs in flight" in messages, messages
    assert "stopping: finishing 1 pod syncs in flight" in messages, messages
    assert "stopped; 1 pods left running" in messages, messages
    assert not [m for m in messages if "still running after" in m], messages


def test_socket_notifier_sends_one_datagram_per_message(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        SocketNotifier(str(path)).send("READY=1", "STATUS=serving")
        assert server.recv(4096) == b"READY=1\nSTATUS=serving"


async def _said(notifier: RecordingNotifier, prefix: str) -> bool:
    return bool(notifier.sent(prefix))


async def _running(node: FakeNode) -> bool:
    manager = node.agent.manager
    return manager is not None and any(s.phase == 2 for s in manager.statuses.values())


async def test_sigterm_stops_the_agent_while_the_loops_own_wake_up_socket_is_full(
    tmp_path: pathlib.Path,
) -> None:
    """The signal has a socket of its own (atoll.aio.SignalRoute): a storm of cross-thread
    wake-ups that fills asyncio's cannot swallow it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node = FakeNode(tmp_path, "stopped", port, insecure=True)
    notifier = RecordingNotifier()
    before = signal.getsignal(signal.SIGTERM)
    run = asyncio.create_task(service.run(node.agent, notifier))
    await eventually(lambda: _said(notifier, "STATUS=registering"), what="registering status")
    loop = asyncio.get_running_loop()
    with contextlib.suppress(BlockingIOError):
        while True:
            loop._csock.send(b"\0" * 4096)  # type: ignore[attr-defined]  # asyncio's own socket, full
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(run, 30)
    assert notifier.sent("STOPPING=1")
    assert signal.getsignal(signal.SIGTERM) == before
