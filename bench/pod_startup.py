"""Pod start-up latency through Atoll, beside raw `docker run -d` on the same engine.

    .venv/bin/python bench/pod_startup.py [--pods 50] [--parallel 8]

Brings up a one-host test bed (private dockerd in its own namespace), runs
the coordinator and an agent there as real processes, then:

  1. baseline: N containers through the Docker API (create + start, `docker
     run -d`), all requested at once and run `--parallel` at a time, each
     timed from the request until the engine reports it running;
  2. raw pod: the same two containers an Atoll pod is (infra, then the app
     joined to its network and IPC), asked of the engine directly, queued the
     same way: the floor of the infra-container design;
  3. Atoll: N pods created at once through the coordinator's API, each timed
     from its Create call until the API reports it Running with its container
     ready (seen through a watch). Four rows, in ABBA order: the agent with
     the engine's sandbox networks and with its own (`--sandbox-network
     agent`: infra container with no network, veth and address through
     pyroute2), restarted between modes; each row's pods are deleted before
     the next, and each row starts with one unmeasured pod.

The baseline runs first and again after every Atoll row, and the ratios are
against all of them pooled: the engine drifts over a run, and a baseline taken
once, early, flatters whatever it is compared with. Prints p50/p90/p99 of each
and their ratios. All queue the same way (the agent syncs `--parallel` pods at
a time). Atoll against the raw pod is what the agent and the API add; the raw
pod against `docker run` is what a second container per pod costs. A raw row
builds the sandbox network from outside (infra container with `--network
none`, a veth with raw `ip`): the floor of a CNI-style sandbox.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import ipaddress
import math
import signal
import subprocess
import time

import docker
from common import machine, summary  # type: ignore[import-not-found]

from atoll import kinds
from atoll.v1 import pod_pb2
from coordinator.client.api import Client
from tests.integration.daemons import AgentProcess, CoordinatorProcess, eventually, node_ready
from tests.integration.testbed import TestBed

POD = kinds.by_name("Pod")
BENCH_NETWORK = "atoll-bench"
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def baseline(bed: TestBed, count: int, parallel: int) -> tuple[list[float], float]:
    """All `count` runs are requested at once, like the pods; `parallel` run at a time. Returns
    each one's latency and the wall time until the last ran (before they are removed)."""
    client = bed.hosts[0].docker()
    start = time.perf_counter()

    def one(i: int) -> float:
        c = client.containers.run("atoll/busybox", COMMAND, detach=True, name=f"baseline-{i}", init=True)
        c.reload()
        assert c.status == "running"
        return time.perf_counter() - start

    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        latencies = list(pool.map(one, range(count)))
    wall = time.perf_counter() - start
    for c in client.containers.list(all=True, filters={"name": "baseline-"}):
        c.remove(force=True)
    return latencies, wall


def raw_pods(bed: TestBed, count: int, parallel: int, *, plumbed: bool = False) -> tuple[list[float], float]:
    """What an Atoll pod asks of the engine, asked directly: an infra container (its own network
    and IPC) started, then the app container joined to it and started. The floor for the
    infra-container design; Atoll's ratio against it is the agent's and the API's own cost.

    `plumbed`: the infra container starts with no network (`--network none`), and its network is
    built from outside, CNI's way, with raw `ip` (a veth pair, one end moved into the sandbox with
    an address and a default route, the other on the engine's bridge). The floor of a sandbox
    network set up by the agent instead of the engine; pyroute2 in the agent would spare the
    three `ip` processes per pod."""
    host = bed.hosts[0]
    api = host.docker().api
    subnet = ipaddress.ip_interface(host.bip)
    start = time.perf_counter()

    def plumb(i: int, pid: int) -> None:
        address = subnet.network[200 + i]  # above what the engine hands out to this few containers
        inside = f"link set lo up\naddr add {address}/{subnet.network.prefixlen} dev eth0\n"
        inside += f"link set eth0 up\nroute add default via {subnet.ip}\n"
        run = functools.partial(subprocess.run, check=True, capture_output=True)
        run(["ip", "-n", host.name, "link", "add", f"vb{i}", "type", "veth", "peer", "name", "eth0",
             "netns", str(pid)])  # fmt: skip
        run(["nsenter", "-t", str(pid), "-n", "ip", "-batch", "-"], input=inside.encode())
        run(["ip", "-n", host.name, "link", "set", f"vb{i}", "master", "docker0", "up"])

    def one(i: int) -> float:
        network = {"network_mode": "none"} if plumbed else {}
        infra = api.create_container(
            "atoll/busybox", ["sleep", "2147483647"], entrypoint=["/bin/busybox"], name=f"raw-infra-{i}",
            hostname=f"raw-{i}", host_config=api.create_host_config(init=True, ipc_mode="shareable", **network),
        )  # fmt: skip
        api.start(infra["Id"])
        if plumbed:
            plumb(i, api.inspect_container(infra["Id"])["State"]["Pid"])
        joined = f"container:{infra['Id']}"
        app = api.create_container(
            "atoll/busybox", COMMAND, name=f"raw-app-{i}",
            host_config=api.create_host_config(init=True, network_mode=joined, ipc_mode=joined),
        )  # fmt: skip
        api.start(app["Id"])
        assert api.inspect_container(app["Id"])["State"]["Running"]
        return time.perf_counter() - start

    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        latencies = list(pool.map(one, range(count)))
    wall = time.perf_counter() - start
    for c in api.containers(all=True, filters={"name": "raw-"}):
        api.remove_container(c["Id"], force=True)
    return latencies, wall


def network_modes(bed: TestBed, rounds: int = 3, each: int = 8) -> dict[str, list[float]]:
    """One container at a time, create + start, by network mode: the engine's bridge, `none` (a new
    network namespace with loopback alone) and `host` (no new namespace). What a second container
    joined to a sandbox costs is close to `host`; what the namespace itself costs is the rest."""
    api = bed.hosts[0].docker().api
    times: dict[str, list[float]] = {"bridge": [], "none": [], "host": []}
    for r in range(rounds):  # interleaved, so a slow spell of the machine hits every mode
        for mode, spent in times.items():
            for i in range(each):
                started = time.perf_counter()
                config = api.create_host_config(
                    init=True, **({} if mode == "bridge" else {"network_mode": mode})
                )
                c = api.create_container(
                    "atoll/busybox", COMMAND, name=f"mode-{mode}-{r}-{i}", host_config=config
                )
                api.start(c["Id"])
                spent.append(time.perf_counter() - started)
    for c in api.containers(all=True, filters={"name": "mode-"}):
        api.remove_container(c["Id"], force=True)
    return times


def bench_pod(i: int, row: str = "engine") -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = f"bench-{row}-{i}"
    p.metadata.labels["bench"] = f"startup-{row}"
    p.spec.termination_grace_period_seconds = 1
    p.spec.containers.add(name="main", image="atoll/busybox", command=COMMAND)
    return p


# The steps of one pod's start, in wall-clock seconds (one machine, one clock): seen bound by
# the client's watch, begun by the agent (status.startTime), its app container started
# (state.running.startedAt, the engine's word), seen Running with the container ready.
STEPS = (
    ("create -> bound (API, scheduler, bind, watch)", "created", "bound"),
    ("create -> agent begins (+ push to the agent)", "created", "begun"),
    ("agent begins -> app started (infra, network, app)", "begun", "started"),
    ("app started -> Running seen (report, store, watch)", "started", "running"),
)


async def through_atoll(
    server: str, count: int, row: str = "engine"
) -> tuple[list[float], float, dict[str, list[float]]]:
    async with Client(server) as client:
        await eventually(lambda: node_ready(client, "node-1"), timeout=60, what="node Ready")
        # One pod first, not measured: the agent (just started) is past its start-up when the
        # measured pods come, and the row's first sandbox is not paid by one of them.
        warm = bench_pod(0, row)
        warm.metadata.name, warm.metadata.labels["bench"] = f"warm-{row}", "warm"
        await client.create(warm)

        async def warm_running() -> bool:
            got = await client.get(POD, "default", warm.metadata.name)
            assert isinstance(got, pod_pb2.Pod)
            return got.status.phase == pod_pb2.POD_PHASE_RUNNING and bool(got.status.pod_ip)

        await eventually(warm_running, timeout=120, what="the warm-up pod Running")
        _, revision = await client.list(POD)
        created: dict[str, float] = {}
        running: dict[str, float] = {}
        marks: dict[str, dict[str, float]] = {}  # pod -> step -> wall-clock time
        done = asyncio.Event()

        async def watch() -> None:
            async for _, obj in client.watch(POD, "default", f"bench=startup-{row}", revision):
                assert isinstance(obj, pod_pb2.Pod)
                now = time.time()
                name = obj.metadata.name
                mark = marks.setdefault(name, {})
                if obj.spec.node_name:
                    mark.setdefault("bound", now)
                ready = obj.status.container_statuses and all(
                    cs.ready for cs in obj.status.container_statuses
                )
                if obj.status.phase == pod_pb2.POD_PHASE_RUNNING and ready and name not in running:
                    running[name] = time.perf_counter()
                    mark["running"] = now
                    mark["begun"] = obj.status.start_time.ToNanoseconds() / 1e9
                    app = obj.status.container_statuses[0].state.running
                    mark["started"] = app.started_at.ToNanoseconds() / 1e9
                    if len(running) == count:
                        done.set()
                        return

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.2)

        async def create(i: int) -> None:
            created[f"bench-{row}-{i}"] = time.perf_counter()
            marks.setdefault(f"bench-{row}-{i}", {})["created"] = time.time()
            await client.create(bench_pod(i, row))

        start = time.perf_counter()
        await asyncio.gather(*(create(i) for i in range(count)))
        await asyncio.wait_for(done.wait(), 600)
        wall = time.perf_counter() - start
        watcher.cancel()
        # The row's pods go, so that the next row meets an engine as empty as this one did.
        for name in [warm.metadata.name, *created]:
            await client.delete(POD, "default", name)
        steps = {label: [marks[n][b] - marks[n][a] for n in created] for label, a, b in STEPS}
        return [running[n] - created[n] for n in created], wall, steps


def engine_empty(bed: TestBed, timeout: float = 120.0) -> None:
    """Until the engine runs no container of Atoll's (the pods of the row before are gone)."""
    api = bed.hosts[0].docker().api
    deadline = time.monotonic() + timeout
    while api.containers(all=True, filters={"label": "io.atoll.managed=true"}):
        if time.monotonic() > deadline:
            raise TimeoutError("the pods of the last row are still on the engine")
        time.sleep(0.2)


Row = tuple[list[float], float, dict[str, list[float]]]


def pooled(rows: list[Row]) -> Row:
    latencies = [x for r in rows for x in r[0]]
    steps: dict[str, list[float]] = {}
    for r in rows:
        for label, values in r[2].items():
            steps.setdefault(label, []).extend(values)
    return latencies, (sum(r[1] for r in rows) / len(rows)) if rows else math.nan, steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=8, help="concurrent docker runs in the baseline")
    parser.add_argument(
        "--network-modes", action="store_true", help="also time one container start by network mode"
    )
    parser.add_argument(
        "--order",
        help="the Atoll rows' sandbox modes in order, comma-separated (e.g. agent,agent,agent,agent: "
        "does a row slow down after the rows before it?)",
    )
    parser.add_argument(
        "--engine-first",
        action="store_true",
        help="Atoll rows in the order engine, agent, agent, engine (default: agent, engine, engine, agent)",
    )
    parser.add_argument(
        "--engine-rows-on-bridge",
        action="store_true",
        help="the engine's rows on Docker's default bridge (as the baseline), not on the agent rows' "
        "user-defined network (which costs the engine its embedded DNS set-up per sandbox)",
    )
    args = parser.parse_args()

    order = ["agent", "engine", "engine", "agent"]
    if args.engine_first:
        order = ["engine", "agent", "agent", "engine"]
    if args.order:
        order = args.order.split(",")
        if not set(order) <= {"engine", "agent"}:
            parser.error("--order takes engine and agent")
    mode_args: dict[str, tuple[str, ...]] = {
        "engine": ("--sandbox-network", "engine"),
        "agent": ("--sandbox-network", "agent"),
    }
    with TestBed(1) as bed:
        host = bed.hosts[0]
        modes = network_modes(bed) if args.network_modes else {}
        baselines = [baseline(bed, args.pods, args.parallel)]
        raw, raw_wall = raw_pods(bed, args.pods, args.parallel)
        plumbed, plumbed_wall = raw_pods(bed, args.pods, args.parallel, plumbed=True)
        coordinator = CoordinatorProcess(host, host.dir / "coordinator").start()
        # The agent's sandbox networks need a network that leaves the agent part of its subnet:
        # the engine's range is the lower half. The engine's rows use the same network.
        host.docker().networks.create(
            BENCH_NETWORK, driver="bridge", options={"com.docker.network.bridge.name": "atollbench0"},
            ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
                subnet="172.28.0.0/24", gateway="172.28.0.1", iprange="172.28.0.0/25")]),
        )  # fmt: skip
        agent_args = ("--max-parallel-syncs", str(args.parallel))
        if not args.engine_rows_on_bridge:
            mode_args["engine"] += ("--pod-network", BENCH_NETWORK)
        mode_args["agent"] += ("--pod-network", BENCH_NETWORK)
        measured: dict[str, list[Row]] = {"engine": [], "agent": []}
        agent: AgentProcess | None = None
        running_mode = ""
        for i, mode in enumerate(order):
            if mode != running_mode:
                # The same agent restarted in the row's mode (it keeps its node and state dir).
                if agent is not None:
                    agent.kill(signal.SIGTERM)
                agent = AgentProcess(
                    host, "127.0.0.1:6443", host.dir / "agent", "node-1", agent_args + mode_args[mode]
                ).start()
                running_mode = mode
            measured[mode].append(asyncio.run(through_atoll(coordinator.server, args.pods, f"{mode}{i}")))
            engine_empty(bed)
            # A baseline after every Atoll row: the engine's drift over the run is measured, and
            # the ratios compare against every baseline pooled, not just one taken early.
            baselines.append(baseline(bed, args.pods, args.parallel))

    base = pooled([(b[0], b[1], {}) for b in baselines])
    atoll, atoll_wall, steps = pooled(measured["engine"])
    built, built_wall, built_steps = pooled(measured["agent"])
    b, r, a, p, g = summary(base[0]), summary(raw), summary(atoll), summary(plumbed), summary(built)
    print(machine())
    print(f"pod start-up, {args.pods} pods per row, engine parallelism {args.parallel} (seconds)")
    print(f"Atoll rows in order: {', '.join(order)}; a docker run baseline first and after each Atoll row")
    network = "Docker's default bridge" if args.engine_rows_on_bridge else f"{BENCH_NETWORK} (user-defined)"
    print(f"engine rows' pods on {network}; agent rows' on {BENCH_NETWORK}; baselines on the default bridge")
    print(f"{'':30}{'p50':>8}{'p90':>8}{'p99':>8}{'wall':>8}")

    def line(label: str, st: dict[str, float], wall: float) -> None:
        print(f"{label:30}{st['p50']:8.3f}{st['p90']:8.3f}{st['p99']:8.3f}{wall:8.2f}")

    for n, (lat, wall) in enumerate(baselines):
        line(f"docker run -d, baseline {n}", summary(lat), wall)
    line("docker run -d, all pooled", b, base[1])
    line("raw pod (infra + app)", r, raw_wall)
    line("raw pod, sandbox plumbed", p, plumbed_wall)
    for mode in dict.fromkeys(order):
        for n, (lat, wall, _) in enumerate(measured[mode]):
            line(f"atoll, {mode}'s sandbox, #{n + 1}", summary(lat), wall)
    if measured["engine"]:
        line("atoll, engine's sandbox", a, atoll_wall)
    if measured["agent"]:
        line("atoll, agent's sandbox", g, built_wall)
    for label, x, y, xw, yw in (
        ("ratio atoll(engine) / docker", a, b, atoll_wall, base[1]),
        ("ratio atoll(agent) / docker", g, b, built_wall, base[1]),
        ("ratio agent / engine sandbox", g, a, built_wall, atoll_wall),
        ("ratio raw pod / docker", r, b, raw_wall, base[1]),
        ("ratio plumbed raw / docker", p, b, plumbed_wall, base[1]),
        ("drift: last / first baseline", summary(baselines[-1][0]), summary(baselines[0][0]),
         baselines[-1][1], baselines[0][1]),
    ):  # fmt: skip
        print(
            f"{label:30}{x['p50'] / y['p50']:8.2f}{x['p90'] / y['p90']:8.2f}{x['p99'] / y['p99']:8.2f}{xw / yw:8.2f}"
        )
    if modes:
        bridge = summary(modes["bridge"])["p50"]
        print("one container at a time, create + start, by network mode (p50 seconds, ratio to bridge)")
        for mode, values in modes.items():
            st = summary(values)
            print(f"  {mode:8}{st['p50']:8.3f}{st['p50'] / bridge:8.2f}  (n={len(values)})")
    for row, row_steps in (("engine's sandbox network", steps), ("the agent's sandbox network", built_steps)):
        if not row_steps:
            continue
        print(f"where an Atoll pod's time goes, {row} (seconds; the agent starts --parallel at a time)")
        for label, values in row_steps.items():
            st = summary(values)
            print(f"  {label:52}{st['p50']:8.3f}{st['p90']:8.3f}{st['p99']:8.3f}")
    print("each row's p50 by step, in the order run (does a row slow down after the rows before it?)")
    done = {"engine": 0, "agent": 0}
    for mode in order:
        row_steps = measured[mode][done[mode]][2]
        done[mode] += 1
        figures = "".join(f"{summary(v)['p50']:8.3f}" for v in row_steps.values())
        print(f"  {mode:8}{figures}")


if __name__ == "__main__":
    main()
