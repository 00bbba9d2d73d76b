#!/usr/bin/env python3
"""Time Scheduler.decide() on 1,000 hollow-shaped nodes against the algorithm it replaced.

Builds the NodeInfos bench/hollow.py's nodes give the scheduler (16 cores, 64 GiB, 110 pods,
Ready, a hostname label), then decides and assumes (NodeInfo.add, as _schedule does) pods of
one replication controller, one at a time, in three cases:

    plain      no requests (only spreading and the pod count tell nodes apart)
    requests   10m cpu and 16 MiB each, as bench/hollow.py's controller asks
    fill       1500m and 6 GiB each: nodes fill up, so later decisions walk past full
               nodes, and the last pods find no room (the reasons path)

The baseline is measured in the same run, on the same states: the same Scheduler with
memoize=False, which calls every filter and score for every node it examines, as decide()
did before nodes remembered their verdicts per pod shape. The new side is decide() with the
default plugins: these pods have no node selector, so it searches a tree of the remembered
verdicts (coordinator/scheduler/scoreindex.py) instead of walking the nodes. Before each pod is assumed both
decide from the same cache and the same round-robin start; the bench checks they agree
on where the next search starts, on the message when nothing fits, and that their nodes
score alike (ties may go either way; the new one's choice is assumed). Old and new alternate
pod by pod, so each runs on caches the other cooled, as decide() does between a coordinator's
other work: the new one timed alone comes out about a quarter faster.

    .venv/bin/python bench/scheduler_decide.py [--nodes 1000] [--pods 10000] [--case plain ...]
    .venv/bin/python bench/scheduler_decide.py --profile new   # cProfile of one side, top frames
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time

from common import summary  # type: ignore[import-not-found, unused-ignore]

from atoll import kinds
from atoll.v1 import meta_pb2, node_pb2, pod_pb2
from coordinator.objects.informer import Informer
from coordinator.objects.registry import Registry
from coordinator.scheduler import plugins
from coordinator.scheduler.nodeinfo import NodeInfo, PodFacts
from coordinator.scheduler.scheduler import Scheduler, nodes_to_find
from coordinator.store.memory import MemoryStore

CASES = {"plain": (0, 0), "requests": (10, 16 << 20), "fill": (1500, 6 << 30)}


def score(facts: PodFacts, info: NodeInfo) -> float:
    return sum(w * f(facts, info) for f, w in plugins.SCORES)


# -- the state: hollow nodes, a controller's pods -------------------------------------------------


def hollow_node(i: int) -> node_pb2.Node:
    n = node_pb2.Node()
    n.metadata.name = f"hollow-{i:05d}"
    n.metadata.labels["kubernetes.io/hostname"] = n.metadata.name
    alloc = n.status.allocatable
    alloc.cpu_millis, alloc.memory_bytes, alloc.pods = 16_000, 64 << 30, 110
    n.status.conditions.add(type="Ready", status=meta_pb2.CONDITION_STATUS_TRUE)
    return n


def replica(i: int, cpu: int, memory: int) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.namespace, p.metadata.name, p.metadata.uid = "default", f"hollow-{i:05d}", f"uid-{i}"
    p.metadata.labels["app"] = "hollow"
    p.metadata.owner_references.add(
        kind="ReplicationController", name="hollow", uid="rc-uid", controller=True
    )
    c = p.spec.containers.add(name="app", image="atoll/hollow:1.0")
    c.resources.requests.cpu_millis, c.resources.requests.memory_bytes = cpu, memory
    p.status.phase = pod_pb2.POD_PHASE_PENDING
    return p


def new_scheduler(nodes: int, memoize: bool = True) -> Scheduler:
    registry = Registry(MemoryStore())
    s = Scheduler(
        registry,
        Informer(registry, kinds.by_name("Pod")),
        Informer(registry, kinds.by_name("Node")),
        memoize=memoize,
    )
    for i in range(nodes):
        n = hollow_node(i)
        s.nodes[n.metadata.name] = NodeInfo(n)
    return s


def assume(s: Scheduler, pod: pod_pb2.Pod, where: str) -> None:
    """What _schedule does once decided: a bound copy, added to the node's info."""
    assumed = pod_pb2.Pod()
    assumed.CopyFrom(pod)
    assumed.spec.node_name = where
    s.nodes[where].add(assumed)


# -- the runs ---------------------------------------------------------------------------------------


def run_case(name: str, nodes: int, pods: int) -> dict[str, float]:
    cpu, memory = CASES[name]
    s = new_scheduler(nodes)
    plain = new_scheduler(0, memoize=False)
    plain.nodes = s.nodes  # the same NodeInfos: both decide on the same state
    old_us: list[float] = []
    new_us: list[float] = []
    add_us: list[float] = []
    ties = unschedulable = 0
    clock = time.perf_counter
    # The fill case asks for a few more pods than fit, so the last decisions find no room.
    extra = 20 if name == "fill" else 0
    for i in range(pods + extra):
        p = replica(i, cpu, memory)
        plain._start = s._start
        t0 = clock()
        old = plain.decide(p)
        t1 = clock()
        old_node, old_message, old_start = old.node, old.message, plain._start
        decision = s.decide(p)
        t2 = clock()
        old_us.append((t1 - t0) * 1e6)
        new_us.append((t2 - t1) * 1e6)
        where = decision.node
        if s._start != old_start:
            raise SystemExit(f"{name} pod {i}: next start {s._start}, baseline {old_start}")
        if (where is None) != (old_node is None) or decision.message != old_message:
            raise SystemExit(f"{name} pod {i}: {decision} against baseline {old_node!r} {old_message!r}")
        if where is None or old_node is None:
            unschedulable += 1
            continue
        if where != old_node:
            facts = PodFacts.of(p)
            mine, theirs = score(facts, s.nodes[where]), score(facts, s.nodes[old_node])
            if mine != theirs:
                raise SystemExit(f"{name} pod {i}: {where} scores {mine}, baseline's {old_node} {theirs}")
            ties += 1
        t3 = clock()
        assume(s, p, where)
        add_us.append((clock() - t3) * 1e6)
    old_mean, new_mean = statistics.fmean(old_us), statistics.fmean(new_us)
    new_p = summary(new_us)
    print(
        f"{name:9s} {pods + extra:6d} pods: old {old_mean:8.1f} µs/decide ({1e6 / old_mean:7.0f}/s)  "
        f"new {new_mean:7.1f} µs/decide ({1e6 / new_mean:7.0f}/s, p50 {new_p['p50']:.1f} "
        f"p99 {new_p['p99']:.1f})  new/old {new_mean / old_mean:.3f}  "
        f"assume {statistics.fmean(add_us):.1f} µs  [ties {ties}, unschedulable {unschedulable}]"
    )
    return {"old": old_mean, "new": new_mean}


def profile(side: str, name: str, nodes: int, pods: int) -> None:
    """cProfile one side alone on one case; prints the top frames by own time."""
    cpu, memory = CASES[name]
    s = new_scheduler(nodes, memoize=side == "new")

    def decide(p: pod_pb2.Pod) -> str | None:
        return s.decide(p).node

    prof = cProfile.Profile()
    for i in range(pods):
        p = replica(i, cpu, memory)
        prof.enable()
        where = decide(p)
        prof.disable()
        if where is not None:
            assume(s, p, where)
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--case", choices=sorted(CASES), action="append")
    parser.add_argument("--profile", choices=("old", "new"), help="cProfile one side instead")
    args = parser.parse_args()
    cases = args.case or list(CASES)
    print(
        f"machine: {os.cpu_count()} cores; {args.nodes} nodes, {nodes_to_find(args.nodes)} feasible "
        "nodes sought per pod; decide() alone is timed, old and new on the same states"
    )
    if args.profile:
        for name in cases:
            profile(args.profile, name, args.nodes, args.pods)
        return
    for name in cases:
        run_case(name, args.nodes, args.pods)


if __name__ == "__main__":
    main()
