"""decide() with the default plugins remembers, per node and pod shape, what the node-state filters
and the scores made of a node (NodeInfo.memo). These pin that it decides exactly as calling every
plugin on every node does: same node, same reasons, same round-robin start."""

from __future__ import annotations

import random

from atoll import kinds
from atoll.v1 import meta_pb2, node_pb2, pod_pb2
from coordinator.objects.informer import Informer
from coordinator.objects.registry import Registry
from coordinator.scheduler import plugins
from coordinator.scheduler.nodeinfo import (
    HostPort,
    NodeInfo,
    PodFacts,
    controller_of,
    label_key,
)
from coordinator.scheduler.scheduler import Scheduler, nodes_to_find
from coordinator.store.memory import MemoryStore
from tests.unit.test_scheduler import bind, node, pod, scheduler

VF = "atoll.io/sriov_ens1f0"


def with_vfs(p: pod_pb2.Pod, vfs: int) -> pod_pb2.Pod:
    p.spec.containers[0].resources.requests.extended[VF] = vfs
    return p


def test_only_the_default_plugins_are_memoized() -> None:
    assert sorted(f.__name__ for f in plugins.LIVE_FILTERS + plugins.NODE_STATE_FILTERS) == sorted(
        f.__name__ for f in plugins.FILTERS
    )
    assert scheduler()._memoize
    registry = Registry(MemoryStore())
    custom = Scheduler(
        registry,
        Informer(registry, kinds.by_name("Pod")),
        Informer(registry, kinds.by_name("Node")),
        filters=(plugins.node_ready,),
    )
    assert not custom._memoize
    custom.nodes["a"] = NodeInfo(node("a", cpu=100))
    assert custom.decide(pod("p", cpu=1000)).node == "a"  # resources_fit was left out
    assert not custom.nodes["a"].memo


def test_pod_facts_in_one_pass() -> None:
    p = pod("p", host_port=80, cpu=250, owner="rc-1")
    p.metadata.labels["app"] = "web"
    c2 = p.spec.containers.add(name="side", image="busybox")
    c2.resources.requests.cpu_millis, c2.resources.requests.memory_bytes = 100, 1 << 20
    c2.resources.requests.extended[VF] = 2
    c2.resources.requests.extended["zero.io/x"] = 0
    c2.ports.add(container_port=53, host_port=5353, protocol=meta_pb2.PROTOCOL_UDP, host_ip="10.0.0.1")
    c2.ports.add(container_port=54)
    p.spec.containers[0].resources.requests.extended[VF] = 1
    facts = PodFacts.of(p)
    assert (facts.cpu, facts.memory) == (350, 1 << 20)
    assert facts.extended == ((VF, 3),)  # summed by name, zeros dropped
    first = p.spec.containers[0].ports[0]
    assert list(facts.host_ports) == [
        HostPort(80, first.protocol, first.host_ip),
        HostPort(5353, meta_pb2.PROTOCOL_UDP, "10.0.0.1"),
    ]
    assert (facts.controller, facts.labels) == (controller_of(p), label_key(p))
    assert PodFacts.of(pod("bare")).extended == () and PodFacts.of(pod("bare")).host_ports == ()


def test_a_selector_is_checked_even_when_the_memo_is_warm() -> None:
    s = scheduler(node("a"), node("b", labels={"disk": "ssd"}), node("c"))
    for i in range(3):  # same shape as the pods below: the memo now holds every node
        assert s.decide(pod(f"warm-{i}", owner="rc")).node is not None
    assert s.decide(pod("ssd", owner="rc", selector={"disk": "ssd"})).node == "b"
    decision = s.decide(pod("hdd", owner="rc", selector={"disk": "hdd"}))
    assert decision.message == "0/3 nodes available: 3 node(s) didn't match the node selector"


def test_host_ports_and_extended_resources_still_turn_pods_away() -> None:
    s = scheduler(node("a"), node("b"))
    assert s.decide(pod("web-0", host_port=80)).node is not None  # warm
    bind(s, pod("web-a", host_port=80), "a")
    bind(s, pod("web-b", host_port=80), "b")
    assert s.decide(pod("web-1", host_port=80)).message == "0/2 nodes available: 2 hostPort 80/TCP in use"
    s.nodes["b"].remove(pod("web-b", host_port=80))
    assert s.decide(pod("web-2", host_port=80)).node == "b"
    assert s.decide(with_vfs(pod("vf"), 1)).message == f"0/2 nodes available: 2 insufficient {VF}"
    withvf = node("b")
    withvf.status.allocatable.extended[VF] = 1
    s.nodes["b"].set_node(withvf)
    assert s.decide(with_vfs(pod("vf"), 1)).node == "b"


def test_a_node_that_changes_is_judged_afresh() -> None:
    s = scheduler(node("a", cpu=1000), node("b", cpu=1000))
    assert s.decide(pod("p", cpu=600)).node is not None
    bind(s, pod("big-a", cpu=600), "a")
    bind(s, pod("big-b", cpu=600), "b")
    assert s.decide(pod("p", cpu=600)).message == "0/2 nodes available: 2 insufficient cpu"
    s.nodes["a"].set_node(node("a", cpu=2000))  # the node grew
    assert s.decide(pod("p", cpu=600)).node == "a"
    cordoned = node("a", cpu=2000)
    cordoned.spec.unschedulable = True
    s.nodes["a"].set_node(cordoned)  # a new Node, as the informer hands every change
    assert s.decide(pod("p", cpu=600)).message == (
        "0/2 nodes available: 1 insufficient cpu, 1 node(s) cordoned"
    )
    s.nodes["a"].set_node(node("a", ready=False, cpu=2000))
    assert "1 node(s) not ready" in s.decide(pod("p", cpu=600)).message


def test_ties_go_to_the_first_node_from_the_round_robin_start() -> None:
    s = scheduler(node("a"), node("b"), node("c"))
    s._start = 1
    assert s.decide(pod("p")).node == "b"
    assert s._start == 1  # 3 nodes, all examined: back where it started
    s._start = 2
    assert s.decide(pod("q")).node == "c"


def test_the_start_wraps_when_nodes_went_away() -> None:
    s = scheduler(*(node(f"n{i}") for i in range(10)))
    s._start = 9
    for name in ("n0", "n1", "n2"):
        del s.nodes[name]
    assert s.decide(pod("p")).node == "n5"  # 7 nodes left, all alike: the search starts at 9 % 7
    assert s._start == 2


def test_spreading_outweighs_balance() -> None:
    """A node with no replica of the controller wins over an emptier node that has one."""
    s = scheduler(node("a"), node("b"))
    bind(s, pod("r0", owner="rc", cpu=10), "a")
    bind(s, pod("other", owner="other-rc", cpu=3900), "b")  # b nearly full, but of another rc
    assert s.decide(pod("r1", owner="rc", cpu=10)).node == "b"
    assert s.decide(pod("loner", owner="other-rc", cpu=10)).node == "a"


def test_sampling_examines_as_many_nodes_as_before() -> None:
    s = scheduler(*(node(f"n{i:03d}", ready=i % 7 != 3) for i in range(200)))
    want = nodes_to_find(200)
    assert want == 100
    s.decide(pod("p"))
    # the search stops at the 100th ready node, having examined the not-ready ones before it
    examined = next(n for n in range(want, 200) if n - sum(1 for i in range(n) if i % 7 == 3) == want)
    assert s._start == examined > want


# -- the memo against every plugin on every node, on random clusters ---------------------------


def random_node(rng: random.Random, i: int) -> node_pb2.Node:
    n = node(
        f"n{i:03d}",
        ready=rng.random() > 0.05,
        cpu=rng.choice((500, 1000, 4000)),
        mem=rng.choice((1 << 30, 8 << 30)),
        labels={"disk": rng.choice(("ssd", "hdd"))},
    )
    n.status.allocatable.pods = rng.choice((0, 4, 110))
    if rng.random() < 0.3:
        n.status.allocatable.extended[VF] = rng.randint(0, 2)
    n.spec.unschedulable = rng.random() < 0.05
    return n


def random_pod(rng: random.Random, i: int) -> pod_pb2.Pod:
    p = pod(
        f"p{i}",
        host_port=rng.choice((0, 0, 0, 80, 443)),
        cpu=rng.choice((0, 10, 100, 400)),
        owner=rng.choice(("", "rc-a", "rc-b", "rc-c")),
        selector=rng.choice(({}, {}, {}, {"disk": "ssd"})),
    )
    p.metadata.labels["app"] = rng.choice(("web", "db"))
    p.spec.containers[0].resources.requests.memory_bytes = rng.choice((0, 64 << 20, 512 << 20))
    if rng.random() < 0.1:
        with_vfs(p, 1)
    return p


def test_the_memo_decides_as_every_plugin_on_every_node_does() -> None:
    rng = random.Random(7)
    protos = [random_node(rng, i) for i in range(150)]
    memo = scheduler(*protos)
    plain = scheduler(*(node_pb2.Node.FromString(n.SerializeToString()) for n in protos))
    plain._memoize = False
    assert memo._memoize
    bound: list[tuple[pod_pb2.Pod, str]] = []
    unschedulable = 0
    for i in range(600):
        p = random_pod(rng, i)
        got, want = memo.decide(p), plain.decide(p)
        assert got == want, i
        assert memo._start == plain._start, i
        if got.node is None:
            unschedulable += 1
        else:
            bind(memo, p, got.node)
            bind(plain, pod_pb2.Pod.FromString(p.SerializeToString()), got.node)
            bound.append((p, got.node))
        change = rng.random()
        if change < 0.2 and bound:  # a pod goes away
            gone, where = bound.pop(rng.randrange(len(bound)))
            memo.nodes[where].remove(gone)
            plain.nodes[where].remove(gone)
        elif change < 0.25:  # a node's status changes: readiness, size, cordon
            n = random_node(rng, rng.randrange(150))
            for s in (memo, plain):
                if n.metadata.name in s.nodes:
                    s.nodes[n.metadata.name].set_node(node_pb2.Node.FromString(n.SerializeToString()))
        elif change < 0.27:  # a node goes away (the search's start may now lie past the end)
            name = rng.choice(sorted(memo.nodes))
            for s in (memo, plain):
                s.nodes.pop(name)
            bound = [(b, where) for b, where in bound if where != name]
    assert 0 < unschedulable < 600 and len(bound) > 100


def test_a_pods_newer_version_holding_the_same_keeps_the_verdicts() -> None:
    s = scheduler(node("a", cpu=1000), node("b", cpu=1000))
    bind(s, pod("r0", owner="rc", cpu=100), "a")
    assert s.decide(pod("r1", owner="rc", cpu=100)).node == "b"
    info = s.nodes["a"]
    assert info.memo
    running = pod("r0", owner="rc", cpu=100)
    running.spec.node_name = "a"
    running.status.phase = pod_pb2.POD_PHASE_RUNNING
    info.add(running)  # its status update: the same requests
    assert info.memo and info.pods["default/r0"] is running and info.requested_cpu == 100
    bigger = pod("r0", owner="rc", cpu=700)
    bigger.spec.node_name = "a"
    info.add(bigger)  # requests changed: counted again, verdicts forgotten
    assert not info.memo and info.requested_cpu == 700
    info.remove(bigger)
    assert info.requested_cpu == 0 and not info.pods


def test_a_shapes_first_pod_is_decided_node_by_node_and_its_second_builds_the_tree() -> None:
    s = scheduler(*(node(f"n{i:03d}") for i in range(300)))
    assert s.decide(pod("first", owner="rc")).node == "n000"
    assert not s._indexes and all(not info.memo for info in list(s.nodes.values())[nodes_to_find(300) :])
    assert s.decide(pod("second", owner="rc")).node is not None and len(s._indexes) == 1


def test_a_node_replaced_by_an_equal_one_is_indexed_afresh() -> None:
    s = scheduler(node("a"), node("b"))
    for name in ("p0", "p1"):  # the shape's second pod builds its tree
        assert s.decide(pod(name, owner="rc", cpu=100)).node == "a"
    assert s._indexes
    s.nodes["a"] = NodeInfo(node("a"))  # the same by value, a new object
    bind(s, pod("full", owner="rc", cpu=4000), "a")  # seen only if the new object is indexed
    assert s.decide(pod("q", owner="rc", cpu=100)).node == "b"
