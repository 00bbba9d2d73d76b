"""bench/hollow.py's services phase: --services N with --endpoints M each pushed to every hollow node,
then single Endpoints changes timed until every node has them, with the coordinator's CPU for each."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import TYPE_CHECKING

from common import summary  # type: ignore[import-not-found]

from agent.link import CoordinatorLink
from atoll import errors, kinds
from atoll.v1 import meta_pb2, workloads_pb2
from coordinator.client.api import Client
from coordinator.client.config import ClientConfig

if TYPE_CHECKING:
    from hollow import Coordinators, HollowFleet  # type: ignore[import-not-found]

ENDPOINTS = kinds.by_name("Endpoints")


def service(i: int) -> workloads_pb2.Service:
    s = workloads_pb2.Service()
    s.metadata.name = f"svc-{i:05d}"
    s.spec.ports.add(name="http", port=80, target_port=8080, protocol=meta_pb2.PROTOCOL_TCP)
    return s  # no selector: its endpoints are written by hand, as the bench does


def endpoints(i: int, count: int, salt: int = 0) -> workloads_pb2.Endpoints:
    e = workloads_pb2.Endpoints()
    e.metadata.name = f"svc-{i:05d}"
    subset = e.subsets.add()
    for k in range(count):
        subset.addresses.add(
            ip=f"10.{100 + (k + salt) // 65536 % 100}.{(k + salt) // 256 % 256}.{(k + salt) % 256}"
        )
    subset.ports.add(name="http", port=8080, protocol=meta_pb2.PROTOCOL_TCP)
    return e


async def services_phase(
    args: argparse.Namespace, server: str, admin: ClientConfig | None, fleet: HollowFleet, coord: Coordinators
) -> None:
    """--services N with --endpoints M each, then single Endpoints changes: how long until every
    node has each change, and what each costs the coordinator."""
    mode = "deltas" if CoordinatorLink.service_deltas else "full states"
    async with Client(server, config=admin) as client:
        sem = asyncio.Semaphore(32)
        last = 0

        async def put(obj: workloads_pb2.Service | workloads_pb2.Endpoints) -> None:
            nonlocal last
            async with sem:
                for _ in range(100):
                    try:
                        made = await client.create(obj)
                        break
                    except errors.ResourceExhausted:  # the API's per-user rate limit: wait a little
                        await asyncio.sleep(0.2)
                last = max(last, made.metadata.resource_version)  # type: ignore[attr-defined]

        t0 = time.perf_counter()
        cpu0 = coord.cpu_times()
        await asyncio.gather(*(put(service(i)) for i in range(args.services)))
        await asyncio.gather(*(put(endpoints(i, args.endpoints)) for i in range(args.services)))
        created = time.perf_counter() - t0
        # The nodes join after the services exist: the first push is one full state each.
        if len(fleet.agents) < args.nodes:
            await fleet.add(args.nodes - len(fleet.agents))
        await until_every_node_has(fleet, last, args.timeout)
        cpu1 = coord.cpu_times()
        print()
        print(
            f"services: {args.services} services x {args.endpoints} endpoints, {len(fleet.agents)} nodes, {mode}"
        )
        print(
            f"  created in {created:.1f}s; nodes joined and all had them after {time.perf_counter() - t0:.1f}s, "
            f"coordinator CPU {(cpu1.user + cpu1.system) - (cpu0.user + cpu0.system):.1f}s"
        )
        # The coordinator's CPU with nothing changing (heartbeats), to subtract from each change's.
        await asyncio.sleep(2)
        idle0, idle_start = coord.cpu_times(), time.monotonic()
        await asyncio.sleep(5)
        idle1 = coord.cpu_times()
        idle_rate = ((idle1.user + idle1.system) - (idle0.user + idle0.system)) / (
            time.monotonic() - idle_start
        )
        print(f"  coordinator CPU at rest (heartbeats): {100 * idle_rate:.0f}% of one core")
        latencies: list[float] = []
        cpu_per_change: list[float] = []
        beyond_rest: list[float] = []
        for change in range(args.changes):
            i = change * 7919 % args.services
            current = await client.get(ENDPOINTS, "default", f"svc-{i:05d}")
            changed = endpoints(i, args.endpoints, salt=change + 1)
            changed.metadata.resource_version = current.metadata.resource_version  # type: ignore[attr-defined]
            cpu0 = coord.cpu_times()
            start = time.monotonic()
            updated = await client.update(changed)
            revision = updated.metadata.resource_version  # type: ignore[attr-defined]
            await until_every_node_has(fleet, revision, args.timeout)
            cpu1 = coord.cpu_times()
            latencies.extend(a.link.services_received[1] - start for a in fleet.agents if a.link is not None)
            took = time.monotonic() - start
            raw = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
            cpu_per_change.append(raw)
            beyond_rest.append(raw - idle_rate * took)
            await asyncio.sleep(0.5)  # one change at a time, as the target says
        lat = summary(latencies)
        cpu, net = summary(cpu_per_change), summary(beyond_rest)
        print(
            f"  one Endpoints change on every node: p50/p99 {lat['p50'] * 1000:.0f}/{lat['p99'] * 1000:.0f} ms "
            f"over {args.changes} changes x {len(fleet.agents)} nodes"
        )
        print(
            f"  coordinator CPU per change: p50/p99 {cpu['p50'] * 1000:.0f}/{cpu['p99'] * 1000:.0f} ms, "
            f"beyond its CPU at rest {net['p50'] * 1000:.0f}/{net['p99'] * 1000:.0f} ms (negative: the "
            "hollow fleet, slowed, sent fewer heartbeats)"
        )


async def until_every_node_has(fleet: HollowFleet, revision: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        behind = sum(1 for a in fleet.agents if a.link is None or a.link.services_received[0] < revision)
        if not behind:
            return
        await asyncio.sleep(0.005)
    raise TimeoutError(f"{behind} nodes still lack service generation {revision} after {timeout}s")
