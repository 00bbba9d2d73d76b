"""Informer: a local cache of one kind, kept current by list-then-watch.

Controllers inside the coordinator (scheduler, assignments, ...) read from an
informer's cache and react to its events, like client-go informers. When the
watch falls behind the store's history it lists again and emits the
difference, so handlers always converge to the store's state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from google.protobuf.message import Message

from atoll import errors
from atoll.kinds import KindInfo
from coordinator.objects.registry import Registry, key_for

log = logging.getLogger(__name__)


class Handler(Protocol):
    def __call__(self, type_: str, obj: Message, old: Message | None) -> None: ...


def object_key(info: KindInfo, obj: Message) -> str:
    meta = obj.metadata  # type: ignore[attr-defined]
    return key_for(info, meta.namespace, meta.name)


class Informer:
    def __init__(self, registry: Registry, info: KindInfo) -> None:
        self._registry = registry
        self.info = info
        self.cache: dict[str, Message] = {}
        self.revision = 0  # of the event being handled, or of the list a relist emits
        self.synced = asyncio.Event()
        self._handlers: list[Handler] = []

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def _emit(self, type_: str, obj: Message, old: Message | None) -> None:
        for handler in self._handlers:
            try:
                handler(type_, obj, old)
            except Exception:
                log.exception("%s informer handler failed on %s", self.info.name, type_)

    async def _relist(self) -> None:
        items, revision = await self._registry.list(self.info)
        fresh = {object_key(self.info, o): o for o in items}
        self.revision = revision  # what the differences emitted below bring the cache to
        for key, old in list(self.cache.items()):
            if key not in fresh:
                del self.cache[key]
                self._emit("DELETED", old, old)
        for key, obj in fresh.items():
            previous = self.cache.get(key)
            self.cache[key] = obj
            if previous is None:
                self._emit("ADDED", obj, None)
            elif previous.metadata.resource_version != obj.metadata.resource_version:  # type: ignore[attr-defined]
                self._emit("MODIFIED", obj, previous)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        while stop is None or not stop.is_set():
            await self._relist()
            self.synced.set()
            try:
                async for event in self._registry.watch(self.info, from_revision=self.revision):
                    key = object_key(self.info, event.object)
                    old = self.cache.get(key)
                    if event.type == "DELETED":
                        self.cache.pop(key, None)
                    else:
                        self.cache[key] = event.object
                    self.revision = event.revision
                    self._emit(event.type, event.object, old)
            except errors.Gone as exc:
                log.info("%s informer relisting: %s", self.info.name, exc)

    def get(self, namespace: str, name: str) -> Message | None:
        return self.cache.get(key_for(self.info, namespace, name))

    def items(self, predicate: Callable[[Message], bool] | None = None) -> list[Message]:
        return [o for o in self.cache.values() if predicate is None or predicate(o)]
