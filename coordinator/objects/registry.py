"""Typed access to API objects in the store.

Keys are `/<plural>/<namespace>/<name>` (or `/<plural>/<name>` for
cluster-scoped kinds); values are serialized protobuf messages. An object's
metadata.resource_version is the store's mod revision of its key: it is set on
every read and never stored, so it can never disagree with the store.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from google.protobuf.message import Message

from atoll import errors, kinds, labels
from atoll.kinds import KindInfo
from coordinator.store.base import KV, Op, Store, StoreEvent

M = TypeVar("M", bound=Message)

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True)
class Page:
    # The page's objects as stored, not decoded: a list answer parses each once, straight into
    # its reply (decoding, then copying into the reply, cost four times as much for 4,000 nodes).
    entries: list[KV]
    revision: int
    last_key: str  # "" when nothing follows; else the key to continue after
    remaining: int | None  # keys after this page (None with a selector: unknown)


@dataclass(frozen=True)
class WatchEvent:
    type: EventType
    object: Message
    revision: int


def key_for(info: KindInfo, namespace: str, name: str) -> str:
    return f"/{info.plural}/{namespace}/{name}" if info.namespaced else f"/{info.plural}/{name}"


def prefix_for(info: KindInfo, namespace: str = "") -> str:
    if info.namespaced and namespace:
        return f"/{info.plural}/{namespace}/"
    return f"/{info.plural}/"


_uid_random = random.Random()


def _random_uid() -> str:
    """A version-4 UUID. UIDs must be unique, not secret, so a seeded PRNG (no syscall) does."""
    return str(uuid.UUID(int=_uid_random.getrandbits(128), version=4))


def _meta(obj: Message) -> object:
    return obj.metadata  # type: ignore[attr-defined]


# etcd's default request limit: one object, serialized, is at most this large.
DEFAULT_MAX_OBJECT_BYTES = 1024 * 1024
# Keys a selector's list reads from the store at a time while it fills a page.
SCAN_KEYS = 1000


def _not_found(info: KindInfo, name: str) -> errors.NotFound:
    return errors.NotFound(f'{info.plural} "{name}" not found')


class Registry:
    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        new_uid: Callable[[], str] | None = None,
        max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
    ) -> None:
        self.store = store
        self.max_object_bytes = max_object_bytes
        self._clock = clock
        self._new_uid = new_uid or _random_uid
        # Quota admission (coordinator.objects.quota): checks a create and holds its share,
        # returning how to give it back if the write fails.
        self.reserve: Callable[[str, Message], Callable[[], None] | None] | None = None

    # -- codec --------------------------------------------------------------------------

    @staticmethod
    def decode(info: KindInfo, kv: KV) -> Message:
        obj = info.message.FromString(kv.value)
        obj.metadata.resource_version = kv.mod_revision  # type: ignore[attr-defined]
        return obj

    @staticmethod
    def encode(obj: Message) -> bytes:
        meta = obj.metadata  # type: ignore[attr-defined]
        version = meta.resource_version
        meta.resource_version = 0
        try:
            return obj.SerializeToString(deterministic=True)
        finally:
            meta.resource_version = version

    def encode_checked(self, obj: Message) -> bytes:
        """`encode`, refusing objects over the size limit before anything is stored."""
        value = self.encode(obj)
        if len(value) > self.max_object_bytes:
            info = kinds.of(obj)
            raise errors.InvalidArgument(
                f'{info.plural} "{obj.metadata.name}" is {len(value)} bytes serialized, over the '  # type: ignore[attr-defined]
                f"limit of {self.max_object_bytes} bytes per object (--max-object-bytes)"
            )
        return value

    @staticmethod
    def key(obj: Message) -> str:
        info = kinds.of(obj)
        meta = obj.metadata  # type: ignore[attr-defined]
        return key_for(info, meta.namespace, meta.name)

    # -- reads --------------------------------------------------------------------------

    async def get(self, info: KindInfo, namespace: str, name: str) -> Message:
        kv = await self.store.get(key_for(info, namespace, name))
        if kv is None:
            raise _not_found(info, name)
        return self.decode(info, kv)

    async def list(
        self, info: KindInfo, namespace: str = "", selector: labels.Selector | None = None
    ) -> tuple[list[Message], int]:
        kvs, revision = await self.store.list(prefix_for(info, namespace))
        items = [self.decode(info, kv) for kv in kvs]
        if selector is not None and not selector.empty:
            items = [o for o in items if selector.matches(o.metadata.labels)]  # type: ignore[attr-defined]
        return items, revision

    async def list_page(
        self,
        info: KindInfo,
        namespace: str = "",
        selector: labels.Selector | None = None,
        *,
        revision: int = 0,
        after: str = "",
        limit: int = 0,
        max_bytes: int = 0,
    ) -> Page:
        """One page of a list at `revision` (0: now): keys after `after`, at most `limit`
        items and about `max_bytes` of them (at least one item per page), as stored; an object
        is decoded only to match `selector`. The store reads the page's own keys (with a
        selector, the keys scanned for it), not every key of the list for every page."""
        prefix = prefix_for(info, namespace)
        entries: list[KV] = []
        used = 0

        def full(kv: KV) -> bool:
            return bool(entries) and (
                bool(limit and len(entries) >= limit) or bool(max_bytes and used + len(kv.value) > max_bytes)
            )

        if selector is None or selector.empty:
            got = await self.store.list_range(
                prefix, revision, after=after, limit=limit
            )  # `more` counts the rest
            for kv in got.kvs:
                if full(kv):
                    break
                entries.append(kv)
                used += len(kv.value)
            left = len(got.kvs) - len(entries) + got.more
            return Page(entries, got.revision, entries[-1].key if left and entries else "", left)
        # A selector: SCAN_KEYS keys at a time, all from one snapshot, until the page is full.
        scanned = after
        while True:
            got = await self.store.list_range(prefix, revision, after=scanned, limit=SCAN_KEYS)
            revision = got.revision
            for kv in got.kvs:
                if full(kv):
                    return Page(entries, revision, scanned, None)
                scanned = kv.key
                if selector.matches(self.decode(info, kv).metadata.labels):  # type: ignore[attr-defined]
                    entries.append(kv)
                    used += len(kv.value)
            if not got.more or not got.kvs:
                return Page(entries, revision, "", None)

    # -- writes -------------------------------------------------------------------------

    def prepare_new(self, obj: Message) -> None:
        meta = obj.metadata  # type: ignore[attr-defined]
        meta.uid = meta.uid or self._new_uid()
        meta.creation_timestamp.FromNanoseconds(int(self._clock() * 1e9))
        meta.generation = 1
        meta.resource_version = 0

    async def create(self, obj: M, *, extra: Sequence[Op] = ()) -> M:
        """Create `obj`; `extra` writes commit in the same transaction (e.g. an allocation key)."""
        self.prepare_new(obj)
        key = self.key(obj)
        value = self.encode_checked(obj)
        release = self.reserve(key, obj) if self.reserve is not None else None
        try:
            kvs = await self.store.txn([Op("create", key, value), *extra])
        except errors.AlreadyExists:
            if release is not None:
                release()
            if await self.store.get(key) is None:
                raise  # one of the extra keys was taken
            info = kinds.of(obj)
            raise errors.AlreadyExists(f'{info.plural} "{obj.metadata.name}" already exists') from None  # type: ignore[attr-defined]
        except BaseException:
            if release is not None:
                release()
            raise
        obj.metadata.resource_version = kvs[0].mod_revision  # type: ignore[attr-defined]
        return obj

    async def update(self, obj: M, *, expected_revision: int | None = None, extra: Sequence[Op] = ()) -> M:
        """Update `obj`; `extra` writes commit in the same transaction (allocations taken or given up)."""
        info = kinds.of(obj)
        name = obj.metadata.name  # type: ignore[attr-defined]
        key, value = self.key(obj), self.encode_checked(obj)
        try:
            if extra:
                kv = (await self.store.txn([Op("update", key, value, expected_revision), *extra]))[0]
            else:
                kv = await self.store.update(key, value, expected_revision)
        except errors.NotFound:
            raise _not_found(info, name) from None
        except errors.Conflict:
            raise errors.Conflict(
                f'{info.plural} "{name}" was modified since revision {expected_revision}; read it again and retry'
            ) from None
        obj.metadata.resource_version = kv.mod_revision  # type: ignore[attr-defined]
        return obj

    async def delete(
        self,
        info: KindInfo,
        namespace: str,
        name: str,
        expected_revision: int | None = None,
        *,
        extra: Sequence[Op] = (),
    ) -> Message:
        key = key_for(info, namespace, name)
        try:
            kvs = await self.store.txn([Op("delete", key, b"", expected_revision), *extra])
        except errors.NotFound:
            if await self.store.get(key) is None:
                raise _not_found(info, name) from None
            raise
        return self.decode(info, kvs[0])

    async def guaranteed_update(
        self,
        info: KindInfo,
        namespace: str,
        name: str,
        mutate: Callable[[Message], bool],
        *,
        attempts: int = 16,
    ) -> Message:
        """Read, mutate and compare-and-swap until it sticks. `mutate` returns False to write nothing."""
        for _ in range(attempts):
            kv = await self.store.get(key_for(info, namespace, name))
            if kv is None:
                raise _not_found(info, name)
            obj = self.decode(info, kv)
            if not mutate(obj):
                return obj
            try:
                return await self.update(obj, expected_revision=kv.mod_revision)
            except errors.Conflict:
                continue
        raise errors.Conflict(f'{info.plural} "{name}" kept changing; gave up after {attempts} attempts')

    # -- watch --------------------------------------------------------------------------

    async def watch(
        self,
        info: KindInfo,
        namespace: str = "",
        selector: labels.Selector | None = None,
        from_revision: int = 0,
    ) -> AsyncIterator[WatchEvent]:
        """Events after `from_revision`. Objects moving out of the selector arrive as DELETED."""
        async for event in self.store.watch(prefix_for(info, namespace), from_revision):
            translated = self.translate(info, event, selector)
            if translated is not None:
                yield translated

    def translate(
        self, info: KindInfo, event: StoreEvent, selector: labels.Selector | None
    ) -> WatchEvent | None:
        obj = self.decode(info, event.kv)
        if selector is None or selector.empty:
            if event.type == "delete":
                return WatchEvent("DELETED", obj, event.revision)
            return WatchEvent("MODIFIED" if event.prev is not None else "ADDED", obj, event.revision)
        now_in = event.type == "put" and selector.matches(obj.metadata.labels)  # type: ignore[attr-defined]
        was_in = False
        if event.prev is not None:
            prev = info.message.FromString(event.prev.value)
            was_in = selector.matches(prev.metadata.labels)  # type: ignore[attr-defined]
        if now_in:
            return WatchEvent("MODIFIED" if was_in else "ADDED", obj, event.revision)
        if was_in:
            return WatchEvent("DELETED", obj, event.revision)
        return None
