"""Events: what happened to an object, recorded as Event objects next to it.

Recording never blocks or fails the caller: writes go out in the background,
repeated events (same object, reason and message) fold into one with a count,
as kubectl shows them, and events older than `ttl` are deleted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable

from google.protobuf.message import Message

from atoll import errors, kinds
from atoll.aio import wait_or_stop
from atoll.v1 import workloads_pb2
from coordinator.objects.registry import Registry

log = logging.getLogger(__name__)

EVENT = kinds.by_name("Event")


def reference(obj: Message) -> workloads_pb2.ObjectReference:
    meta = obj.metadata  # type: ignore[attr-defined]
    return workloads_pb2.ObjectReference(
        kind=kinds.of(obj).name, namespace=meta.namespace, name=meta.name, uid=meta.uid
    )


def event_name(ref: workloads_pb2.ObjectReference, reason: str, message: str) -> str:
    digest = hashlib.sha256(f"{ref.uid}/{reason}/{message}".encode()).hexdigest()[:10]
    return f"{ref.name}.{digest}"


class EventRecorder:
    def __init__(
        self,
        registry: Registry,
        *,
        component: str = "coordinator",
        clock: Callable[[], float] = time.time,
        max_in_flight: int = 64,
    ) -> None:
        self._registry = registry
        self._component = component
        self._clock = clock
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()

    def record(self, obj: Message, type_: str, reason: str, message: str, *, host: str = "") -> None:
        self.record_ref(reference(obj), type_, reason, message, component=self._component, host=host)

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
        if len(self._tasks) > 10_000:
            log.warning("dropping event %s for %s/%s: too many pending", reason, ref.namespace, ref.name)
            return
        task = asyncio.create_task(self.write(ref, type_, reason, message, component=component, host=host))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def write(
        self,
        ref: workloads_pb2.ObjectReference,
        type_: str,
        reason: str,
        message: str,
        *,
        component: str,
        host: str,
    ) -> None:
        namespace = ref.namespace or "default"
        name = event_name(ref, reason, message)
        now_ns = int(self._clock() * 1e9)
        async with self._slots:
            try:

                def bump(obj: Message) -> bool:
                    assert isinstance(obj, workloads_pb2.Event)
                    obj.count += 1
                    obj.last_timestamp.FromNanoseconds(now_ns)
                    return True

                await self._registry.guaranteed_update(EVENT, namespace, name, bump)
                return
            except errors.NotFound:
                pass
            except errors.AtollError as exc:
                log.debug("event %s not recorded: %s", name, exc)
                return
            event = workloads_pb2.Event(
                involved_object=ref,
                reason=reason,
                message=message,
                type=type_,
                source_component=component,
                source_host=host,
                count=1,
            )
            event.metadata.name, event.metadata.namespace = name, namespace
            event.first_timestamp.FromNanoseconds(now_ns)
            event.last_timestamp.FromNanoseconds(now_ns)
            try:
                await self._registry.create(event)
            except errors.AtollError as exc:
                log.debug("event %s not recorded: %s", name, exc)

    async def flush(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)

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
