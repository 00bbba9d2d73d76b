"""Unary calls a gRPC asyncio server answers while its loop is busy, on that loop or on a thread.

    .venv/bin/python bench/busy_loop_calls.py [--busy-tasks 20] [--seconds 10]

A server process (CPU 0) keeps its main loop busy: --busy-tasks tasks each
spin 0.5 ms and yield, so a turn of the loop takes about busy-tasks x 0.5 ms,
as the coordinator's loop does during a scheduling burst (scheduler, informers,
pushes). A client process (CPU 1) keeps 400 health checks in flight over 100
connections. Four layouts, one run:

  loop x1      one server on the busy loop (the coordinator before atoll.handoff)
  loop x4      four servers sharing the port on the busy loop
  thread x1    one server on a LoopThread, its handler handed to the busy loop
  thread x4    four such servers sharing the port

Each handler runs on the busy loop in every layout; only where gRPC's own
steps run differs. Printed: calls answered per second, turns of the busy loop
per second, and each layout's ratio to "loop x1".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import grpc
from common import ROOT, machine  # type: ignore[import-not-found]
from grpc_health.v1 import health_pb2, health_pb2_grpc

from atoll.handoff import Handoff, LoopThread

LAYOUTS = (("loop", 1), ("loop", 4), ("thread", 1), ("thread", 4))
SPIN = 0.0005


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class _Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Check does its work on the busy loop, wherever the server runs."""

    answered = 0

    def __init__(self, handoff: Handoff | None) -> None:
        self._handoff = handoff

    async def Check(self, request: object, context: object) -> health_pb2.HealthCheckResponse:
        async def work() -> None:
            _Health.answered += 1

        if self._handoff is None:
            await work()
        else:
            await self._handoff.run(work())
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def _start(servers: int, port: int, handoff: Handoff | None) -> list[grpc.aio.Server]:
    started = []
    for _ in range(servers):
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        health_pb2_grpc.add_HealthServicer_to_server(_Health(handoff), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        started.append(server)
    return started


async def serve(layout: str, servers: int, port: int, busy_tasks: int, seconds: float) -> None:
    busy = asyncio.get_running_loop()
    # Kept referenced: a grpc.aio.Server that is collected stops serving.
    if layout == "thread":
        front = LoopThread("bench-front")
        front.start()
        running = await front.run(_start(servers, port, Handoff(busy)), 10)
    else:
        running = await _start(servers, port, None)
    turns = 0

    async def hog() -> None:
        while True:
            _spin(SPIN)
            await asyncio.sleep(0)

    async def count_turns() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    tasks = [asyncio.create_task(hog()) for _ in range(busy_tasks)]
    tasks.append(asyncio.create_task(count_turns()))
    print("ready", flush=True)
    await asyncio.sleep(2)  # the client's connections come up
    calls0, turns0, t0 = _Health.answered, turns, time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - t0
    print(f"{(_Health.answered - calls0) / elapsed:.1f} {(turns - turns0) / elapsed:.1f}", flush=True)
    assert running
    os._exit(0)  # the servers and their thread go with the process


async def call(port: int) -> None:
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(100)
    ]

    async def caller(channel: grpc.aio.Channel) -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
            except grpc.RpcError:
                await asyncio.sleep(0.1)

    await asyncio.gather(*(caller(ch) for ch in channels for _ in range(4)))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--busy-tasks", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--serve", nargs=3, metavar=("LAYOUT", "SERVERS", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--call", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        layout, servers, port = args.serve
        asyncio.run(serve(layout, int(servers), int(port), args.busy_tasks, args.seconds))
        return
    if args.call:
        asyncio.run(call(args.call))
        return
    print(machine())
    print(
        f"busy loop: {args.busy_tasks} tasks x {SPIN * 1000:.1f} ms a turn; 400 calls in flight on 100 connections"
    )
    here = [sys.executable, os.path.abspath(__file__)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    baseline = 0.0
    for layout, servers in LAYOUTS:
        port = _free_port()
        server = subprocess.Popen(
            ["taskset", "-c", "0", *here, "--serve", layout, str(servers), str(port),
             "--busy-tasks", str(args.busy_tasks), "--seconds", str(args.seconds)],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert server.stdout is not None
        server.stdout.readline()  # ready
        client = subprocess.Popen(["taskset", "-c", "1", *here, "--call", str(port)], env=env)
        try:
            calls, turns = (float(x) for x in server.stdout.readline().split())
        finally:
            client.kill()
            client.wait()
            server.wait()
        baseline = baseline or calls
        print(
            f"  {layout:6} x{servers}   {calls:8.1f} calls/s   busy loop {turns:6.1f} turns/s"
            f"   {calls / baseline:6.1f}x loop x1"
        )


if __name__ == "__main__":
    main()
