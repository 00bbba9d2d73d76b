"""Soak: kill -9 the agent many times while pods run; nothing may restart, leak or double.

    .venv/bin/python bench/soak.py [--pods 20] [--kills 100]

The same check as tests/integration/test_faults.py (20 kills there), longer:
one test-bed host with its own dockerd runs the coordinator and an agent as
real processes; the agent is killed with SIGKILL and started again `--kills`
times. Printed: containers created or removed, containers restarted, the
pods' restart counts, orphans and duplicates (all must be 0), and the time
per kill-restart cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import ROOT, machine  # type: ignore[import-not-found]  # noqa: F401 - puts the repo on sys.path

from coordinator.client.api import Client
from tests.integration.daemons import AgentProcess, CoordinatorProcess, eventually, node_ready
from tests.integration.test_faults import agent_kill_storm
from tests.integration.testbed import TestBed


async def run(args: argparse.Namespace, bed: TestBed) -> None:
    host = bed.hosts[0]
    coordinator = CoordinatorProcess(host, host.dir / "coordinator").start()
    agent = AgentProcess(host, "127.0.0.1:6443", host.dir / "agent", "node-1").start()
    async with Client(coordinator.server) as client:
        await eventually(lambda: node_ready(client, "node-1"), timeout=60, what="node Ready")
        started = time.perf_counter()
        result = await agent_kill_storm(host, client, agent, pods=args.pods, kills=args.kills)
        elapsed = time.perf_counter() - started
    print(f"soak: {args.pods} pods, {args.kills} kill -9 + restart cycles of the agent in {elapsed:.0f}s")
    for key, value in result.items():
        print(f"  {key:24} {value}")
    ok = all(v == 0 for k, v in result.items() if k != "containers") and result["containers"] == 2 * args.pods
    print("  verdict                  " + ("OK" if ok else "FAILED"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--kills", type=int, default=100)
    args = parser.parse_args()
    print(machine())
    with TestBed(1) as bed:
        asyncio.run(run(args, bed))


if __name__ == "__main__":
    main()
