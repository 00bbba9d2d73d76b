"""The in-memory side every store shares: current keys, recent history, watchers.

Stores keep all current keys in memory and serve reads from there; the
durable backend is written first and this state is updated, on the event loop
thread, strictly in revision order. Watchers register and read the backlog
without awaiting in between, so no event can fall into a gap.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
from collections.abc import AsyncIterator, Iterable

from atoll import errors
from coordinator.store.base import KV, StoreEvent

# A watcher that lets this many events pile up is cut off and must resume.
WATCH_QUEUE_LIMIT = 100_000


def _collection(key: str) -> str:
    # "/pods/default/apache" -> "pods": lists always stay inside one collection.
    return key.split("/", 2)[1] if key.startswith("/") else ""


class _Watcher:
    __slots__ = ("events", "overflowed", "prefix", "wakeup")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.events: collections.deque[StoreEvent] = collections.deque()
        self.wakeup = asyncio.Event()
        self.overflowed = False

    def offer(self, event: StoreEvent) -> None:
        if self.overflowed or not event.kv.key.startswith(self.prefix):
            return
        if len(self.events) >= WATCH_QUEUE_LIMIT:
            self.overflowed = True
        else:
            self.events.append(event)
        self.wakeup.set()


class MemoryState:
    def __init__(self, history_limit: int) -> None:
        self._collections: dict[str, dict[str, KV]] = collections.defaultdict(dict)
        self._history: collections.deque[StoreEvent] = collections.deque()
        self._history_limit = history_limit
        self._watchers: set[_Watcher] = set()
        self.revision = 0
        # Events at or below this revision are no longer kept.
        self.compacted = 0

    def load(self, kvs: Iterable[KV], history: Iterable[StoreEvent], revision: int, compacted: int) -> None:
        for kv in kvs:
            self._collections[_collection(kv.key)][kv.key] = kv
        self._history.extend(history)
        self.revision = revision
        self.compacted = compacted

    def compact(self, revision: int) -> None:
        revision = min(revision, self.revision)
        while self._history and self._history[0].revision <= revision:
            self._history.popleft()
        self.compacted = max(self.compacted, revision)

    def get(self, key: str) -> KV | None:
        return self._collections.get(_collection(key), {}).get(key)

    def _items(self, prefix: str) -> dict[str, KV]:
        if prefix in ("", "/"):  # every collection: a whole copy (coordinator store migrate)
            return {k: kv for items in self._collections.values() for k, kv in items.items()}
        return self._collections.get(_collection(prefix), {})

    def list(self, prefix: str) -> list[KV]:
        items = self._items(prefix)
        return [items[k] for k in sorted(k for k in items if k.startswith(prefix))]

    def list_at(self, prefix: str, revision: int = 0) -> tuple[builtins.list[KV], int]:
        """The keys under `prefix` at `revision` (0: now), rolled back through the history."""
        if revision <= 0 or revision >= self.revision:
            return self.list(prefix), self.revision
        if revision < self.compacted:
            raise errors.Gone(
                f"resource version {revision} is too old (history starts after {self.compacted}); list again"
            )
        items = self._items(prefix)
        snapshot = {k: kv for k, kv in items.items() if k.startswith(prefix)}
        for event in reversed(self._history):
            if event.revision <= revision:
                break
            key = event.kv.key
            if not key.startswith(prefix):
                continue
            if event.prev is None:
                snapshot.pop(key, None)
            else:
                snapshot[key] = event.prev
        return [snapshot[k] for k in sorted(snapshot)], revision

    def apply(self, events: Iterable[StoreEvent]) -> None:
        for event in events:
            if event.revision <= self.revision:
                raise errors.Internal(
                    f"store event {event.revision} applied out of order (at {self.revision})"
                )
            bucket = self._collections[_collection(event.kv.key)]
            if event.type == "put":
                bucket[event.kv.key] = event.kv
            else:
                bucket.pop(event.kv.key, None)
            self.revision = event.revision
            self._history.append(event)
            if len(self._history) > self._history_limit:
                self.compacted = self._history.popleft().revision
            for watcher in self._watchers:
                watcher.offer(event)

    async def watch(self, prefix: str, from_revision: int) -> AsyncIterator[StoreEvent]:
        if from_revision < self.compacted:
            raise errors.Gone(
                f"resource version {from_revision} is too old (history starts after {self.compacted}); "
                "list again and watch from the list's resource version"
            )
        watcher = _Watcher(prefix)
        self._watchers.add(watcher)
        try:
            backlog = [e for e in self._history if e.revision > from_revision and e.kv.key.startswith(prefix)]
            last = from_revision
            for event in backlog:
                last = event.revision
                yield event
            while True:
                while watcher.events:
                    event = watcher.events.popleft()
                    if event.revision > last:
                        last = event.revision
                        yield event
                if watcher.overflowed:
                    raise errors.Gone(f"watch fell too far behind; resume from resource version {last}")
                watcher.wakeup.clear()
                await watcher.wakeup.wait()
        finally:
            self._watchers.discard(watcher)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)
