"""The agent's footprint: RSS and CPU at rest with 20 and with 100 pods, beside kubelet's.

    .venv/bin/python bench/agent_footprint.py [--pods 20,100] [--rest 30] [--maps]

Brings up a one-host test bed (private dockerd in its own namespace), runs the
coordinator and a real agent there as processes, creates the pods (one busybox
container each, plus the infra container), waits until all are Running, lets
the agent settle, then samples the agent process for --rest seconds: RSS (and
USS, what it alone holds) and CPU in % of one core. The targets (issue 14):
idle RSS <= 50 MB and <= 1% of a core with 20 pods, <= 80 MB with 100 pods;
kubelet's e2e resource-usage ceilings are 70-200 MB. dockerd and the
coordinator are printed for scale, not counted. --maps prints where the
agent's resident memory sits, mapping by mapping (the heap, anonymous memory,
each shared library).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import re
import subprocess
import sys
import time

import psutil
from common import ROOT  # type: ignore[import-not-found]  # noqa: F401 - puts the repo on sys.path

from atoll import kinds
from atoll.v1 import pod_pb2
from coordinator.client.api import Client
from tests.integration.daemons import AgentProcess, CoordinatorProcess, eventually, node_ready
from tests.integration.testbed import TestBed

POD = kinds.by_name("Pod")
# The test harness speeds both daemons up (a relist every 0.2 s, a heartbeat every second); a
# footprint is measured at the defaults a deployed agent runs with.
DEFAULT_INTERVALS_COORDINATOR = ("--heartbeat-interval", "3", "--node-grace-period", "8")
DEFAULT_INTERVALS_AGENT = ("--relist-interval", "1")
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def pod(i: int) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = f"idle-{i:03d}"
    p.metadata.labels["bench"] = "footprint"
    p.spec.termination_grace_period_seconds = 1
    p.spec.containers.add(name="main", image="atoll/busybox", command=COMMAND)
    return p


async def running(client: Client) -> int:
    pods, _ = await client.list(POD, "default", "bench=footprint")
    return sum(1 for p in pods if p.status.phase == pod_pb2.POD_PHASE_RUNNING)  # type: ignore[attr-defined]


async def grow_to(server: str, count: int, have: int) -> None:
    async with Client(server) as client:
        await eventually(lambda: node_ready(client, "node-1"), timeout=60, what="node Ready")
        await asyncio.gather(*(client.create(pod(i)) for i in range(have, count)))

        async def all_running() -> bool:
            return await running(client) >= count

        await eventually(all_running, timeout=600, what=f"{count} pods Running")


def sample(
    proc: psutil.Process, seconds: float, profile: pathlib.Path | None = None
) -> tuple[float, float, float]:
    """(RSS MiB, USS MiB, CPU % of one core) of `proc` over `seconds`, recorded by py-spy into `profile`."""
    spy = None
    if profile is not None:
        exe = pathlib.Path(sys.executable).with_name("py-spy")
        spy = subprocess.Popen(
            [str(exe) if exe.exists() else "py-spy", "record", "-o", str(profile), "-f", "speedscope",
             "-p", str(proc.pid), "-r", "100", "-d", str(int(seconds))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
    t0, c0 = time.monotonic(), proc.cpu_times()
    time.sleep(seconds)  # a measuring window, not a wait for a condition
    t1, c1 = time.monotonic(), proc.cpu_times()
    if spy is not None:
        spy.wait(timeout=60)
    info = proc.memory_full_info()
    cpu = ((c1.user + c1.system) - (c0.user + c0.system)) / (t1 - t0) * 100
    return info.rss / 2**20, info.uss / 2**20, cpu


def breakdown(proc: psutil.Process) -> str:
    """Where the agent's resident memory is: anonymous (heap, Python objects) against mapped files."""
    fields = {}
    for line in pathlib.Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("RssAnon", "RssFile", "RssShmem", "Threads"):
            fields[name] = int(value.split()[0])
    # cryptography's Rust library is mapped once the package is imported: the agent keeps it out.
    crypto = "_rust.abi3.so" in pathlib.Path(f"/proc/{proc.pid}/maps").read_text()
    return (
        f"anon {fields['RssAnon'] / 1024:.1f}MB, files {fields['RssFile'] / 1024:.1f}MB, "
        f"{fields['Threads']} threads, cryptography {'loaded' if crypto else 'not loaded'}"
    )


def mappings(proc: psutil.Process, top: int = 12) -> str:
    """The largest resident mappings of `proc`, by file (anonymous ones pooled by kind)."""
    rss: dict[str, int] = {}
    name = ""
    for line in pathlib.Path(f"/proc/{proc.pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", head[0]):
            name = head[5] if len(head) > 5 else "[anon]"
            name = name.rsplit("/", 1)[-1]
        elif head and head[0] == "Rss:":
            rss[name] = rss.get(name, 0) + int(head[1])
    lines = [
        f"      {kib / 1024:6.1f}MB  {name}" for name, kib in sorted(rss.items(), key=lambda kv: -kv[1])[:top]
    ]
    return "\n".join(lines)


def find(root_pid: int, needle: str) -> psutil.Process:
    """The process (the spawned one or a descendant) whose command line has `needle`."""
    root = psutil.Process(root_pid)
    for p in [root, *root.children(recursive=True)]:
        if needle in " ".join(p.cmdline()):
            return p
    return root


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", default="20,100", help="pod counts to measure at, ascending")
    parser.add_argument("--rest", type=float, default=30.0, help="seconds sampled at rest per count")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds after the last pod runs")
    parser.add_argument(
        "--profile", type=pathlib.Path, help="record the agent with py-spy at rest into DIR/agent-PODS.json"
    )
    parser.add_argument("--maps", action="store_true", help="print the agent's largest resident mappings")
    args = parser.parse_args()
    counts = [int(c) for c in args.pods.split(",")]

    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB")
    with TestBed(1) as bed:
        host = bed.hosts[0]
        coordinator = CoordinatorProcess(
            host, host.dir / "coordinator", DEFAULT_INTERVALS_COORDINATOR
        ).start()
        agent = AgentProcess(
            host, "127.0.0.1:6443", host.dir / "agent", "node-1", DEFAULT_INTERVALS_AGENT
        ).start()
        assert agent.process is not None and coordinator.process is not None
        agent_proc = find(agent.process.pid, "agent")
        coord_proc = find(coordinator.process.pid, "coordinator")
        asyncio.run(grow_to(coordinator.server, 0, 0))
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)

        def profile(count: int) -> pathlib.Path | None:
            return args.profile / f"agent-{count}.json" if args.profile else None

        rss, uss, cpu = sample(agent_proc, args.rest, profile(0))
        print(f"{'pods':>5} {'agent RSS':>10} {'agent USS':>10} {'agent CPU':>10} {'coordinator RSS':>16}")
        print(
            f"{0:5d} {rss:8.1f}MB {uss:8.1f}MB {cpu:9.2f}% {coord_proc.memory_info().rss / 2**20:14.1f}MB"
            f"   agent: {breakdown(agent_proc)}"
        )
        have = 0
        for count in counts:
            asyncio.run(grow_to(coordinator.server, count, have))
            have = count
            time.sleep(args.settle)  # let the start-up work (events, status reports) drain
            rss, uss, cpu = sample(agent_proc, args.rest, profile(count))
            print(
                f"{count:5d} {rss:8.1f}MB {uss:8.1f}MB {cpu:9.2f}% {coord_proc.memory_info().rss / 2**20:14.1f}MB"
                f"   agent: {breakdown(agent_proc)}",
                flush=True,
            )
            if args.maps:
                print(mappings(agent_proc), flush=True)
    print("targets: <= 50 MB and <= 1% of a core with 20 pods, <= 80 MB with 100; kubelet: 70-200 MB")


if __name__ == "__main__":
    main()
