"""bench/hollow.py --fleet-procs K: the load phase's hollow agents spread over K processes.

In one process, 1,000 hollow agents share one event loop. During a 10,000-pod
burst that loop's turns reached 0.84 s with 4,000 tasks ready (timed with a
turn hook), while the coordinator's turns stayed under 0.2 s: a heartbeat late
at the coordinator may have been late leaving the bench. Worker processes
each run a slice of the fleet (agents hollow-<first>.. on), so a reader can
tell the fleet's limits from the coordinator's. They take commands as lines
on stdin ("stats", "stop") and answer JSON lines on stdout.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys
from typing import TYPE_CHECKING, Any

import psutil

from atoll import gcpolicy
from atoll.loopstalls import LoopStalls

if TYPE_CHECKING:
    from hollow import HollowFleet  # type: ignore[import-not-found]

HOLLOW = pathlib.Path(__file__).with_name("hollow.py")


def fleet_stats(fleet: HollowFleet) -> dict[str, Any]:
    return {
        "pushed": fleet.pushed(),
        "running": fleet.reported_running(),
        "failures": fleet.heartbeat_failures(),
        "kinds": fleet.heartbeat_failure_kinds(),
        "slowest": [a.link.heartbeat_slowest for a in fleet.agents if a.link is not None],
        "intervals": [a.link.heartbeat_interval for a in fleet.agents if a.link is not None],
        "overslept": max(
            (a.link.heartbeat_overslept for a in fleet.agents if a.link is not None), default=0.0
        ),
    }


class FleetWorkers:
    """The worker processes of one bench run, seen from the main process."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        self._lock = asyncio.Lock()

    async def start(self, settings: dict[str, Any], slices: list[tuple[int, int]]) -> None:
        """One worker per (first index, count); returns once every one has its agents started."""
        for first, count in slices:
            spec = json.dumps({**settings, "first": first, "count": count})
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(HOLLOW), "--fleet-worker", spec,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20,
            )  # fmt: skip
            self.procs.append(proc)
        for proc in self.procs[-len(slices) :]:
            await self._answer(proc)  # {"started": n}

    @staticmethod
    async def _answer(proc: asyncio.subprocess.Process) -> dict[str, Any]:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"hollow fleet worker {proc.pid} exited ({await proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def ask(self, command: str) -> list[dict[str, Any]]:
        async with self._lock:
            for proc in self.procs:
                assert proc.stdin is not None
                proc.stdin.write(f"{command}\n".encode())
            return [await self._answer(p) for p in self.procs]

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.procs:
            try:
                t = psutil.Process(proc.pid).cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    async def stop(self) -> None:
        if not self.procs:
            return
        try:
            await asyncio.wait_for(self.ask("stop"), 120)
        except (TimeoutError, RuntimeError, OSError) as exc:
            print(f"stopping the fleet workers: {exc!r}", file=sys.stderr)
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def worker_main(spec: dict[str, Any], fleet_class: type[HollowFleet]) -> None:
    """A worker: start `count` hollow agents from index `first`, then answer commands."""
    fleet = fleet_class(spec["coordinators"], pathlib.Path(spec["base"]), spec["token_ports"])
    fleet.join = spec["join"]
    fleet.first_index = spec["first"]
    stop = asyncio.Event()
    stalls = LoopStalls()
    stalls_task = asyncio.create_task(stalls.run(stop))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(answer: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()

    gcpolicy.GCPolicy().apply()
    await fleet.add(spec["count"])
    gcpolicy.freeze_start_up()  # as bench/hollow.py's own fleet: see there
    say({"started": len(fleet.agents)})
    try:
        while line := (await reader.readline()).decode().strip():
            if line == "stats":
                say({**fleet_stats(fleet), "stalled": stalls.within(1e9), "longest": stalls.longest()})
            elif line == "stop":
                break
    finally:
        await fleet.stop()
        stop.set()
        await stalls_task
        say({"stopped": True})
