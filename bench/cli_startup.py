"""How long the `coordinator` CLI takes to start, against `python -c pass` measured in the same run.

Issue 15 asks for `coordinator get` under 0.3 s. Each command runs as a fresh process, as a user
types it, --runs times (interleaved with the baseline, so a busy machine slows both alike), and
the medians are printed with their ratio to the baseline's:

    python -c pass                       the interpreter alone
    coordinator version --client         the entry point and its parser
    coordinator get --help               `get`'s parser with every kind listed
    coordinator get pods                 a real call (mutual TLS) to an in-process coordinator
    coordinator get pods,svc -A -o wide  two lists and the NAMESPACE column

    .venv/bin/python bench/cli_startup.py [--runs 15] [--pods 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import statistics
import sys
import tempfile
import time

from common import ROOT  # type: ignore[import-not-found]

from atoll.v1 import meta_pb2, pod_pb2
from tests.functional.harness import Cluster

COORDINATOR = str(pathlib.Path(sys.executable).with_name("coordinator"))


# As a user's shell runs it: byte code cached in __pycache__ (the first, warm-up run writes it),
# even where the caller's environment says otherwise (PYTHONDONTWRITEBYTECODE).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


async def _seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=ENV
    )
    _, err = await proc.communicate()
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode().strip()}")
    return elapsed


async def _pods(cluster: Cluster, count: int) -> None:
    assert cluster.client is not None
    for i in range(count):
        pod = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(name=f"bench-{i}", namespace="default"))
        pod.spec.containers.add(name="app", image="busybox")
        await cluster.client.create(pod)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = await Cluster(pathlib.Path(tmp)).start()
        try:
            await _pods(cluster, args.pods)
            client = [COORDINATOR, *cluster.cli_args()]
            cases = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "coordinator version --client": [COORDINATOR, "version", "--client"],
                "coordinator get --help": [COORDINATOR, "get", "--help"],
                f"coordinator get pods ({args.pods} pods)": [*client, "get", "pods"],
                "coordinator get pods,svc -A -o wide": [*client, "get", "pods,svc", "-A", "-o", "wide"],
            }
            times: dict[str, list[float]] = {name: [] for name in cases}
            for argv in cases.values():  # warm the page cache and .pyc files first
                await _seconds(argv)
            for _ in range(args.runs):
                for name, argv in cases.items():
                    times[name].append(await _seconds(argv))
        finally:
            await cluster.stop()
    base = statistics.median(times["python -c pass"])
    print(f"{args.runs} runs each, median wall time (min); ratio to the interpreter alone")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<40} {median * 1000:7.0f} ms ({min(values) * 1000:5.0f})   x{median / base:5.1f}")
    worst = max(statistics.median(v) for n, v in times.items() if n.startswith("coordinator get"))
    print(f"slowest `coordinator get` median: {worst:.3f} s (target: under 0.3 s)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--pods", type=int, default=50, help="pods stored before listing them")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
