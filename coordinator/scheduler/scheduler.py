"""The scheduler loop: pick a node for every unbound pod and bind it.

Pods are scheduled one at a time from a queue, against a cache of nodes and of
what their pods hold (fed by informers). A bound pod is "assumed" in the cache
at once, so the next decision already sees it, while the bind itself (a
compare-and-swap on the pod) completes in the background; many binds in
flight commit together in the store. A pod that fits nowhere is marked
Unschedulable with a counted reason and waits until the cluster changes
(a node appears or changes, a pod goes away); a periodic retry is the safety net.

For large clusters only part of the nodes is examined per pod, as Kubernetes'
percentageOfNodesToScore does, starting where the previous search stopped.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import Message

from atoll import errors, kinds, logs
from atoll.v1 import meta_pb2, node_pb2, pod_pb2
from coordinator.objects.events import EventRecorder
from coordinator.objects.informer import Informer
from coordinator.objects.registry import Registry
from coordinator.scheduler import plugins
from coordinator.scheduler.nodeinfo import NodeInfo, PodFacts, holds_resources, pod_key
from coordinator.scheduler.scoreindex import ScoreIndex

log = logging.getLogger(__name__)

# The Scheduled and FailedScheduling events' source, as Kubernetes names its components.
COMPONENT = "scheduler"

POD = kinds.by_name("Pod")
# Binds are store writes the scheduler does not wait for one by one. Each one in flight is a task
# in the event loop, and heartbeats and API reads wait behind every ready task in a turn: with
# 512, a 10,000-pod burst on 1,000 hollow nodes (bench/hollow.py) cost 636-1,014 heartbeat
# deadlines per run; with 64, 0-128, and API read p99 1.9 s instead of 4.6 s, for about 25 % fewer
# pods bound per second (290 against 400). Liveness first.
MAX_BINDS_IN_FLIGHT = 64
# Pod shapes remembered (scheduler tokens, verdicts per node): a few controllers scale at once;
# past this many, start over rather than grow without bound.
MAX_SHAPES = 64


@dataclass(frozen=True)
class Decision:
    node: str | None
    message: str = ""


def nodes_to_find(total: int) -> int:
    if total <= 100:
        return total
    percentage = max(5, 50 - total // 125)
    return max(100, total * percentage // 100)


def unschedulable_message(total: int, reasons: dict[str, int]) -> str:
    if total == 0:
        return "0/0 nodes available: no nodes are registered"
    parts = ", ".join(
        f"{count} {reason}" for reason, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    return f"0/{total} nodes available: {parts}"


def is_pending_unbound(pod: pod_pb2.Pod) -> bool:
    return not pod.spec.node_name and pod.status.phase in (
        pod_pb2.POD_PHASE_PENDING,
        pod_pb2.POD_PHASE_UNSPECIFIED,
    )


class Scheduler:
    def __init__(
        self,
        registry: Registry,
        pods: Informer,
        nodes: Informer,
        *,
        recorder: EventRecorder | None = None,
        clock: Callable[[], float] = time.time,
        retry_interval: float = 10.0,
        filters: tuple[plugins.Filter, ...] = plugins.FILTERS,
        scores: tuple[tuple[plugins.Score, float], ...] = plugins.SCORES,
        memoize: bool = True,
    ) -> None:
        self._registry = registry
        self._pods = pods
        self._nodes = nodes
        self._clock = clock
        self._recorder = recorder
        self._retry_interval = retry_interval
        self._filters = filters
        self._scores = scores
        # Only the default plugins are known to split into node-state and live filters.
        # (memoize=False: every plugin called for every node, as bench/scheduler_decide.py's baseline.)
        self._memoize = memoize and filters == plugins.FILTERS and scores == plugins.SCORES
        self._shapes: dict[tuple[object, ...], object] = {}
        # Per pod shape, every node's verdict in a tree (scoreindex), over the node order they
        # were built on; rebuilt when the nodes are not those any more.
        self._indexes: dict[object, ScoreIndex] = {}
        self._indexed: list[NodeInfo] = []
        # Shapes decided once, node by node: a tree judges every node to be built, a search node
        # by node stops at the nodes it wants, so a shape gets its tree when it comes again
        # (every single-replica controller is a shape of its own).
        self._seen_once: set[object] = set()
        self.nodes: dict[str, NodeInfo] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._queued: set[str] = set()
        self._unschedulable: dict[str, str] = {}
        self._wakeup = asyncio.Event()
        self._start = 0
        self._binds: set[asyncio.Task[None]] = set()
        self._bind_slots = asyncio.Semaphore(MAX_BINDS_IN_FLIGHT)
        self.bound = 0
        # Told of every attempt and how long it took (metrics): "unschedulable" once decided,
        # "scheduled" or "error" once the bind landed or failed.
        self.on_attempt: Callable[[str, float], None] = lambda result, seconds: None
        pods.add_handler(self._on_pod)
        nodes.add_handler(self._on_node)

    # -- informer handlers -------------------------------------------------------------------

    def _enqueue(self, key: str) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._queue.append(key)
            self._wakeup.set()

    def _retry_unschedulable(self) -> None:
        for key in list(self._unschedulable):
            self._enqueue(key)

    def _on_node(self, type_: str, obj: Message, old: Message | None) -> None:
        assert isinstance(obj, node_pb2.Node)
        name = obj.metadata.name
        if type_ == "DELETED":
            self.nodes.pop(name, None)
            return
        info = self.nodes.get(name)
        if info is None:
            info = self.nodes[name] = NodeInfo(obj)
            for pod in self._pods.cache.values():
                assert isinstance(pod, pod_pb2.Pod)
                if pod.spec.node_name == name and holds_resources(pod):
                    info.add(pod)
            self._retry_unschedulable()
            return
        info.set_node(obj)
        if old is None or _schedulable_view(obj) != _schedulable_view(old):  # type: ignore[arg-type]
            self._retry_unschedulable()

    def _on_pod(self, type_: str, obj: Message, old: Message | None) -> None:
        assert isinstance(obj, pod_pb2.Pod)
        key = pod_key(obj)
        if old is not None:
            assert isinstance(old, pod_pb2.Pod)
            old_info = self.nodes.get(old.spec.node_name)
            if old_info is not None and (type_ == "DELETED" or not holds_resources(obj)):
                old_info.remove(old)
        if type_ == "DELETED":
            self._unschedulable.pop(key, None)
            if old is not None and holds_resources(old):
                self._retry_unschedulable()
            return
        if holds_resources(obj):
            info = self.nodes.get(obj.spec.node_name)
            if info is not None:
                info.add(obj)
            self._unschedulable.pop(key, None)
        elif is_pending_unbound(obj) and key not in self._unschedulable:
            self._enqueue(key)
        elif old is not None and holds_resources(old):
            self._retry_unschedulable()  # a pod finished and freed its node

    # -- deciding -------------------------------------------------------------------------------

    def decide(self, pod: pod_pb2.Pod) -> Decision:
        facts = PodFacts.of(pod)
        infos = list(self.nodes.values())
        total = len(infos)
        # Round-robin from where the last search stopped (modulo: nodes may have gone since).
        start = self._start % total if total else 0
        if not self._memoize:
            return self._decide_plainly(facts, infos[start:] + infos[:start])
        # The default plugins: per pod shape, what they make of each node is remembered until the
        # node changes (NodeInfo.memo); a pod without a node selector is decided from a tree of
        # those verdicts (scoreindex), one with a selector node by node.
        want = nodes_to_find(total)
        token = self._token(facts)
        index = None if facts.node_selector else self._index(token, facts, infos)
        if index is None:
            best = self._search_node_by_node(facts, token, infos[start:] + infos[:start], start, want)
        else:  # the same search, in a tree (scoreindex) rather than node by node
            at, examined = index.search(start, want)
            self._start = (start + examined) % total if total else 0
            best = infos[at] if at >= 0 else None
        if best is None:  # every node was examined and none fits: say why, filter by filter
            reasons = collections.Counter(r for info in infos if (r := self._reason(facts, info)) is not None)
            return Decision(None, unschedulable_message(total, reasons))
        return Decision(best.name)

    def _search_node_by_node(
        self, facts: PodFacts, token: object, order: list[NodeInfo], start: int, want: int
    ) -> NodeInfo | None:
        # Per node a memo lookup for the node-state filters and the score (NodeInfo.memo; a miss
        # runs them, on the one node changed since the last pod of this shape), then the live
        # filters inlined: plugins.node_ready, node_schedulable (through info.spec, which is
        # info.node.spec) and node_selector. Same nodes examined, same stop, same first-of-the-
        # best as max() over the feasible.
        total = len(order)
        selector = facts.node_selector
        node_selector = plugins.node_selector
        best: NodeInfo | None = None
        best_score = -math.inf  # below every score: the first feasible node is the first best
        left = want
        skipped = 0
        for info in order:
            score = self._verdict(token, facts, info)
            if score is None or (selector and node_selector(facts, info) is not None):
                skipped += 1
                continue
            if score > best_score:
                best, best_score = info, score
            left -= 1
            if not left:
                break
        if total:
            self._start = (start + want - left + skipped) % total  # the nodes examined
        return best

    @staticmethod
    def _verdict(token: object, facts: PodFacts, info: NodeInfo) -> float | None:
        """What a pod of this shape without a node selector makes of the node: None if it cannot
        go there (not Ready, cordoned, turned away by plugins.NODE_STATE_FILTERS), else its
        weighted score (remembered in NodeInfo.memo)."""
        if not info.ready or info.spec.unschedulable:
            return None
        try:
            return info.memo[token]
        except KeyError:
            if len(info.memo) >= MAX_SHAPES:
                info.memo.clear()
            score = info.memo[token] = plugins.fit_and_score(facts, info)
            return score

    def _index(self, token: object, facts: PodFacts, infos: list[NodeInfo]) -> ScoreIndex | None:
        """The shape's tree over `infos`; None for a shape's first pod (decided node by node)."""
        if infos != self._indexed:  # nodes came, went or were replaced: new positions
            self._indexes.clear()
            self._indexed = infos
            for slot, info in enumerate(infos):
                info.slot, info.changed = slot, self._node_changed
        index = self._indexes.get(token)
        if index is None:
            if token not in self._seen_once:
                self._seen_once.add(token)
                return None
            index = self._indexes[token] = ScoreIndex(infos, lambda info: self._verdict(token, facts, info))
        return index

    def _node_changed(self, info: NodeInfo) -> None:
        slot = info.slot
        if 0 <= slot < len(self._indexed) and self._indexed[slot] is info:
            for index in self._indexes.values():
                index.stale.add(slot)

    def _token(self, facts: PodFacts) -> object:
        """One token per pod shape, for NodeInfo.memo: an identity-hashed key costs less to look
        up 420 times than the shape's tuple."""
        shape = facts.shape()
        token = self._shapes.get(shape)
        if token is None:
            if len(self._shapes) >= MAX_SHAPES:
                self._shapes.clear()  # the nodes' memos forget dropped tokens as they change or fill
                self._indexes.clear()
                self._seen_once.clear()
            token = self._shapes[shape] = object()
        return token

    def _reason(self, facts: PodFacts, info: NodeInfo) -> str | None:
        return next((r for f in self._filters if (r := f(facts, info)) is not None), None)

    def _decide_plainly(self, facts: PodFacts, order: list[NodeInfo]) -> Decision:
        """decide() for filters and scores other than the defaults: no memo, every plugin called."""
        total = len(order)
        want = nodes_to_find(total)
        feasible: list[NodeInfo] = []
        reasons: dict[str, int] = collections.Counter()
        examined = 0
        for info in order:
            examined += 1
            reason = self._reason(facts, info)
            if reason is None:
                feasible.append(info)
                if len(feasible) >= want:
                    break
            else:
                reasons[reason] += 1
        if total:
            self._start = (self._start + examined) % total
        if not feasible:
            return Decision(None, unschedulable_message(total, reasons))
        best = max(feasible, key=lambda info: sum(w * score(facts, info) for score, w in self._scores))
        return Decision(best.name)

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self._pods.synced.wait()
        await self._nodes.synced.wait()
        next_retry = self._clock() + self._retry_interval
        loop = asyncio.get_running_loop()
        last_yield = loop.time()
        while not stop.is_set():
            while self._queue:
                key = self._queue.popleft()
                self._queued.discard(key)
                namespace, _, name = key.partition("/")
                pod = self._pods.get(namespace, name)
                if isinstance(pod, pod_pb2.Pod) and is_pending_unbound(pod):
                    await self._schedule(pod)
                if loop.time() - last_yield > 0.005:
                    await asyncio.sleep(0)  # let informers and the API breathe every 5 ms
                    last_yield = loop.time()
            if self._clock() >= next_retry:
                self._retry_unschedulable()
                next_retry = self._clock() + self._retry_interval
                continue
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), max(0.1, next_retry - self._clock()))
            except TimeoutError:
                pass
        await asyncio.gather(*self._binds, return_exceptions=True)

    async def _schedule(self, pod: pod_pb2.Pod) -> None:
        started = time.perf_counter()
        decision = self.decide(pod)
        key = pod_key(pod)
        if decision.node is None:
            self.on_attempt("unschedulable", time.perf_counter() - started)
            if self._unschedulable.get(key) != decision.message:
                self._unschedulable[key] = decision.message
                await self._mark_unschedulable(pod, decision.message)
            else:
                self._unschedulable[key] = decision.message
            return
        self._unschedulable.pop(key, None)
        assumed = pod_pb2.Pod()
        assumed.CopyFrom(pod)
        assumed.spec.node_name = decision.node
        self.nodes[decision.node].add(assumed)
        await self._bind_slots.acquire()
        task = asyncio.create_task(self._bind(assumed, decision.node, started))
        self._binds.add(task)
        task.add_done_callback(self._binds.discard)

    async def _bind(self, assumed: pod_pb2.Pod, node: str, started: float) -> None:
        uid = assumed.metadata.uid

        def bind(obj: Message) -> bool:
            assert isinstance(obj, pod_pb2.Pod)
            if obj.metadata.uid != uid or obj.spec.node_name:
                raise errors.Conflict("pod was deleted, replaced or bound meanwhile")
            obj.spec.node_name = node
            _set_scheduled(obj, meta_pb2.CONDITION_STATUS_TRUE, "", f"bound to {node}", self._clock())
            obj.status.reason, obj.status.message = "", ""
            return True

        try:
            bound = await self._registry.guaranteed_update(
                POD, assumed.metadata.namespace, assumed.metadata.name, bind
            )
            self.bound += 1
            self.on_attempt("scheduled", time.perf_counter() - started)
            if self._recorder is not None:
                self._recorder.record(
                    bound,
                    "Normal",
                    "Scheduled",
                    f"Successfully assigned {pod_key(assumed)} to {node}",
                    component=COMPONENT,
                )
            log.debug(
                "bound pod %s to %s", pod_key(assumed), node, extra=logs.pod(assumed.metadata, node=node)
            )
        except errors.AtollError as exc:
            self.on_attempt("error", time.perf_counter() - started)
            log.info(
                "binding pod %s to %s failed: %s",
                pod_key(assumed),
                node,
                exc,
                extra=logs.pod(assumed.metadata, node=node),
            )
            info = self.nodes.get(node)
            if info is not None:
                info.remove(assumed)
            pod = self._pods.get(assumed.metadata.namespace, assumed.metadata.name)
            if isinstance(pod, pod_pb2.Pod) and is_pending_unbound(pod):
                self._enqueue(pod_key(pod))
        finally:
            self._bind_slots.release()

    async def _mark_unschedulable(self, pod: pod_pb2.Pod, message: str) -> None:
        uid = pod.metadata.uid

        def mark(obj: Message) -> bool:
            assert isinstance(obj, pod_pb2.Pod)
            if obj.metadata.uid != uid or obj.spec.node_name:
                return False
            if obj.status.reason == "Unschedulable" and obj.status.message == message:
                return False
            obj.status.phase = pod_pb2.POD_PHASE_PENDING
            obj.status.reason, obj.status.message = "Unschedulable", message
            _set_scheduled(obj, meta_pb2.CONDITION_STATUS_FALSE, "Unschedulable", message, self._clock())
            return True

        try:
            await self._registry.guaranteed_update(POD, pod.metadata.namespace, pod.metadata.name, mark)
            log.info("pod %s unschedulable: %s", pod_key(pod), message, extra=logs.pod(pod.metadata))
            if self._recorder is not None:
                self._recorder.record(pod, "Warning", "FailedScheduling", message, component=COMPONENT)
        except errors.AtollError as exc:
            log.debug(
                "marking pod %s unschedulable failed: %s", pod_key(pod), exc, extra=logs.pod(pod.metadata)
            )


def _set_scheduled(
    pod: pod_pb2.Pod, status: meta_pb2.ConditionStatus, reason: str, message: str, now: float
) -> None:
    for cond in pod.status.conditions:
        if cond.type == "PodScheduled":
            if cond.status != status:
                cond.last_transition_time.FromNanoseconds(int(now * 1e9))
            cond.status, cond.reason, cond.message = status, reason, message
            return
    cond = pod.status.conditions.add(type="PodScheduled", status=status, reason=reason, message=message)
    cond.last_transition_time.FromNanoseconds(int(now * 1e9))


def _schedulable_view(node: node_pb2.Node) -> tuple[object, ...]:
    ready = next((c.status for c in node.status.conditions if c.type == "Ready"), None)
    alloc = node.status.allocatable
    return (
        ready,
        node.spec.unschedulable,
        tuple(sorted(node.metadata.labels.items())),
        alloc.cpu_millis,
        alloc.memory_bytes,
        alloc.pods,
        tuple(sorted(alloc.extended.items())),
    )
