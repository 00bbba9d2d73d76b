"""PodManager: the agent's sync loop over all pods.

Level-triggered, like kubelet's syncLoop. Three things wake a pod's worker:
a new desired set from the coordinator (diffed into added, removed, updated
and unchanged by uid and generation), the relister seeing its containers
change (the PLEG), and the end of a backoff. A slower full resync visits every
pod as a safety net. Each pod has at most one worker at a time; workers run
concurrently under a bound, so one slow pod never holds up the others.

Removal needs an authoritative desired set: after a restart the agent runs
with the set it persisted, which may restart crashed containers but never
removes anything, until the coordinator has spoken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from agent.pods import render
from agent.pods.syncer import PodSyncer
from agent.runtime.base import ContainerRuntime, RuntimeError_
from atoll import errors, logs
from atoll.aio import wait_or_stop
from atoll.v1 import pod_pb2

log = logging.getLogger(__name__)


class StatusSink(Protocol):
    def update(self, pod: pod_pb2.Pod, status: pod_pb2.PodStatus) -> None: ...

    def forget(self, uid: str) -> None: ...


@dataclass
class DesiredDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def diff_desired(current: dict[str, pod_pb2.Pod], new: dict[str, pod_pb2.Pod]) -> DesiredDiff:
    d = DesiredDiff()
    for uid, pod in new.items():
        old = current.get(uid)
        if old is None:
            d.added.append(uid)
        elif old.metadata.generation != pod.metadata.generation:
            d.updated.append(uid)
        else:
            d.unchanged.append(uid)
    d.removed = [uid for uid in current if uid not in new]
    return d


class PodManager:
    def __init__(
        self,
        syncer: PodSyncer,
        runtime: ContainerRuntime,
        sink: StatusSink,
        *,
        node_name: str,
        relist_interval: float = 1.0,
        resync_interval: float = 30.0,
        max_parallel: int = 8,
        clock: Callable[[], float] = time.time,
        held: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self._syncer = syncer
        # Pods the agent still holds something of (a state record, a VF) though no container of
        # theirs may run: kubelet's housekeeping. A removal that failed there (a VF not yet home
        # when the agent restarted) is retried like any other, not left until the next restart.
        self._held = held
        self._runtime = runtime
        self._sink = sink
        self._node = node_name
        self._relist_interval = relist_interval
        self._resync_interval = resync_interval
        self._clock = clock
        self._sem = asyncio.Semaphore(max_parallel)
        self.desired: dict[str, pod_pb2.Pod] = {}
        self.authoritative = False
        self.generation = 0
        self.statuses: dict[str, pod_pb2.PodStatus] = {}
        self._observed: dict[str, tuple[tuple[str, str], ...]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.last_relist: float = 0.0
        self._idle = asyncio.Event()
        self._idle.set()
        # Desired pods start only once this is set; removals never wait.
        self.gate = asyncio.Event()
        self.gate.set()
        # Called once per turn of the relist loop (the agent's watchdog liveness).
        self.tick: Callable[[], None] = lambda: None
        # Told of every pod sync: whether it succeeded and how long it took (metrics).
        self.observe_sync: Callable[[bool, float], None] = lambda ok, seconds: None
        # On stop, how long syncs in flight may take to finish before they are cancelled.
        self.drain_timeout = 15.0

    # -- inputs ---------------------------------------------------------------------------

    def set_desired(
        self, pods: Iterable[pod_pb2.Pod], generation: int, *, authoritative: bool
    ) -> DesiredDiff:
        new = {p.metadata.uid: p for p in pods}
        diff = diff_desired(self.desired, new)
        self.desired = new
        self.generation = generation
        became_authoritative = authoritative and not self.authoritative
        self.authoritative = self.authoritative or authoritative
        for uid in (*diff.added, *diff.updated, *diff.removed):
            self.request_sync(uid)
        if became_authoritative:
            log.info("the coordinator's assignment at generation %d is in force", generation)
            # Pods that vanished while we were away only show up in the runtime, or in what the
            # agent still holds for them.
            for uid in self._orphans():
                self.request_sync(uid)
        if diff.added or diff.removed or diff.updated:
            log.info(
                "desired pods at generation %d: %d added, %d removed, %d updated, %d unchanged",
                generation,
                len(diff.added),
                len(diff.removed),
                len(diff.updated),
                len(diff.unchanged),
            )
        return diff

    def request_sync(self, uid: str) -> None:
        if uid in self._workers:
            self._dirty.add(uid)
            return
        self._idle.clear()
        self._workers[uid] = asyncio.create_task(self._work(uid), name=f"pod-{uid[:8]}")

    # -- workers --------------------------------------------------------------------------

    async def _work(self, uid: str) -> None:
        try:
            while True:
                self._dirty.discard(uid)
                if uid in self.desired:
                    await self.gate.wait()  # the pod network is decided (agent.network.node)
                async with self._sem:
                    await self._sync_one(uid)
                if uid not in self._dirty:
                    break
        finally:
            del self._workers[uid]
            if not self._workers:
                self._idle.set()

    async def _sync_one(self, uid: str) -> None:
        started = time.perf_counter()
        ok = False
        try:
            ok = await self._sync_one_timed(uid)
        finally:
            self.observe_sync(ok, time.perf_counter() - started)

    async def _sync_one_timed(self, uid: str) -> bool:
        """One sync of one pod; False if it failed (and was scheduled again)."""
        pod = self.desired.get(uid)
        try:
            if pod is None:
                if self.authoritative:
                    await self._syncer.remove(uid)
                    self.statuses.pop(uid, None)
                    self._observed.pop(uid, None)
                    self._sink.forget(uid)
                return True
            result = await self._syncer.sync(pod)
        except (RuntimeError_, errors.AtollError) as exc:
            log.warning(
                "sync of pod %s failed: %s; retrying", _pod_name(pod, uid), exc, extra=_context(pod, uid)
            )
            self._schedule(uid, self._clock() + 5.0)
            return False
        except Exception:
            log.exception("sync of pod %s crashed; retrying", _pod_name(pod, uid), extra=_context(pod, uid))
            self._schedule(uid, self._clock() + 5.0)
            return False
        if uid not in self.desired:
            return True  # deleted while we synced; the removal pass follows
        self.statuses[uid] = result.status
        self._sink.update(pod, result.status)
        if result.requeue_at is not None:
            self._schedule(uid, result.requeue_at)
        return True

    def _schedule(self, uid: str, when: float) -> None:
        old = self._timers.pop(uid, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, when - self._clock())
        loop = asyncio.get_running_loop()
        self._timers[uid] = loop.call_later(delay, self._fire, uid)

    def _fire(self, uid: str) -> None:
        self._timers.pop(uid, None)
        self.request_sync(uid)

    async def wait_idle(self) -> None:
        """Until no pod worker runs (tests bound this with their own deadline)."""
        await self._idle.wait()

    # -- the relister (PLEG) and the resync ---------------------------------------------------

    async def relist(self) -> None:
        containers = await self._runtime.list_containers(
            {render.LABEL_MANAGED: "true", render.LABEL_NODE: self._node}
        )
        current: dict[str, list[tuple[str, str]]] = {}
        for c in containers:
            uid = c.labels.get(render.LABEL_POD_UID, "")
            current.setdefault(uid, []).append((c.id, c.state))
        snapshot = {uid: tuple(sorted(v)) for uid, v in current.items()}
        changed = {
            uid
            for uid in snapshot.keys() | self._observed.keys()
            if snapshot.get(uid) != self._observed.get(uid)
        }
        self._observed = snapshot
        self.last_relist = self._clock()
        for uid in changed:
            if uid in self.desired or self.authoritative:
                self.request_sync(uid)

    def resync_all(self) -> None:
        for uid in {*self.desired, *(self._orphans() if self.authoritative else ())}:
            self.request_sync(uid)

    def _orphans(self) -> set[str]:
        """Pods not desired whose containers run or whose records, addresses or VFs are held."""
        return {uid for uid in (*self._observed, *self._held()) if uid and uid not in self.desired}

    async def run(self, stop: asyncio.Event) -> None:
        """Relist every relist_interval and resync everything every resync_interval until `stop`."""
        next_resync = self._clock() + self._resync_interval
        while not stop.is_set():
            self.tick()
            try:
                await self.relist()
            except (RuntimeError_, errors.AtollError) as exc:
                log.warning("relist failed: %s", exc)
            if self._clock() >= next_resync:
                self.resync_all()
                next_resync = self._clock() + self._resync_interval
            await wait_or_stop(stop, self._relist_interval)
        for timer in self._timers.values():
            timer.cancel()
        workers = list(self._workers.values())
        if workers:
            # A sync half done (a container created, not yet started) is finished, not abandoned.
            log.info("stopping: finishing %d pod syncs in flight", len(workers))
            _done, pending = await asyncio.wait(workers, timeout=self.drain_timeout)
            if pending:
                log.warning(
                    "stopping: %d pod syncs still running after %.0fs; cancelled",
                    len(pending),
                    self.drain_timeout,
                )
            for task in pending:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)


def _pod_name(pod: pod_pb2.Pod | None, uid: str) -> str:
    return f"{pod.metadata.namespace}/{pod.metadata.name}" if pod is not None else uid


def _context(pod: pod_pb2.Pod | None, uid: str) -> dict[str, str]:
    return logs.pod(pod.metadata if pod is not None else None, uid)
