"""Events: what happened to an object, recorded as Event objects next to it.

Recording never blocks or fails the caller. Kubernetes' event correlation
comes first (eventcorrelation): similar events combine into one, and each
source records at most 25 events about one object at once, then one every five
minutes; the rest are dropped and counted. Events then queue (at most
`max_pending`; past that they are dropped, as Kubernetes' event broadcaster
drops under pressure) and up to `max_in_flight` writers take them off in the
background, so a burst of pods costs no task per event. Repeated events (same
object, reason and message) fold into one with a count, as kubectl shows them,
and events older than `ttl` are deleted.

Most events are new: they are created straight away, and only an event this
recorder wrote lately (or one the store already has) is read and counted up.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import time
from collections.abc import Callable
from typing import NamedTuple

from google.protobuf.message import Message

from atoll import errors, kinds
from atoll.aio import wait_or_stop
from atoll.v1 import workloads_pb2
from coordinator.objects.eventcorrelation import EventCorrelator
from coordinator.objects.registry import Registry

log = logging.getLogger(__name__)

EVENT = kinds.by_name("Event")
# Names of events written lately, to fold a repeat into its event without trying a create first.
KNOWN_NAMES = 4096


def reference(obj: Message) -> workloads_pb2.ObjectReference:
    meta = obj.metadata  # type: ignore[attr-defined]
    return workloads_pb2.ObjectReference(
        kind=kinds.of(obj).name, namespace=meta.namespace, name=meta.name, uid=meta.uid
    )


def event_name(ref: workloads_pb2.ObjectReference, fold: str) -> str:
    """The name of the event that occurrences folding into `fold` count up (Correlated.fold)."""
    digest = hashlib.sha256(fold.encode()).hexdigest()[:10]
    return f"{ref.name}.{digest}"


class _Pending(NamedTuple):
    ref: workloads_pb2.ObjectReference
    type: str
    reason: str
    message: str
    fold: str
    component: str
    host: str
    at_ns: int


class EventRecorder:
    def __init__(
        self,
        registry: Registry,
        *,
        component: str = "coordinator",
        clock: Callable[[], float] = time.time,
        max_in_flight: int = 64,
        max_pending: int = 10_000,
        correlator: EventCorrelator | None = None,
    ) -> None:
        self._registry = registry
        self._component = component
        self._clock = clock
        self._max_writers = max_in_flight
        self._max_pending = max_pending
        self._pending: collections.deque[_Pending] = collections.deque()
        self._writers: set[asyncio.Task[None]] = set()
        self._known: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._correlator = correlator if correlator is not None else EventCorrelator()
        self.dropped = 0  # past max_pending
        self.filtered = 0  # by the spam filter

    def not_recorded(self) -> dict[str, int]:
        """Events dropped so far, by why: over their object's budget, or past the queue's limit."""
        return {"spam": self.filtered, "queue": self.dropped}

    def record(
        self, obj: Message, type_: str, reason: str, message: str, *, component: str = "", host: str = ""
    ) -> None:
        """Record an event about `obj` from `component` of the coordinator (each its own source
        for the spam filter, as Kubernetes' scheduler and controller manager are)."""
        self.record_ref(
            reference(obj), type_, reason, message, component=component or self._component, host=host
        )

    def record_ref(
        self,
        ref: workloads_pb2.ObjectReference,
        type_: str,
        reason: str,
        message: str,
        *,
        component: str,
        host: str = "",
    ) -> None:
        now = self._clock()
        correlated = self._correlator.correlate(ref, type_, reason, message, component=component, host=host)
        if correlated is None:
            self.filtered += 1
            log.debug("event %s for %s/%s filtered: too many about it", reason, ref.namespace, ref.name)
            return
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            log.warning("dropping event %s for %s/%s: too many pending", reason, ref.namespace, ref.name)
            return
        self._pending.append(
            _Pending(ref, type_, reason, correlated.message, correlated.fold, component, host, int(now * 1e9))
        )
        if len(self._writers) < min(self._max_writers, len(self._pending)):
            self._start_writer()

    def _start_writer(self) -> None:
        task = asyncio.create_task(self._drain())
        self._writers.add(task)
        task.add_done_callback(self._writers.discard)  # also one cancelled before it ran

    async def _drain(self) -> None:
        try:
            while self._pending:
                event = self._pending.popleft()
                try:
                    await self.write(event)
                except Exception:  # one event that cannot be written must not strand those after it
                    log.exception(
                        "event %s for %s/%s not recorded", event.reason, event.ref.namespace, event.ref.name
                    )
        finally:
            # Out of the count at once, not when the done callback runs a turn later: an event
            # recorded in between would find the count full and start no writer of its own.
            self._writers.discard(asyncio.current_task())

    async def write(self, event: _Pending) -> None:
        namespace = event.ref.namespace or "default"
        name = event_name(event.ref, event.fold)
        if name in self._known:
            self._known.move_to_end(name)
            if await self._count_up(namespace, name, event):
                return
        obj = workloads_pb2.Event(
            involved_object=event.ref,
            reason=event.reason,
            message=event.message,
            type=event.type,
            source_component=event.component,
            source_host=event.host,
            count=1,
        )
        obj.metadata.name, obj.metadata.namespace = name, namespace
        obj.first_timestamp.FromNanoseconds(event.at_ns)
        obj.last_timestamp.FromNanoseconds(event.at_ns)
        try:
            await self._registry.create(obj)
        except errors.AlreadyExists:  # written before this recorder knew it, or by another coordinator
            if not await self._count_up(namespace, name, event):
                await self._create_once_more(obj)  # collected in between
                return
        except errors.AtollError as exc:
            log.debug("event %s not recorded: %s", name, exc)
            return
        self._known[name] = None
        if len(self._known) > KNOWN_NAMES:
            self._known.popitem(last=False)

    async def _create_once_more(self, obj: workloads_pb2.Event) -> None:
        try:
            await self._registry.create(obj)
        except errors.AtollError as exc:
            log.debug("event %s not recorded: %s", obj.metadata.name, exc)

    async def _count_up(self, namespace: str, name: str, event: _Pending) -> bool:
        """Fold one more occurrence into the event; False if there is none to fold into."""

        def bump(obj: Message) -> bool:
            assert isinstance(obj, workloads_pb2.Event)
            obj.count += 1
            # Writers run side by side: a repeat recorded earlier may land later.
            if event.at_ns > obj.last_timestamp.ToNanoseconds():
                obj.last_timestamp.FromNanoseconds(event.at_ns)
                obj.message = event.message  # a combined event shows the latest
            return True

        try:
            await self._registry.guaranteed_update(EVENT, namespace, name, bump)
            return True
        except errors.NotFound:  # deleted meanwhile (collected): created afresh
            self._known.pop(name, None)
            return False
        except errors.AtollError as exc:
            log.debug("event %s not recorded: %s", name, exc)
            return True  # nothing more to try

    async def flush(self) -> None:
        while self._writers or self._pending:
            if not self._writers:  # never left so, but a flush must not return with events waiting
                self._start_writer()
            await asyncio.gather(*self._writers, return_exceptions=True)

    async def collect_garbage(self, ttl: float) -> int:
        """Delete events whose last occurrence is older than `ttl` seconds."""
        items, _ = await self._registry.list(EVENT)
        cutoff = self._clock() - ttl
        removed = 0
        for obj in items:
            assert isinstance(obj, workloads_pb2.Event)
            if obj.last_timestamp.ToNanoseconds() / 1e9 < cutoff:
                try:
                    await self._registry.delete(
                        EVENT, obj.metadata.namespace, obj.metadata.name, obj.metadata.resource_version
                    )
                    removed += 1
                except errors.AtollError:
                    pass
        return removed

    async def run_gc(self, stop: asyncio.Event, ttl: float, period: float = 60.0) -> None:
        while not stop.is_set():
            if not await wait_or_stop(stop, period):
                await self.collect_garbage(ttl)
