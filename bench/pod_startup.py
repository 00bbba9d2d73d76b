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
     ready (seen through a watch).

Prints p50/p90/p99 of each and their ratios. All queue the same way (the
agent syncs `--parallel` pods at a time). Atoll against the raw pod is what
the agent and the API add; the raw pod against `docker run` is what a second
container per pod costs. A fourth row builds the raw pod's sandbox network from
outside (infra container with `--network none`, a veth with raw `ip`): the
floor of a CNI-style sandbox. The baseline runs once more at the end: the
engine's drift over the run, and Atoll (measured late) against it.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import ipaddress
import subprocess
import time

from common import summary  # type: ignore[import-not-found]

from atoll import kinds
from atoll.v1 import pod_pb2
from coordinator.client.api import Client
from tests.integration.daemons import AgentProcess, CoordinatorProcess, eventually, node_ready
from tests.integration.testbed import TestBed

POD = kinds.by_name("Pod")
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


def bench_pod(i: int) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = f"bench-{i}"
    p.metadata.labels["bench"] = "startup"
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


async def through_atoll(server: str, count: int) -> tuple[list[float], float, dict[str, list[float]]]:
    async with Client(server) as client:
        await eventually(lambda: node_ready(client, "node-1"), timeout=60, what="node Ready")
        _, revision = await client.list(POD)
        created: dict[str, float] = {}
        running: dict[str, float] = {}
        marks: dict[str, dict[str, float]] = {}  # pod -> step -> wall-clock time
        done = asyncio.Event()

        async def watch() -> None:
            async for _, obj in client.watch(POD, "default", "bench=startup", revision):
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
            created[f"bench-{i}"] = time.perf_counter()
            marks.setdefault(f"bench-{i}", {})["created"] = time.time()
            await client.create(bench_pod(i))

        start = time.perf_counter()
        await asyncio.gather(*(create(i) for i in range(count)))
        await asyncio.wait_for(done.wait(), 600)
        wall = time.perf_counter() - start
        watcher.cancel()
        steps = {label: [marks[n][b] - marks[n][a] for n in created] for label, a, b in STEPS}
        return [running[n] - created[n] for n in created], wall, steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=8, help="concurrent docker runs in the baseline")
    parser.add_argument(
        "--network-modes", action="store_true", help="also time one container start by network mode"
    )
    args = parser.parse_args()

    with TestBed(1) as bed:
        host = bed.hosts[0]
        modes = network_modes(bed) if args.network_modes else {}
        base, base_wall = baseline(bed, args.pods, args.parallel)
        raw, raw_wall = raw_pods(bed, args.pods, args.parallel)
        plumbed, plumbed_wall = raw_pods(bed, args.pods, args.parallel, plumbed=True)
        coordinator = CoordinatorProcess(host, host.dir / "coordinator").start()
        AgentProcess(
            host, "127.0.0.1:6443", host.dir / "agent", "node-1", ("--max-parallel-syncs", str(args.parallel))
        ).start()
        atoll, atoll_wall, steps = asyncio.run(through_atoll(coordinator.server, args.pods))
        # The same baseline again, last: an engine that slowed down over the run (state left by
        # the rows before) shows here, and weighs on the rows measured late, Atoll's among them.
        again, again_wall = baseline(bed, args.pods, args.parallel)

    b, r, a, p, e = summary(base), summary(raw), summary(atoll), summary(plumbed), summary(again)
    print(f"pod start-up, {args.pods} pods, engine parallelism {args.parallel} (seconds)")
    print(f"{'':28}{'p50':>8}{'p90':>8}{'p99':>8}{'wall':>8}")
    print(f"{'docker run -d (1 container)':28}{b['p50']:8.3f}{b['p90']:8.3f}{b['p99']:8.3f}{base_wall:8.2f}")
    print(f"{'raw pod (infra + app)':28}{r['p50']:8.3f}{r['p90']:8.3f}{r['p99']:8.3f}{raw_wall:8.2f}")
    print(f"{'atoll pod (infra + app)':28}{a['p50']:8.3f}{a['p90']:8.3f}{a['p99']:8.3f}{atoll_wall:8.2f}")
    print(f"{'raw pod, sandbox plumbed':28}{p['p50']:8.3f}{p['p90']:8.3f}{p['p99']:8.3f}{plumbed_wall:8.2f}")
    print(f"{'docker run -d, again last':28}{e['p50']:8.3f}{e['p90']:8.3f}{e['p99']:8.3f}{again_wall:8.2f}")
    for label, x, y, xw, yw in (
        ("ratio atoll / docker", a, b, atoll_wall, base_wall),
        ("ratio raw pod / docker", r, b, raw_wall, base_wall),
        ("ratio atoll / raw pod", a, r, atoll_wall, raw_wall),
        ("ratio plumbed pod / docker", p, b, plumbed_wall, base_wall),
        ("ratio atoll / docker (last)", a, e, atoll_wall, again_wall),
        ("drift: docker last / first", e, b, again_wall, base_wall),
    ):
        print(
            f"{label:28}{x['p50'] / y['p50']:8.2f}{x['p90'] / y['p90']:8.2f}{x['p99'] / y['p99']:8.2f}{xw / yw:8.2f}"
        )
    if modes:
        bridge = summary(modes["bridge"])["p50"]
        print("one container at a time, create + start, by network mode (p50 seconds, ratio to bridge)")
        for mode, values in modes.items():
            st = summary(values)
            print(f"  {mode:8}{st['p50']:8.3f}{st['p50'] / bridge:8.2f}  (n={len(values)})")
    print("where an Atoll pod's time goes (seconds; steps overlap: the agent starts --parallel at a time)")
    for label, values in steps.items():
        st = summary(values)
        print(f"  {label:52}{st['p50']:8.3f}{st['p90']:8.3f}{st['p99']:8.3f}")


if __name__ == "__main__":
    main()
