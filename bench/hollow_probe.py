"""bench/hollow.py's API probing: Get and List calls timed, in the bench's process or in one of
their own (the hollow agents share the bench's event loop: a prober there times the loop's lag as
much as the coordinator's answers).

The prober's own process can also run a sentinel: one more hollow agent, on a loop that a
thousand others do not crowd, cordoned so that no pod lands on it. Its heartbeats time the
coordinator's side of the link alone: how long each took, the longest gap between two, and
whether its node was ever seen not Ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import pathlib
import re
import signal
import sys
import time
import urllib.request
from typing import Any, Protocol

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


SENTINEL = "sentinel-60000"  # hollow.py's HollowFleet names it: prefix and index


class Fleet(Protocol):
    """What the sentinel needs of bench/hollow.py's HollowFleet (which imports this module)."""

    agents: list[Any]

    async def add(self, count: int) -> None: ...

    async def stop(self) -> None: ...


class Prober:
    """Get and List calls in a loop, timed."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.get: list[float] = []
        self.list: list[float] = []
        self.not_ready = 0  # nodes not Ready in the last list
        self.sentinel_not_ready = 0  # lists that showed the sentinel's node not Ready

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
            nodes: list[Any] | None = None
            with contextlib.suppress(errors.AtollError):
                nodes, _ = await self.client.list(NODE)
            # Only the call is timed: counting NotReady nodes is the prober's work, not the API's.
            self.list.append(time.perf_counter() - t)
            if nodes is not None:
                self.not_ready = sum(1 for n in nodes if not node_ready(n))
                self.sentinel_not_ready += sum(
                    1
                    for n in nodes
                    if n.metadata.name == SENTINEL and not node_ready(n)  # type: ignore[attr-defined]
                )
            await asyncio.sleep(0.1)


async def start_prober(
    admin_conf: pathlib.Path, seconds: float, sentinel: dict[str, Any] | None = None
) -> asyncio.subprocess.Process:
    """A prober in a process of its own, for `seconds` or until it is sent SIGTERM; with
    `sentinel` (the fleet's join settings), the sentinel agent beside it, registered and
    cordoned before this returns.

    The hollow agents share this process's event loop; a prober on it would
    time the loop's lag as much as the coordinator's answers.
    """
    extra = ["--probe-sentinel", json.dumps(sentinel)] if sentinel else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(HOLLOW), "--probe", str(admin_conf), "--measure", str(seconds), *extra,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    if sentinel:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if line.strip() != b"sentinel ready":
            raise RuntimeError(f"the prober's sentinel did not start: {line!r}")
    return proc


async def prober_results(
    proc: asyncio.subprocess.Process,
) -> tuple[list[float], list[float], int, dict[str, Any]]:
    """Get and List timings, nodes not Ready in the last list, and the sentinel's figures."""
    out, _ = await proc.communicate()
    timings = json.loads(out.strip().splitlines()[-1])
    return timings["get"], timings["list"], timings["not_ready"], timings.get("sentinel", {})


def sentinel_figures(times: list[tuple[float, float]], not_ready_lists: int) -> dict[str, Any]:
    rtts = sorted(answered - sent for sent, answered in times)
    sends = [sent for sent, _ in times]
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    return {
        "heartbeats": len(rtts),
        "rtt": rtts,
        "longest_gap": max(gaps, default=0.0),
        "not_ready_lists": not_ready_lists,
    }


async def cordon(client: Client, name: str, timeout: float = 60.0) -> None:
    """Mark node `name` unschedulable once it has registered (within `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            node = await client.get(NODE, "", name)
            break
        except errors.NotFound:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    node.spec.unschedulable = True  # type: ignore[attr-defined]
    await client.update(node)


async def probe_elsewhere(admin_conf: pathlib.Path, seconds: float) -> tuple[list[float], list[float], int]:
    """Get and List timings from a process of its own, for `seconds`."""
    get, lst, not_ready, _ = await prober_results(await start_prober(admin_conf, seconds))
    return get, lst, not_ready


async def probe_main(admin_conf: pathlib.Path, seconds: float, sentinel: Fleet | None = None) -> None:
    admin = clientconfig.parse(admin_conf.read_text(), str(admin_conf))
    async with Client(config=admin) as client:
        times: list[tuple[float, float]] = []
        if sentinel is not None:
            await sentinel.add(1)
            link = sentinel.agents[0].link
            assert link is not None
            link.heartbeat_times = times
            await cordon(client, SENTINEL)
            print("sentinel ready", flush=True)
        prober = Prober(client)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.call_later(seconds, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await prober.run(stop)
    result: dict[str, Any] = {"get": prober.get, "list": prober.list, "not_ready": prober.not_ready}
    if sentinel is not None:
        result["sentinel"] = sentinel_figures(list(times), prober.sentinel_not_ready)
        await sentinel.stop()
    print(json.dumps(result), flush=True)


def scrape(port: int) -> tuple[dict[str, int], dict[str, tuple[float, float, float]]]:
    """From a coordinator serving --metrics-listen on 127.0.0.1:`port`, one scrape: its API calls so
    far by method (atoll_coordinator_api_requests_total, all codes), and its garbage collections
    so far by generation, (collections, seconds, longest pause) from its atoll_gc_* metrics.
    Blocking; run it in a thread."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    calls: dict[str, int] = {}
    for m in re.finditer(r"^atoll_coordinator_api_requests_total\{([^}]*)\} ([0-9.e+]+)$", text, re.M):
        method = re.search(r'method="([^"]*)"', m.group(1))
        if method:
            name = method.group(1).rsplit("/", 1)[-1]
            calls[name] = calls.get(name, 0) + int(float(m.group(2)))
    figures: dict[str, list[float]] = {}
    names = ("atoll_gc_collections_total", "atoll_gc_pause_seconds_total", "atoll_gc_longest_pause_seconds")
    for m in re.finditer(r'^(atoll_gc_\w+)\{generation="(\d)"\} ([0-9.e+-]+)$', text, re.M):
        if m.group(1) in names:
            figures.setdefault(m.group(2), [0.0, 0.0, 0.0])[names.index(m.group(1))] = float(m.group(3))
    return calls, {g: (v[0], v[1], v[2]) for g, v in sorted(figures.items())}
