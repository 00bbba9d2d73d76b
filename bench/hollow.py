"""Hollow nodes: the real agent on in-memory fakes, many per process, against a real coordinator.

    .venv/bin/python bench/hollow.py [--nodes 1000] [--replicas 10000] [--max-agents 5000] [--step 500]
                                     [--store sqlite|etcd|both] [--coordinators 3]

Each hollow agent is `agent.daemon.Agent` with FakeRuntime and FakeMetrics
(no engine, no host reads) speaking real gRPC to a coordinator that runs as
its own process (`coordinator serve`, SQLite store with synchronous=FULL on
disk). Agents keep their state dirs on /dev/shm. Two phases:

  1. Load: --nodes agents register; a replication controller of --replicas
     pods is created. Reported: pods bound per second (scheduler), time until
     every agent has its pods pushed, time until all pods are reported
     Running, the coordinator's CPU and RSS, and p50/p99 of Get and List calls
     made during the run.
  2. Capacity: agents are added --step at a time (default heartbeat
     interval) up to --max-agents; at each plateau the API p99 is measured. The
     figure is the last count with p99 <= 1 s.

With --store etcd, --coordinators coordinators serve one cluster on a real
3-member etcd (loopback), sharing the CA through the cluster secret; hollow
agent i lists them all starting with coordinator i mod N, so the fleet
spreads over them. --store both runs the single SQLite coordinator and then
the etcd ones, one after the other, in one invocation.

Everything runs on this machine's cores, the agents included, so the figures
are a floor for a coordinator with the machine to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import pathlib
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil
from common import summary  # type: ignore[import-not-found]
from cpubudget import CpuBudget, pin_cores  # type: ignore[import-not-found]
from hollow_probe import (  # type: ignore[import-not-found]
    Prober,
    probe_elsewhere,
    probe_main,
    prober_results,
    scrape,
    start_prober,
)
from hollow_procs import FleetWorkers, fleet_stats, worker_main  # type: ignore[import-not-found]
from hollow_services import services_phase  # type: ignore[import-not-found]

from agent.daemon import Agent
from agent.host.metrics import FakeMetrics
from agent.link import CoordinatorLink
from agent.network import FakeFirewall, FakeNetlink
from agent.network.sandbox import RecordingPlumber
from agent.proxy import FakeNetfilter
from agent.runtime.fake import FakeRuntime
from agent.servicecache import ServiceView
from atoll import errors, gcpolicy, kinds, pki
from atoll.agentconfig import AgentConfig
from atoll.loopstalls import LoopStalls
from atoll.v1 import pod_pb2, workloads_pb2
from coordinator.auth import tokens
from coordinator.client import config as clientconfig
from coordinator.client.api import Client
from coordinator.client.config import ClientConfig

POD = kinds.by_name("Pod")
NODE = kinds.by_name("Node")
RC = kinds.by_name("ReplicationController")
IMAGE = "hollow/app"
# The admin client config the coordinator writes, once it has (the agents join with a token).
ADMIN: list[ClientConfig | None] = [None]
# The coordinators' --metrics-listen ports, with --calls (the load phase scrapes them).
METRICS_PORTS: list[int] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


KEYS = pki.InProcessKeyTool()


class HollowFleet:
    def __init__(self, coordinators: list[str], base: pathlib.Path, token_ports: list[int]) -> None:
        # Agent i lists every coordinator, starting with coordinator i mod N: the fleet spreads over
        # them, and each agent fails over to the next.
        self.coordinators = coordinators
        self.token_ports = token_ports
        self.base = base
        self.agents: list[Agent] = []
        self.first_index = 0  # a fleet worker's agents are numbered from its slice's start
        # Join settings (token, CA hash, token port): every agent joins and speaks mutual TLS.
        self.join: dict[str, str] = {}
        # The services phase times pushes to the node, not this process rendering 1,000 nodes'
        # rules: hollow agents then note what arrived and program nothing.
        self.record_services_only = False
        self.prefix = "hollow"  # node names: PREFIX-INDEX

    async def add(self, count: int) -> None:
        start = self.first_index + len(self.agents)
        new = []
        for i in range(start, start + count):
            name = f"{self.prefix}-{i:05d}"
            k = i % len(self.coordinators)
            cfg = AgentConfig(
                coordinator=",".join(self.coordinators[k:] + self.coordinators[:k]),
                node_name=name,
                state_dir=str(self.base / name),
                node_ip=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                relist_interval=5.0,
                resync_interval=120.0,
                docker_config="",
                registries_file="",
                legacy_sysconfig="",
                **{**self.join, "join_address": f"127.0.0.1:{self.token_ports[k]}"},  # type: ignore[arg-type]
            )
            runtime = FakeRuntime(images=("atoll/pause:1.0", IMAGE), record=False)
            agent = Agent(
                cfg,
                runtime=runtime,
                metrics=FakeMetrics(cpu_count=16, memory_total=64 << 30),
                netlink=FakeNetlink,
                firewall=FakeFirewall,
                netfilter=FakeNetfilter,
                plumber=RecordingPlumber,
                serve_api=False,
                # A child per join would cost the fleet's core 0.4 s per agent; this process holds
                # cryptography anyway.
                keys=KEYS,
            )
            if self.record_services_only:
                agent._on_services = _arrived_only  # type: ignore[method-assign]
            new.append(agent)
        for chunk in range(0, len(new), 100):
            await asyncio.gather(*(a.start() for a in new[chunk : chunk + 100]))
        self.agents.extend(new)

    def spread(self) -> list[int]:
        """How many agents each coordinator carries now (by the address of each agent's link)."""
        counts = dict.fromkeys(self.coordinators, 0)
        for a in self.agents:
            server = a.connection.targets.current if a.connection is not None else None
            if server in counts:
                counts[server] += 1
        return list(counts.values())

    def heartbeat_failures(self) -> int:
        return sum(a.link.heartbeat_failures for a in self.agents if a.link is not None)

    def heartbeat_failure_kinds(self) -> dict[str, int]:
        kinds: collections.Counter[str] = collections.Counter()
        for a in self.agents:
            if a.link is not None:
                kinds.update(a.link.heartbeat_failure_kinds)
        return dict(kinds)

    def pushed(self) -> int:
        return sum(len(a.manager.desired) for a in self.agents if a.manager is not None)

    def reported_running(self) -> int:
        """Pods whose Running status the agents have delivered to the coordinator."""
        total = 0
        for a in self.agents:
            if a.link is not None:
                sent = a.link._reporter._sent  # a benchmark may look inside
                total += sum(1 for s in sent.values() if s.phase == pod_pb2.POD_PHASE_RUNNING)
        return total

    async def stop(self) -> None:
        for chunk in range(0, len(self.agents), 200):
            await asyncio.gather(
                *(a.stop() for a in self.agents[chunk : chunk + 200]), return_exceptions=True
            )


async def _arrived_only(state: object) -> None:
    """A hollow agent's service handler in the services phase: the link already noted the arrival."""


def _no_state(view: ServiceView) -> None:
    """In the services phase hollow agents do not assemble the whole state for a proxy: 1,000
    of them doing so in this one process would time this process, not the coordinator's push."""


class Coordinators:
    """The coordinator processes, measured as one: CPU times and RSS summed."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]

    def cpu_percent(self, interval: float | None = None) -> float:
        return sum(p.cpu_percent(interval) for p in self.procs)

    def cpu_times(self) -> argparse.Namespace:
        times = [p.cpu_times() for p in self.procs]
        return argparse.Namespace(user=sum(t.user for t in times), system=sum(t.system for t in times))

    def memory_info(self) -> argparse.Namespace:
        return argparse.Namespace(rss=sum(p.memory_info().rss for p in self.procs))


def rc(replicas: int) -> workloads_pb2.ReplicationController:
    r = workloads_pb2.ReplicationController()
    r.metadata.name = "hollow"
    r.spec.replicas = replicas
    r.spec.selector["app"] = "hollow"
    r.spec.template.metadata.labels["app"] = "hollow"
    c = r.spec.template.spec.containers.add(name="app", image=IMAGE)
    c.resources.requests.cpu_millis = 10
    c.resources.requests.memory_bytes = 16 << 20
    return r


async def count_pods(client: Client) -> tuple[int, int, int]:
    items, _ = await client.list(POD, "default", "app=hollow")
    bound = sum(1 for p in items if p.spec.node_name)  # type: ignore[attr-defined]
    running = sum(1 for p in items if p.status.phase == pod_pb2.POD_PHASE_RUNNING)  # type: ignore[attr-defined]
    return len(items), bound, running


async def fleet_totals(fleet: HollowFleet, workers: FleetWorkers) -> dict[str, Any]:
    """The fleet's counts, this process's agents and every worker's together."""
    parts = [fleet_stats(fleet), *(await workers.ask("stats") if workers.procs else [])]
    kinds: collections.Counter[str] = collections.Counter()
    for part in parts:
        kinds.update(part["kinds"])
    totals = {k: sum(part[k] for part in parts) for k in ("pushed", "running", "failures")}
    stalls = [(part["stalled"], part["longest"]) for part in parts[1:]]
    slowest = sorted(x for part in parts for x in part["slowest"])
    intervals = sorted(x for part in parts for x in part["intervals"])
    return {
        **totals,
        "kinds": dict(kinds),
        "worker_stalls": stalls,
        "slowest": slowest,
        "intervals": intervals,
        "overslept": max(part["overslept"] for part in parts),
    }


async def load_phase(
    args: argparse.Namespace,
    server: str,
    fleet: HollowFleet,
    coord: Coordinators,
    admin_conf: pathlib.Path,
    workers: FleetWorkers,
) -> None:
    async with Client(server, config=ADMIN[0]) as client:
        t0 = time.perf_counter()
        per = args.nodes // args.fleet_procs
        here = args.nodes - per * (args.fleet_procs - 1)
        settings = {
            "coordinators": fleet.coordinators,
            "token_ports": fleet.token_ports,
            "base": str(fleet.base),
            "join": fleet.join,
        }
        slices = [(here + k * per, per) for k in range(args.fleet_procs - 1)]
        await asyncio.gather(fleet.add(here), workers.start(settings, slices))

        async def all_ready() -> bool:
            nodes, _ = await client.list(NODE)
            return len(nodes) >= args.nodes

        while not await all_ready():
            await asyncio.sleep(0.5)
        print(f"{args.nodes} hollow agents registered in {time.perf_counter() - t0:.1f}s")
        # What the fleet built to get here (a thousand agents' links, records, caches) is left
        # out of later collections: one agent's heap is small, a thousand's in one process is
        # not, and full collections of it, landing on whatever frame allocates, are the
        # simulation's cost, not the agent's (each worker process does the same).
        gcpolicy.freeze_start_up()

        # In this process only to watch for nodes turning NotReady; latencies come from `elsewhere`.
        prober = Prober(client)
        stop = asyncio.Event()
        probe = asyncio.create_task(prober.run(stop))
        # The sentinel: one more agent, in the prober's process, its heartbeats timed there.
        elsewhere = await start_prober(admin_conf, args.timeout, sentinel=settings)
        coord.cpu_percent(None)
        cpu0 = coord.cpu_times()
        me = psutil.Process()
        fleet_cpu0 = me.cpu_times()
        workers_cpu0 = workers.cpu_seconds()
        failures0 = (await fleet_totals(fleet, workers))["failures"]
        # This process's own stalls: a hollow agent whose heartbeat waits here is silent for real.
        own_stalls = LoopStalls()
        stalls_task = asyncio.create_task(own_stalls.run(stop))
        start = time.perf_counter()
        scraped0 = await asyncio.gather(*(asyncio.to_thread(scrape, p) for p in METRICS_PORTS))
        await client.create(rc(args.replicas))
        pushed_at = running_at = None
        peak_rss = 0
        worst_not_ready = 0
        # Progress is read from the hollow agents (no API calls), so measuring does not load the coordinator.
        while running_at is None and time.perf_counter() - start < args.timeout:
            await asyncio.sleep(args.poll)
            totals = await fleet_totals(fleet, workers)
            pushed, running = totals["pushed"], totals["running"]
            now = time.perf_counter() - start
            peak_rss = max(peak_rss, coord.memory_info().rss)
            if pushed_at is None and pushed >= args.replicas:
                pushed_at = now
            if running >= args.replicas:
                running_at = now
            worst_not_ready = max(worst_not_ready, prober.not_ready)
            print(f"  t={now:6.1f}s pushed={pushed} reported-running={running}", flush=True)
        total, bound, running = await count_pods(client)
        print(f"  the API lists {total} pods, {bound} bound, {running} Running")
        scraped1 = await asyncio.gather(*(asyncio.to_thread(scrape, p) for p in METRICS_PORTS))
        stop.set()
        await probe
        await stalls_task
        elsewhere.terminate()
        get_times, list_times, _, sentinel = await prober_results(elsewhere)
        cpu1 = coord.cpu_times()
        fleet_cpu1 = me.cpu_times()
        elapsed = time.perf_counter() - start
        cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        fleet_cpu = (fleet_cpu1.user + fleet_cpu1.system) - (fleet_cpu0.user + fleet_cpu0.system)
        fleet_cpu += workers.cpu_seconds() - workers_cpu0
        totals = await fleet_totals(fleet, workers)
        g, lst = summary(get_times), summary(list_times)
        print()
        print(f"load: {args.nodes} hollow nodes, rc of {args.replicas} replicas")
        if pushed_at:
            print(f"  all bound and pushed   {pushed_at:7.1f}s  ({args.replicas / pushed_at:7.0f} pods/s)")
        print(f"  all Running after      {running_at if running_at else float('nan'):7.1f}s")
        print(
            f"  coordinator CPU        {cpu:7.1f}s over {elapsed:.1f}s ({100 * cpu / elapsed:.0f}% of one core; "
            f"{1000 * cpu / max(args.replicas, 1):.2f} ms per pod)"
        )
        # Near 100 % of its core the fleet, not the coordinator, sets the pace: pods/s then says
        # little of the coordinator, and its CPU per pod is the figure to compare.
        print(
            f"  hollow fleet CPU       {fleet_cpu:7.1f}s ({100 * fleet_cpu / elapsed:.0f}% of one core; "
            f"{args.fleet_procs} process(es), the in-process prober included)"
        )
        print(f"  coordinator peak RSS   {peak_rss / 2**20:7.0f} MiB")
        print(
            f"  during the burst       {totals['failures'] - failures0} heartbeat failures, "
            f"at most {worst_not_ready} nodes not Ready; since the fleet joined, by kind: "
            f"{totals['kinds'] or 'none'}"
        )
        print(
            f"  hollow loop stalled    {own_stalls.within(1e9):7.1f}s in all, longest "
            f"{own_stalls.longest():.1f}s (heartbeats of hollow agents wait there too)"
        )
        intervals = totals["intervals"]
        if intervals:
            print(
                f"  heartbeat interval     told to agents: {intervals[0]:.1f}-{intervals[-1]:.1f}s "
                f"(coordinator's --max-heartbeats-per-second "
                f"{'default' if args.max_heartbeats_per_second is None else args.max_heartbeats_per_second})"
            )
        slowest = totals["slowest"]
        if slowest:
            print(
                f"  answered heartbeats    slowest per agent: median {slowest[len(slowest) // 2]:.2f}s, "
                f"worst {slowest[-1]:.2f}s; longest pause overslept {totals['overslept']:.2f}s "
                "(since the fleet joined)"
            )
        for k, (stalled, longest) in enumerate(totals["worker_stalls"], 1):
            print(f"  fleet worker {k} stalled {stalled:5.1f}s in all (its life), longest {longest:.1f}s")
        print(
            f"  API Get  p50/p99       {g['p50'] * 1000:7.1f} / {g['p99'] * 1000:.1f} ms  "
            f"({len(get_times)} calls, from a process of its own)"
        )
        print(f"  API List p50/p99       {lst['p50'] * 1000:7.1f} / {lst['p99'] * 1000:.1f} ms  (nodes)")
        if scraped1:
            during: collections.Counter[str] = collections.Counter()
            for (before, _), (after, _) in zip(scraped0, scraped1, strict=True):
                during.update({m: after[m] - before.get(m, 0) for m in after})
            busiest = ", ".join(f"{m} {c}" for m, c in during.most_common() if c)
            print(f"  API calls by method    {sum(during.values())} in all: {busiest}")
        for k, ((_, before_gc), (_, after_gc)) in enumerate(zip(scraped0, scraped1, strict=True)):
            spent = ", ".join(
                f"gen{g} {n - before_gc.get(g, (0, 0, 0))[0]:.0f} in {(t - before_gc.get(g, (0, 0, 0))[1]):.2f}s"
                f" (longest {longest * 1000:.0f} ms)"
                for g, (n, t, longest) in after_gc.items()
            )
            print(f"  coordinator {k} GC      {spent or 'not served'} (longest: since start)")
        if sentinel.get("rtt"):
            h = summary(sentinel["rtt"])
            print(
                f"  sentinel heartbeats    p50/p99/max {h['p50'] * 1000:.0f} / {h['p99'] * 1000:.0f} / "
                f"{sentinel['rtt'][-1] * 1000:.0f} ms ({sentinel['heartbeats']}), longest gap "
                f"{sentinel['longest_gap']:.2f}s, seen not Ready in {sentinel['not_ready_lists']} lists "
                "(one agent in the prober's process: the coordinator's side of the link alone)"
            )
        await client.delete(RC, "default", "hollow")


async def capacity_phase(
    args: argparse.Namespace,
    fleet: HollowFleet,
    coord: Coordinators,
    admin_conf: pathlib.Path,
    workers: FleetWorkers,
) -> None:
    print()
    print(f"capacity: API p99 while agents heartbeat at the interval they are told (step {args.step})")
    print("  (probed from a separate process; CPU in % of one core over the probe window)")
    held = total = 0
    me = psutil.Process()
    settings = {"coordinators": fleet.coordinators, "token_ports": fleet.token_ports, "base": str(fleet.base)}
    while total < args.max_agents:
        step = min(args.step, args.max_agents - total)
        if args.fleet_procs > 1:  # each step's agents in a worker process of their own
            await workers.start({**settings, "join": fleet.join}, [(10_000 + total, step)])
        else:
            await fleet.add(step)
        total += step
        await asyncio.sleep(args.settle)
        coord.cpu_percent(), me.cpu_percent()
        cpu0, t0 = workers.cpu_seconds(), time.monotonic()
        gc0 = [(await asyncio.to_thread(scrape, port))[1] for port in METRICS_PORTS]
        get, lst, not_ready = await probe_elsewhere(admin_conf, args.measure)
        gc1 = [(await asyncio.to_thread(scrape, port))[1] for port in METRICS_PORTS]
        coord_cpu = coord.cpu_percent()
        agents_cpu = me.cpu_percent() + 100 * (workers.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        g, ls = summary(get), summary(lst)
        worst = max(g["p99"], ls["p99"])
        told = (await fleet_totals(fleet, workers))["intervals"]
        print(
            f"  {total:5d} agents: Get p50/p99 {g['p50'] * 1000:6.1f}/{g['p99'] * 1000:7.1f} ms, "
            f"List(nodes) p50/p99 {ls['p50'] * 1000:6.1f}/{ls['p99'] * 1000:7.1f} ms, "
            f"coordinator CPU {coord_cpu:3.0f}%, RSS {coord.memory_info().rss >> 20} MiB, "
            f"hollow agents' CPU {agents_cpu:3.0f}%, NotReady {not_ready}, "
            f"heartbeat every {told[len(told) // 2] if told else 0:.1f}s, "
            f"agents per coordinator {fleet.spread()}{collections_during(gc0, gc1)}",
            flush=True,
        )
        if worst > 1.0 or not_ready:
            break
        held = total
    print(f"  held {held} agents with API p99 <= 1 s and every node Ready")


def collections_during(
    before: list[dict[str, tuple[float, float, float]]], after: list[dict[str, tuple[float, float, float]]]
) -> str:
    """The coordinators' full (gen2) collections between two scrapes, and their seconds (with
    --calls, which serves the coordinators' metrics); empty without."""
    runs = seconds = 0.0
    for b, a in zip(before, after, strict=True):
        n0, t0, _ = b.get("2", (0.0, 0.0, 0.0))
        n1, t1, _ = a.get("2", (0.0, 0.0, 0.0))
        runs, seconds = runs + n1 - n0, seconds + t1 - t0
    return f", full GCs {runs:.0f} ({seconds:.2f}s)" if after else ""


async def join_settings(admin: ClientConfig, token_port: int) -> dict[str, str]:
    """A join token for the whole fleet, made with the admin config the coordinator wrote."""
    async with Client(config=admin) as client:
        token_id, secret = tokens.generate()
        await client.create(tokens.new_token(token_id, secret, ttl=4 * 3600, description="hollow fleet"))
        info = await client.cluster_info()
    return {
        "join_token": f"{token_id}.{secret}",
        "ca_hash": info.ca_hash,
        "join_address": f"127.0.0.1:{token_port}",
    }


async def main_async(args: argparse.Namespace, store: str) -> None:
    n = args.coordinators if store == "etcd" else 1
    ports, token_ports = [free_port() for _ in range(n)], [free_port() for _ in range(n)]
    servers = [f"127.0.0.1:{p}" for p in ports]
    data = pathlib.Path(tempfile.mkdtemp(prefix="atoll-hollow-"))
    shm = pathlib.Path(
        tempfile.mkdtemp(prefix="atoll-hollow-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    )
    print(f"=== {n} coordinator(s) on {store} ===", flush=True)
    gcpolicy.GCPolicy().apply()  # the fleet's process: the coordinator's young generation
    etcd = None
    extra: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    budgets: list[CpuBudget] = []
    profilers: list[subprocess.Popen[bytes]] = []
    fleet = HollowFleet(servers, shm, token_ports)
    workers = FleetWorkers()
    fleet.record_services_only = bool(args.services)
    if args.services:
        ServiceView.state = _no_state  # type: ignore[assignment,method-assign]
    log = open(data / "coordinators.log", "w")  # noqa: SIM115 - closed in the finally below
    try:
        if store == "etcd":
            from tests.integration.etcd import EtcdCluster  # the tests' real 3-member etcd on loopback

            etcd = EtcdCluster().start()
            secret = data / "cluster-secret"
            secret.write_bytes(os.urandom(24).hex().encode())
            extra = ["--store", f"etcd://{etcd.endpoints}/hollow", "--cluster-secret-file", str(secret)]
        if args.coordinator_cpu:
            print(f"each coordinator is held to {args.coordinator_cpu:.2f} of a core (CFS quota)", flush=True)
        pin = pin_cores(args.pin)
        metrics_ports = [free_port() for _ in range(n)]
        METRICS_PORTS[:] = metrics_ports if args.calls else []
        for k in range(n):
            if args.coordinator_cpu:
                budgets.append(CpuBudget(f"atoll-hollow-{os.getpid()}-{k}", args.coordinator_cpu))
            procs.append(
                subprocess.Popen(
                    [*pin, sys.executable, "-m", "coordinator.cli.main", "serve", "--listen", servers[k],
                     "--data-dir", str(data / f"store{k}"), "--token-listen", f"127.0.0.1:{token_ports[k]}",
                     "--log-level", "warning", *extra,
                     "--lease-listen", "" if args.no_lease_lane else f"127.0.0.1:{free_port()}",
                     *([] if args.max_heartbeats_per_second is None
                       else ["--max-heartbeats-per-second", str(args.max_heartbeats_per_second)]),
                     *(["--metrics-listen", f"127.0.0.1:{metrics_ports[k]}"] if args.calls else [])],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
            if budgets:
                budgets[k].add(procs[-1].pid)
            if k == 0 and n > 1:
                await asyncio.sleep(2)  # the first puts the cluster CA into etcd; the others adopt it
        admin_conf = data / "store0" / "admin.conf"
        if args.profile:
            spy = pathlib.Path(sys.executable).with_name("py-spy")
            for k, proc in enumerate(procs):
                out = pathlib.Path(args.profile)
                if n > 1:  # one profile per coordinator: the leader's differs from the followers'
                    out = out.with_name(f"{out.stem}-c{k}{out.suffix}")
                profilers.append(
                    subprocess.Popen(
                        [str(spy) if spy.exists() else "py-spy", "record", "-o", str(out), "-f", "speedscope",
                         "-p", str(proc.pid), "-r", "50", *(["--gil"] if args.profile_gil else [])],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )  # fmt: skip
        for _ in range(150):
            if admin_conf.exists():
                break
            await asyncio.sleep(0.2)
        admin = ADMIN[0] = clientconfig.parse(admin_conf.read_text(), str(admin_conf))
        for server in servers:
            async with Client(server, config=admin) as client:
                for _ in range(100):
                    try:
                        await client.list(NODE)
                        break
                    except errors.AtollError:
                        await asyncio.sleep(0.2)
        fleet.join = await join_settings(admin, token_ports[0])
        coord = Coordinators([p.pid for p in procs])
        if not args.skip_load:
            await load_phase(args, servers[0], fleet, coord, admin_conf, workers)
        if not args.skip_capacity:
            await capacity_phase(args, fleet, coord, admin_conf, workers)
        if args.services:
            await services_phase(args, servers[0], ADMIN[0], fleet, coord)
    finally:
        await workers.stop()
        try:
            await fleet.stop()
        except Exception as exc:  # the coordinators and the temp dirs go regardless
            print(f"stopping the hollow fleet failed: {exc!r}", file=sys.stderr)
        for profiler in profilers:
            profiler.send_signal(2)
        for profiler in profilers:
            profiler.wait(60)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                print(f"coordinator {proc.pid} did not stop within 30 s of SIGTERM: killed", file=sys.stderr)
                proc.kill()
                proc.wait(30)
        log.close()
        if args.keep_log:
            shutil.copy(data / "coordinators.log", args.keep_log)
        for budget in budgets:
            budget.remove()
        if etcd is not None:
            etcd.stop()
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=10000)
    parser.add_argument("--max-agents", type=int, default=5000)
    parser.add_argument("--step", type=int, default=500)
    parser.add_argument(
        "--settle", type=float, default=10.0, help="seconds after adding agents before measuring"
    )
    parser.add_argument("--measure", type=float, default=10.0, help="seconds of probing per plateau")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between progress samples")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--keep-log", metavar="FILE", help="copy the coordinators' log here at the end")
    parser.add_argument("--skip-capacity", action="store_true")
    parser.add_argument(
        "--profile", help="record the coordinator with py-spy into this file (speedscope JSON)"
    )
    parser.add_argument(
        "--max-heartbeats-per-second",
        type=float,
        help="the coordinators' heartbeat pace (their default: 100; 0: every agent at the fixed 3 s)",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL, so waits for it are not counted as work",
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "etcd", "both"),
        default="sqlite",
        help="one coordinator on SQLite, --coordinators on a real 3-member etcd, or both in turn (one run)",
    )
    parser.add_argument("--coordinators", type=int, default=3, help="coordinators on etcd")
    parser.add_argument(
        "--coordinator-cpu",
        type=float,
        default=0.0,
        metavar="CORES",
        help="hold each coordinator to this share of a core (a CFS quota in a cgroup of its own; root)",
    )
    parser.add_argument(
        "--calls",
        action="store_true",
        help="count the burst's API calls by method (the coordinators serve --metrics-listen)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="coordinators on CPU 0, the fleet and the prober on the other CPUs (no core shared)",
    )
    parser.add_argument("--services", type=int, default=0, help="services phase: this many services")
    parser.add_argument("--endpoints", type=int, default=10, help="endpoints per service")
    parser.add_argument("--changes", type=int, default=20, help="single Endpoints changes timed")
    parser.add_argument(
        "--service-pushes",
        choices=("delta", "full", "both"),
        default="delta",
        help="agents take deltas, full states (as before deltas), or both in turn (one run)",
    )
    parser.add_argument(
        "--fleet-procs",
        type=int,
        default=1,
        help="run the load phase's hollow agents in this many processes (bench/hollow_procs.py)",
    )
    parser.add_argument(
        "--no-lease-lane",
        action="store_true",
        help="coordinators serve no heartbeat lane (--lease-listen ''): heartbeats share the API's queue",
    )
    parser.add_argument("--fleet-worker", help=argparse.SUPPRESS)  # a fleet worker's process
    parser.add_argument("--probe", metavar="ADMIN_CONF", help=argparse.SUPPRESS)  # the prober's process
    parser.add_argument("--probe-sentinel", help=argparse.SUPPRESS)  # and its sentinel agent
    args = parser.parse_args()
    if args.probe:
        sentinel = None
        if args.probe_sentinel:
            spec = json.loads(args.probe_sentinel)
            sentinel = HollowFleet(spec["coordinators"], pathlib.Path(spec["base"]), spec["token_ports"])
            sentinel.join, sentinel.prefix, sentinel.first_index = spec["join"], "sentinel", 60_000
            logging.getLogger("agent").setLevel(logging.ERROR)
        asyncio.run(probe_main(pathlib.Path(args.probe), args.measure, sentinel))
        return
    # Hollow agents have no docker0 in their fake netlink: the service route's warning is noise here.
    logging.getLogger("agent.network.node").setLevel(logging.ERROR)
    # A thousand agents' failed heartbeats would flood the output; their links count them instead.
    logging.getLogger("agent.link").setLevel(logging.ERROR)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.fleet_worker:
        asyncio.run(worker_main(json.loads(args.fleet_worker), HollowFleet))
        return
    if not 1 <= args.fleet_procs <= args.nodes:
        parser.error("--fleet-procs: between 1 and --nodes")
    if args.service_pushes == "both":
        argv = [a for a in sys.argv[1:] if a not in ("--service-pushes", "both")]
        for pushes in ("full", "delta"):
            subprocess.run([sys.executable, __file__, *argv, "--service-pushes", pushes], check=True)
        return
    CoordinatorLink.service_deltas = args.service_pushes == "delta"
    if args.store == "both":
        # One process per store: gRPC's asyncio machinery belongs to one event loop per process.
        argv = [a for a in sys.argv[1:] if a not in ("--store", "both")]
        for store in ("sqlite", "etcd"):
            subprocess.run([sys.executable, __file__, *argv, "--store", store], check=True)
        return
    asyncio.run(main_async(args, args.store))


if __name__ == "__main__":
    main()
