"""Assignment deltas: what the coordinator's tracker builds for a watch that accepts them, and the
whole assignment an agent makes of one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from google.protobuf.message import Message

from agent.assignmentfetch import with_delta
from atoll import kinds
from atoll.v1 import node_api_pb2, pod_pb2
from coordinator.api.node import assignments
from coordinator.api.node.assignments import AssignmentTracker
from coordinator.objects.informer import Informer
from coordinator.objects.registry import Registry
from coordinator.store.memory import MemoryStore

POD = kinds.by_name("Pod")


class Pods:
    """The pod informer as the tracker uses it: a revision and handlers."""

    def __init__(self) -> None:
        self.revision = 1
        self.handlers: list[Callable[[str, Message, Message | None], None]] = []

    def add_handler(self, handler: Callable[[str, Message, Message | None], None]) -> None:
        self.handlers.append(handler)

    def emit(self, type_: str, pod: pod_pb2.Pod, old: pod_pb2.Pod | None = None) -> None:
        self.revision += 1
        pod.metadata.resource_version = self.revision
        for handler in self.handlers:
            handler(type_, pod, old)

    def relist(self, revision: int, listed: list[pod_pb2.Pod]) -> None:
        """What a (restarted) informer's list at `revision` emits: every pod, at that revision."""
        self.revision = revision
        for p in listed:
            for handler in self.handlers:
                handler("ADDED", p, None)


def pod(name: str, node: str = "n1", generation: int = 1, image: str = "busybox") -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.namespace, p.metadata.name, p.metadata.uid = "default", name, f"uid-{name}"
    p.metadata.generation = generation
    p.spec.node_name = node
    p.spec.containers.add(name="main", image=image)
    return p


def names(a: node_api_pb2.Assignment) -> list[str]:
    return sorted(p.metadata.name for p in a.pods)


def test_a_delta_brings_what_changed_since_its_base() -> None:
    pods = Pods()
    tracker = AssignmentTracker(pods)  # type: ignore[arg-type]
    pods.emit("ADDED", pod("a"))
    first = base = tracker.generation("n1")
    pods.emit("ADDED", pod("b"))
    pods.emit("ADDED", pod("c", node="n2"))  # another node's
    pods.emit("MODIFIED", pod("a", generation=2, image="nginx"), pod("a"))
    running = pod("b")
    running.status.phase = pod_pb2.POD_PHASE_RUNNING
    pods.emit("MODIFIED", running, pod("b"))  # a status update changes no assignment
    delta = tracker.delta("n1", base)
    assert delta is not None and delta.delta and delta.base_generation == base
    assert delta.generation == tracker.generation("n1") and names(delta) == ["a", "b"]
    assert not delta.removed_uids
    assert next(p for p in delta.pods if p.metadata.name == "a").spec.containers[0].image == "nginx"

    base = delta.generation
    pods.emit("DELETED", pod("b"), pod("b"))
    delta = tracker.delta("n1", base)
    assert delta is not None and list(delta.removed_uids) == ["uid-b"] and not delta.pods
    since_first = tracker.delta("n1", first)  # both changes, from an older base, in one delta
    assert since_first is not None and names(since_first) == ["a"]
    assert list(since_first.removed_uids) == ["uid-b"]


def test_no_delta_from_before_what_is_remembered_or_too_large_for_a_part() -> None:
    pods = Pods()
    tracker = AssignmentTracker(pods)  # type: ignore[arg-type]
    start = tracker.generation("n1")
    assert tracker.delta("n1", start - 1) is None  # from before the node was known
    assert tracker.delta("n1", start + 5) is None  # from a generation not reached
    for i in range(assignments.MAX_CHANGES + 1):
        pods.emit("ADDED", pod(f"p{i}"))
    assert tracker.delta("n1", start) is None  # the first change is forgotten
    assert tracker.delta("n1", start + 1) is not None
    small = AssignmentTracker(pods, max_bytes=200)  # type: ignore[arg-type]
    base = small.generation("n1")
    pods.emit("ADDED", pod("x", image="y" * 300))
    assert small.delta("n1", base) is None  # the whole assignment, in parts, instead


def test_an_agent_makes_the_whole_assignment_of_a_delta() -> None:
    desired = {p.metadata.uid: p for p in (pod("a"), pod("b"), pod("c"))}
    delta = node_api_pb2.Assignment(node_name="n1", generation=9, delta=True, base_generation=5)
    delta.pods.extend([pod("b", generation=2, image="nginx"), pod("d")])
    delta.removed_uids.append("uid-c")
    whole = with_delta(desired, delta)
    assert not whole.delta and whole.generation == 9 and whole.node_name == "n1"
    assert names(whole) == ["a", "b", "d"]
    assert next(p for p in whole.pods if p.metadata.name == "b").spec.containers[0].image == "nginx"


def test_a_pod_made_again_under_its_name_replaces_the_old_uid() -> None:
    pods = Pods()
    tracker = AssignmentTracker(pods)  # type: ignore[arg-type]
    pods.emit("ADDED", pod("a"))
    base = tracker.generation("n1")
    again = pod("a")
    again.metadata.uid = "uid-a-2"  # deleted and created again while the informer relisted
    pods.emit("MODIFIED", again, pod("a"))
    assert [p.metadata.uid for p in tracker.assignment("n1").pods] == ["uid-a-2"]
    delta = tracker.delta("n1", base)
    assert delta is not None and list(delta.removed_uids) == ["uid-a"]
    assert [p.metadata.uid for p in delta.pods] == ["uid-a-2"]


def test_a_restarted_coordinator_numbers_a_node_past_the_earlier_process() -> None:
    pods = Pods()
    earlier = AssignmentTracker(pods)  # type: ignore[arg-type]
    a, b = pod("a"), pod("b")
    pods.emit("ADDED", a)
    pods.emit("ADDED", b)
    sent = earlier.assignment("n1")  # the agent runs a and b
    pods.emit("DELETED", b, b)  # the last change before the restart: a deletion, never sent
    assert earlier.generation("n1") == pods.revision > sent.generation

    # The restart: a new tracker, fed by its informer's list at the store's revision.
    later = AssignmentTracker(pods)  # type: ignore[arg-type]
    pods.relist(pods.revision, [a])
    whole = later.assignment("n1")
    assert whole.generation > sent.generation and names(whole) == ["a"]  # the agent takes it
    # Nothing changed meanwhile: the same number, for the same pods.
    again = AssignmentTracker(pods)  # type: ignore[arg-type]
    pods.relist(pods.revision, [a])
    assert again.assignment("n1") == whole


def test_changes_at_one_revision_share_a_number_until_it_is_read() -> None:
    pods = Pods()
    tracker = AssignmentTracker(pods)  # type: ignore[arg-type]
    pods.relist(40, [pod("a"), pod("b"), pod("c", node="n2")])  # a first pod on a fresh node, too
    assert tracker.generation("n1") == tracker.generation("n2") == 40  # the list's revision
    sent = tracker.assignment("n1")
    assert names(sent) == ["a", "b"]
    extra = pod("d")
    for handler in pods.handlers:  # one more change at the same revision (an etcd transaction)
        handler("ADDED", extra, None)
    assert tracker.generation("n1") == 41  # a number the agent has not had for other pods
    delta = tracker.delta("n1", sent.generation)
    assert delta is not None and names(delta) == ["d"]
    pods.emit("ADDED", pod("e"))  # revision 41, which the generation already is, and was read
    assert tracker.generation("n1") == 42


class Process:
    """One coordinator process as the assignments see it: the real informer and a tracker on a
    store that outlives it."""

    def __init__(self, registry: Registry) -> None:
        self.stop = asyncio.Event()
        self.informer = Informer(registry, POD)
        self.tracker = AssignmentTracker(self.informer)
        self.task = asyncio.create_task(self.informer.run(self.stop))

    async def caught_up(self, registry: Registry) -> None:
        await asyncio.wait_for(self.informer.synced.wait(), 5)
        for _ in range(100):
            if self.informer.revision >= registry.store.revision:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the informer did not catch up")

    async def crash(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_a_restart_after_an_unsent_deletion_through_the_real_informer() -> None:
    registry = Registry(MemoryStore())
    for name in ("c", "b", "a"):  # the list meets them in key order: a, b, c
        bound = pod(name)
        bound.metadata.uid = ""
        await registry.create(bound)
    earlier = Process(registry)
    await earlier.caught_up(registry)
    sent = earlier.tracker.assignment("n1")  # the agent runs a, b and c
    await registry.delete(POD, "default", "c")
    await earlier.caught_up(registry)
    told = earlier.tracker.generation("n1")  # what its heartbeats said, never pushed
    await earlier.crash()

    later = Process(registry)
    await later.caught_up(registry)
    whole = later.tracker.assignment("n1")
    assert names(sent) == ["a", "b", "c"] and names(whole) == ["a", "b"]
    assert whole.generation > sent.generation and whole.generation >= told
    await later.crash()
