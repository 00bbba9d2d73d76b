"""The call-queue probe against a real gRPC server, and in a coordinator.

A held call is deaf time. Here the handler holds it (the probe cannot tell that from a wait in
gRPC's queue, which is what it is for); bench/hollow.py shows the queue itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from atoll import tls
from coordinator.api.callqueue import CallQueueProbe


@pytest.fixture
async def socket_path() -> AsyncIterator[str]:
    # A short directory of its own: a unix socket's path has at most 107 bytes.
    directory = tempfile.mkdtemp(prefix="atoll-cq-")
    yield str(pathlib.Path(directory) / "calls.sock")
    shutil.rmtree(directory, ignore_errors=True)


async def wait_for(check: object, timeout: float = 10.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


class SlowHealth(health_pb2_grpc.HealthServicer):
    """Answers SERVING; holds `hold` seconds before the answer while asked to (a busy queue)."""

    def __init__(self) -> None:
        self.hold = 0.0

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: object
    ) -> health_pb2.HealthCheckResponse:
        if self.hold:
            await asyncio.sleep(self.hold)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@contextlib.asynccontextmanager
async def probing(probe: CallQueueProbe) -> AsyncIterator[SlowHealth]:
    """`probe` running against a server of SlowHealth on its socket, for the block's length."""
    health = SlowHealth()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_secure_port(probe.target, tls.local_server_credentials())
    await server.start()
    stop = asyncio.Event()
    task = asyncio.create_task(probe.run(stop))
    try:
        yield health
    finally:
        stop.set()
        await task
        await server.stop(0)


async def test_answered_probes_are_not_deaf_time_and_a_held_one_is(socket_path: str) -> None:
    probe = CallQueueProbe(socket_path, interval=0.05, threshold=0.25)
    async with probing(probe) as health:
        await wait_for(lambda: probe.slowest > 0)
        await asyncio.sleep(0.3)
        assert probe.within(5.0) == 0.0  # answered at once, time after time
        health.hold = 0.8
        await wait_for(lambda: probe.within(5.0) > 0.5)  # counted while it is still held
        health.hold = 0.0
        await wait_for(lambda: probe.slowest >= 0.8)
        assert 0.7 < probe.within(5.0) < 2.0  # one held call (and maybe part of the next)


async def test_a_server_not_there_is_no_deaf_time(socket_path: str) -> None:
    probe = CallQueueProbe(socket_path, interval=0.05, timeout=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(probe.run(stop))
    await asyncio.sleep(1.5)
    stop.set()
    await task
    assert probe.within(5.0) == 0.0 and probe.slowest == 0.0


async def test_a_coordinator_probes_through_its_own_socket_and_removes_it(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coordinator.server import Coordinator
    from tests.functional.harness import serve_config

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "coordinator"
    data.mkdir(mode=0o700)
    stale = data / "calls-999999999-0.sock"  # left by a coordinator that is gone
    stale.touch()
    mine_elsewhere = data / f"calls-{os.getpid()}-99.sock"  # a live process's: not touched
    mine_elsewhere.touch()
    coordinator = Coordinator(serve_config(tmp_path, data_dir="coordinator"))  # relative, as a user may
    await coordinator.start()
    try:
        # One on the API's listener, one on the heartbeat lane.
        sockets = [p for p in data.glob("calls-*.sock") if p.is_socket()]
        assert len(sockets) == 2
        assert all(s.stat().st_mode & 0o777 == 0o600 for s in sockets)
        assert not stale.exists() and mine_elsewhere.exists()
        assert not coordinator.tasks["call-queue-probe"].done()
        assert not coordinator.tasks["lane-queue-probe"].done()
    finally:
        await coordinator.stop()
    assert not any(s.exists() for s in sockets) and mine_elsewhere.exists()


async def test_a_call_that_ran_out_of_time_was_held_all_that_time(socket_path: str) -> None:
    probe = CallQueueProbe(socket_path, interval=0.05, threshold=0.25, timeout=0.6)
    async with probing(probe) as health:
        await wait_for(lambda: probe.slowest > 0)
        health.hold = 5.0  # longer than the probe waits
        await wait_for(lambda: probe.slowest >= 0.6)  # recorded at its deadline, not dropped
        assert probe.within(5.0) >= 0.6
