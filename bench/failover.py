"""Failover of several coordinators on etcd, and what etcd costs against SQLite, in one run.

    .venv/bin/python bench/failover.py [--kills 20] [--writes 500]

A real 3-member etcd on loopback (Debian's etcd-server) and three real
`coordinator serve` processes on it (tests/integration/coordinators.py),
with a fake-runtime agent in this process (tests/functional/harness.py).

  1. Leader failover, --kills times: kill -9 the leader, create a pod through
     a survivor, and time until that pod is bound to a node (a new leader
     scheduling again). The killed coordinator is started again before the
     next round. Printed: p50/p99/max, and the leader's lease TTL.
  2. Agent failover, --kills times: an agent given all three coordinators;
     kill -9 the one it is on, and time until its heartbeat succeeds on
     another (the killed one is started again before the next round).
  3. Writes: --writes sequential pod creates through one coordinator on etcd
     and through one on SQLite (synchronous=FULL, on disk), p50/p99 each and
     the ratio etcd/SQLite.

Everything runs on this machine's two cores: etcd, three coordinators and
the agent share them.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys
import tempfile
import time

from common import ROOT, summary  # type: ignore[import-not-found]

sys.path.insert(0, str(ROOT))

from atoll import errors, kinds
from atoll.v1 import pod_pb2
from coordinator.client.api import Client
from tests.functional.harness import FakeNode
from tests.integration.coordinators import CoordinatorProcesses, free_port
from tests.integration.etcd import EtcdCluster

POD = kinds.by_name("Pod")
LEADER_TTL = 2


def line(what: str, values: list[float], unit: str) -> str:
    s = summary(values)
    return f"{what}: p50 {s['p50']:.2f}{unit}  p99 {s['p99']:.2f}{unit}  max {s['max']:.2f}{unit}  (n={len(values)})"


def pod(name: str, node: str = "") -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.spec.node_name = node
    p.spec.containers.add(name="main", image="busybox", command=["sleep", "1d"])
    return p


async def wait(check, timeout: float = 60.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await check()
            if value is not None:
                return value
        except errors.AtollError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(interval)


async def leader_failover(coordinators: CoordinatorProcesses, tmp: pathlib.Path, kills: int) -> list[float]:
    async def leader(via: int) -> int | None:
        return await coordinators.leader(via)

    # The agent talks to coordinator 0, which is never killed: only the control plane fails over.
    node = await FakeNode(tmp, "node-0", coordinators.ports[0], images=("busybox",), insecure=True).start()
    took: list[float] = []
    try:
        for k in range(kills):
            current = await wait(lambda: leader(0))
            if current == 0:
                # Move the lead off coordinator 0 (kill and restart it), so the agent's link stays up.
                coordinators.kill(0)
                await wait(lambda: _other_leader(coordinators, 1, 0))
                coordinators.start(0)
                await wait(lambda: _answers(coordinators, 0))
                current = await wait(lambda: leader(0))
            coordinators.kill(current)
            t0 = time.monotonic()
            name = f"after-kill-{k}"
            async with coordinators.client(0) as client:
                await client.create(pod(name))

                async def bound(client: Client = client, name: str = name) -> str | None:
                    p = await client.get(POD, "default", name)
                    return p.spec.node_name or None  # type: ignore[attr-defined]

                await wait(bound)
            took.append(time.monotonic() - t0)
            print(f"  kill {k + 1}/{kills}: leader {current} killed, next pod bound after {took[-1]:.2f}s")
            coordinators.start(current)
            await wait(lambda c=current: _answers(coordinators, c))
    finally:
        await node.stop()
    return took


async def agent_failover(coordinators: CoordinatorProcesses, tmp: pathlib.Path, kills: int) -> list[float]:
    """kill -9 of the coordinator an agent (given all three) is on -> its link up on another one."""
    everyone = ",".join(coordinators.address(i) for i in range(len(coordinators.ports)))
    node = await FakeNode(
        tmp, "node-f", coordinators.ports[0], images=("busybox",), insecure=True, coordinator=everyone
    ).start()
    took: list[float] = []
    try:
        for k in range(kills):
            agent = node.agent
            assert agent.connection is not None and agent.link is not None
            on = agent.connection.target
            victim = [coordinators.address(i) for i in range(len(coordinators.ports))].index(on)
            coordinators.kill(victim)
            t0 = time.monotonic()

            async def moved(agent=agent, on=on, t0=t0) -> bool | None:  # type: ignore[no-untyped-def]
                conn, link = agent.connection, agent.link
                return True if conn.target != on and link.last_heartbeat > t0 else None

            await wait(moved, timeout=60, interval=0.005)
            took.append(time.monotonic() - t0)
            print(
                f"  kill {k + 1}/{kills}: coordinator {victim} killed, agent heartbeating on another after "
                f"{took[-1]:.3f}s"
            )
            coordinators.start(victim)
            await wait(lambda v=victim: _answers(coordinators, v))
    finally:
        await node.stop()
    return took


async def _other_leader(coordinators: CoordinatorProcesses, via: int, old: int) -> int | None:
    leader = await coordinators.leader(via)
    return leader if leader is not None and leader != old else None


async def _answers(coordinators: CoordinatorProcesses, i: int) -> bool | None:
    async with coordinators.client(i) as client:
        await client.coordinators()
    return True


async def write_latencies(server: str, writes: int, label: str) -> list[float]:
    took = []
    async with Client(server) as client:
        for i in range(writes):
            t0 = time.perf_counter()
            await client.create(pod(f"{label}-{i:05d}", node="nowhere"))
            took.append(time.perf_counter() - t0)
    return took


async def sqlite_writes(tmp: pathlib.Path, writes: int) -> list[float]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coordinator.cli.main", "serve",
        "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp / "sqlite"),
        "--insecure", "--token-listen", "",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        server = f"127.0.0.1:{port}"

        async def up() -> bool | None:
            async with Client(server) as client:
                await client.coordinators()
            return True

        await wait(up)
        return await write_latencies(server, writes, "sqlite")
    finally:
        proc.terminate()
        await proc.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--writes", type=int, default=500)
    args = parser.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="atoll-failover-"))
    etcd = EtcdCluster().start()
    coordinators = CoordinatorProcesses(etcd, tmp / "ha", extra=("--leader-ttl", str(LEADER_TTL)))
    try:
        coordinators.start()
        for i in range(3):
            await wait(lambda i=i: _answers(coordinators, i))
        print(f"leader failover: kill -9 of the leader, {args.kills} times (lease TTL {LEADER_TTL}s)")
        failover = await leader_failover(coordinators, tmp, args.kills)
        print("  " + line("kill -9 of the leader -> the next pod bound", failover, "s"))
        print(f"agent failover: kill -9 of the coordinator an agent is on, {args.kills} times")
        agent = await agent_failover(coordinators, tmp, args.kills)
        print("  " + line("kill -9 of the agent's coordinator -> a heartbeat through another", agent, "s"))
        print(f"writes: {args.writes} sequential pod creates, one client")
        on_etcd = await write_latencies(coordinators.address(0), args.writes, "etcd")
        on_sqlite = await sqlite_writes(tmp, args.writes)
        print("  " + line("etcd (3 members) create", [t * 1000 for t in on_etcd], "ms"))
        print("  " + line("SQLite (FULL) create", [t * 1000 for t in on_sqlite], "ms"))
        ratio = sorted(on_etcd)[len(on_etcd) // 2] / sorted(on_sqlite)[len(on_sqlite) // 2]
        print(f"  p50 ratio etcd/SQLite: {ratio:.2f}")
    finally:
        coordinators.stop()
        etcd.stop()


if __name__ == "__main__":
    asyncio.run(main())
