"""Scheduler decisions as data: filters, counted reasons, spreading, sampling."""

from __future__ import annotations

import asyncio
import threading

from atoll import kinds
from atoll.v1 import meta_pb2, node_pb2, pod_pb2
from coordinator.objects.informer import Informer
from coordinator.objects.registry import Registry
from coordinator.scheduler.nodeinfo import NodeInfo
from coordinator.scheduler.scheduler import Scheduler, nodes_to_find, unschedulable_message
from coordinator.store.memory import MemoryStore


def node(
    name: str,
    *,
    ready: bool = True,
    cpu: int = 4000,
    mem: int = 8 << 30,
    labels: dict[str, str] | None = None,
) -> node_pb2.Node:
    n = node_pb2.Node()
    n.metadata.name = name
    n.metadata.labels.update(labels or {})
    n.status.allocatable.cpu_millis, n.status.allocatable.memory_bytes, n.status.allocatable.pods = (
        cpu,
        mem,
        110,
    )
    n.status.conditions.add(
        type="Ready", status=meta_pb2.CONDITION_STATUS_TRUE if ready else meta_pb2.CONDITION_STATUS_UNKNOWN
    )
    return n


def pod(
    name: str, *, host_port: int = 0, cpu: int = 0, owner: str = "", selector: dict[str, str] | None = None
) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name, p.metadata.namespace, p.metadata.uid = name, "default", f"uid-{name}"
    if owner:
        p.metadata.owner_references.add(kind="ReplicationController", name=owner, uid=owner, controller=True)
    c = p.spec.containers.add(name="c", image="busybox")
    c.resources.requests.cpu_millis = cpu
    if host_port:
        c.ports.add(container_port=80, host_port=host_port, protocol=meta_pb2.PROTOCOL_TCP)
    p.spec.node_selector.update(selector or {})
    return p


def scheduler(*nodes: node_pb2.Node) -> Scheduler:
    registry = Registry(MemoryStore())
    s = Scheduler(
        registry, Informer(registry, kinds.by_name("Pod")), Informer(registry, kinds.by_name("Node"))
    )
    for n in nodes:
        s.nodes[n.metadata.name] = NodeInfo(n)
    return s


def bind(s: Scheduler, p: pod_pb2.Pod, where: str) -> None:
    p.spec.node_name = where
    s.nodes[where].add(p)


def test_hostport_conflicts_are_counted() -> None:
    s = scheduler(node("a"), node("b"), node("c"))
    for i, where in enumerate("abc"):
        bind(s, pod(f"web-{i}", host_port=80), where)
    decision = s.decide(pod("web-3", host_port=80))
    assert decision.node is None
    assert decision.message == "0/3 nodes available: 3 hostPort 80/TCP in use"


def test_mixed_reasons_and_fit() -> None:
    cordoned = node("c", labels={"disk": "ssd"})
    cordoned.spec.unschedulable = True
    s = scheduler(node("a", ready=False), node("b", cpu=500), cordoned)
    decision = s.decide(pod("p", cpu=1000))
    assert (
        decision.message == "0/3 nodes available: 1 insufficient cpu, 1 node(s) cordoned, 1 node(s) not ready"
    )
    s.nodes["c"].set_node(node("c", labels={"disk": "ssd"}))  # uncordoned: a new Node, as informers hand it
    assert s.decide(pod("p", cpu=1000, selector={"disk": "ssd"})).node == "c"
    assert "2 node(s) didn't match the node selector" in s.decide(pod("p", selector={"disk": "hdd"})).message


def test_spreads_replicas_of_one_controller() -> None:
    s = scheduler(node("a"), node("b"), node("c"))
    placed = []
    for i in range(6):
        p = pod(f"r{i}", owner="rc-1")
        where = s.decide(p).node
        assert where is not None
        bind(s, p, where)
        placed.append(where)
    assert sorted(placed) == ["a", "a", "b", "b", "c", "c"]


def test_sampling_for_large_clusters() -> None:
    assert nodes_to_find(50) == 50
    assert nodes_to_find(1000) == 420
    assert nodes_to_find(5000) == 500
    assert unschedulable_message(0, {}) == "0/0 nodes available: no nodes are registered"


class _NoStore:
    """A store that must not be touched: deciding is pure CPU work on the scheduler's caches."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"decide() touched the store ({name})")


def test_decisions_need_neither_the_store_nor_an_event_loop() -> None:
    registry = Registry(_NoStore())  # type: ignore[arg-type]
    s = Scheduler(registry, Informer(registry, POD), Informer(registry, NODE))
    s.nodes["a"] = NodeInfo(node("a"))
    got: list[object] = []
    # A plain thread has no event loop: decide() must not need one (it runs between awaits).
    worker = threading.Thread(target=lambda: got.append(s.decide(pod("p")).node))
    worker.start()
    worker.join(5)
    assert got == ["a"]


# -- the loop: binding, rolling back, retrying on node events --------------------------------------

POD = kinds.by_name("Pod")
NODE = kinds.by_name("Node")


class Loop:
    """A scheduler on a real registry over the memory store, with live informers."""

    def __init__(self, retry_interval: float = 1000.0) -> None:
        self.registry = Registry(MemoryStore())
        self.pods = Informer(self.registry, POD)
        self.nodes = Informer(self.registry, NODE)
        self.scheduler = Scheduler(self.registry, self.pods, self.nodes, retry_interval=retry_interval)
        self.attempts: list[str] = []  # what each attempt came to, as metrics are told
        self.scheduler.on_attempt = lambda result, seconds: self.attempts.append(result)
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Loop:
        self.tasks = [asyncio.create_task(i.run(self.stop)) for i in (self.pods, self.nodes)]
        await asyncio.wait_for(asyncio.gather(self.pods.synced.wait(), self.nodes.synced.wait()), 5)
        self.tasks.append(asyncio.create_task(self.scheduler.run(self.stop)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def bound_to(self, name: str, timeout: float = 5) -> str:
        async with asyncio.timeout(timeout):
            while True:
                got = await self.registry.get(POD, "default", name)
                if got.spec.node_name:  # type: ignore[attr-defined]
                    return str(got.spec.node_name)  # type: ignore[attr-defined]
                await asyncio.sleep(0.01)


async def test_an_unschedulable_pod_is_retried_when_a_node_comes_not_on_the_timer() -> None:
    async with Loop(retry_interval=1000.0) as loop:
        await loop.registry.create(pod("waits"))

        for _ in range(500):  # no node: unschedulable, and the timer is 1000 s away
            if "default/waits" in loop.scheduler._unschedulable:
                break
            await asyncio.sleep(0.01)
        assert "default/waits" in loop.scheduler._unschedulable
        await loop.registry.create(node("late"))
        assert await loop.bound_to("waits") == "late"
        for _ in range(100):  # the bind's result is reported once it has landed
            if "scheduled" in loop.attempts:
                break
            await asyncio.sleep(0.01)
        assert loop.attempts[0] == "unschedulable" and loop.attempts[-1] == "scheduled"
        assert loop.attempts.count("scheduled") == 1 and "error" not in loop.attempts
        assert loop.scheduler.bound == 1


async def test_a_bind_that_conflicts_gives_the_assumed_resources_back() -> None:
    async with Loop() as loop:
        await loop.registry.create(node("a", cpu=1000))
        await loop.registry.create(node("b", cpu=1000))
        await asyncio.sleep(0)
        s = loop.scheduler
        p = await loop.registry.create(pod("raced", cpu=800))
        assumed = pod_pb2.Pod()
        assumed.CopyFrom(p)
        assumed.spec.node_name = "a"
        s.nodes["a"].add(assumed)  # what _schedule does before binding
        assert s.nodes["a"].requested_cpu == 800

        def elsewhere(obj: object) -> bool:  # someone else binds it first
            obj.spec.node_name = "b"  # type: ignore[attr-defined]
            return True

        await loop.registry.guaranteed_update(POD, "default", "raced", elsewhere)
        await s._bind_slots.acquire()  # _bind releases the slot _schedule took
        await s._bind(assumed, "a", 0.0)
        assert loop.attempts == ["error"]  # a bind that lost the race: no pod bound
        assert s.bound == 0
        assert s.nodes["a"].requested_cpu == 0 and "default/raced" not in s.nodes["a"].pods
        another = await loop.registry.create(pod("fits-now", cpu=800))
        assert await loop.bound_to(another.metadata.name) in ("a", "b")  # type: ignore[attr-defined]
