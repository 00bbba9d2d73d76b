"""bench/hollow.py's API probing: Get and List calls timed, in the bench's process or in one of
their own (the hollow agents share the bench's event loop: a prober there times the loop's lag as
much as the coordinator's answers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import signal
import sys
import time

from atoll import errors, kinds
from atoll.v1 import meta_pb2
from coordinator.client import config as clientconfig
from coordinator.client.api import Client

POD = kinds.by_name("Pod")
NODE = kinds.by_name("Node")
HOLLOW = pathlib.Path(__file__).with_name("hollow.py")


def node_ready(node: object) -> bool:
    return any(
        c.type == "Ready" and c.status == meta_pb2.CONDITION_STATUS_TRUE
        for c in node.status.conditions  # type: ignore[attr-defined]
    )


class Prober:
    """Get and List calls in a loop, timed."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.get: list[float] = []
        self.list: list[float] = []
        self.not_ready = 0  # nodes not Ready in the last list

    def reset(self) -> None:
        self.get, self.list = [], []

    async def run(self, stop: asyncio.Event, pod_name: str | None = None) -> None:
        while not stop.is_set():
            t = time.perf_counter()
            with contextlib.suppress(errors.AtollError):
                if pod_name:
                    await self.client.get(POD, "default", pod_name)
                else:
                    await self.client.get(NODE, "", "hollow-00000")
            self.get.append(time.perf_counter() - t)
            t = time.perf_counter()
            with contextlib.suppress(errors.AtollError):
                nodes, _ = await self.client.list(NODE)
                self.not_ready = sum(1 for n in nodes if not node_ready(n))
            self.list.append(time.perf_counter() - t)
            await asyncio.sleep(0.1)


async def start_prober(admin_conf: pathlib.Path, seconds: float) -> asyncio.subprocess.Process:
    """A prober in a process of its own, for `seconds` or until it is sent SIGTERM.

    The hollow agents share this process's event loop; a prober on it would
    time the loop's lag as much as the coordinator's answers.
    """
    return await asyncio.create_subprocess_exec(
        sys.executable, str(HOLLOW), "--probe", str(admin_conf), "--measure", str(seconds),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def prober_timings(proc: asyncio.subprocess.Process) -> tuple[list[float], list[float], int]:
    out, _ = await proc.communicate()
    timings = json.loads(out)
    return timings["get"], timings["list"], timings["not_ready"]


async def probe_elsewhere(admin_conf: pathlib.Path, seconds: float) -> tuple[list[float], list[float], int]:
    """Get and List timings from a process of its own, for `seconds`."""
    return await prober_timings(await start_prober(admin_conf, seconds))


async def probe_main(admin_conf: pathlib.Path, seconds: float) -> None:
    admin = clientconfig.parse(admin_conf.read_text(), str(admin_conf))
    async with Client(config=admin) as client:
        prober = Prober(client)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.call_later(seconds, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await prober.run(stop)
    print(json.dumps({"get": prober.get, "list": prober.list, "not_ready": prober.not_ready}))
