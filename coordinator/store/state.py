"""The in-memory side every store shares: current keys, recent history, watchers.

Stores keep all current keys in memory and serve reads from there; the
durable backend is written first and this state is updated, on the event loop
thread, strictly in revision order. Watchers register and read the backlog
without awaiting in between, so no event can fall into a gap.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import collections
from collections.abc import AsyncIterator, Iterable

from atoll import errors
from coordinator.store.base import KV, Range, StoreEvent

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
        # Each collection's keys in order, kept until a key comes or goes: most writes change an
        # object, not the set of keys, and a list then costs no sort (10,000 pods with a
        # controller's random names: 3.7-6.6 ms a list when each sorted them, 0.9-1.0 now).
        self._sorted: dict[str, builtins.list[str]] = {}
        self.revision = 0
        # Events at or below this revision are no longer kept.
        self.compacted = 0

    def load(self, kvs: Iterable[KV], history: Iterable[StoreEvent], revision: int, compacted: int) -> None:
        for kv in kvs:
            self._collections[_collection(kv.key)][kv.key] = kv
        self._sorted.clear()
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

    def _span(self, prefix: str) -> tuple[builtins.list[str], int, int]:
        """The prefix's collection's keys in order, and the bounds [lo, hi) of those under it."""
        if prefix in ("", "/"):
            everything = sorted(k for k in self._items(prefix) if k.startswith(prefix))
            return everything, 0, len(everything)
        name = _collection(prefix)
        keys = self._sorted.get(name)
        if keys is None:
            keys = self._sorted[name] = sorted(self._collections.get(name, {}))
        lo = bisect.bisect_left(keys, prefix)
        if ord(prefix[-1]) == 0x10FFFF:  # no string sorts just past all of its keys
            hi = lo
            while hi < len(keys) and keys[hi].startswith(prefix):
                hi += 1
            return keys, lo, hi
        # The keys with the prefix sit between it and the first string past all of them.
        return keys, lo, bisect.bisect_left(keys, prefix[:-1] + chr(ord(prefix[-1]) + 1))

    def list(self, prefix: str) -> list[KV]:
        items = self._items(prefix)
        keys, lo, hi = self._span(prefix)
        return [items[k] for k in keys[lo:hi]]

    def _then(self, prefix: str, revision: int) -> dict[str, KV | None]:
        """The keys under `prefix` changed since `revision`, as they were then (None: the key did
        not exist). errors.Gone when that revision's history is no longer kept."""
        if revision < self.compacted:
            raise errors.Gone(
                f"resource version {revision} is too old (history starts after {self.compacted}); list again"
            )
        then: dict[str, KV | None] = {}
        for event in reversed(self._history):  # the oldest change after it wins: last written
            if event.revision <= revision:
                break
            key = event.kv.key
            if key.startswith(prefix):
                then[key] = event.prev
        return then

    def list_at(self, prefix: str, revision: int = 0) -> tuple[builtins.list[KV], int]:
        """The keys under `prefix` at `revision` (0: now), rolled back through the history."""
        if revision <= 0 or revision >= self.revision:
            return self.list(prefix), self.revision
        then = self._then(prefix, revision)
        items = self._items(prefix)
        keys, lo, hi = self._span(prefix)
        was = then.get  # (None: created since, so not in the list then)
        found = [kv for k in keys[lo:hi] if (kv := was(k, items[k])) is not None]
        gone = [kv for k, kv in then.items() if kv is not None and k not in items]  # deleted since
        if gone:
            found = sorted([*found, *gone], key=lambda kv: kv.key)
        return found, revision

    def list_range(self, prefix: str, revision: int = 0, after: str = "", limit: int = 0) -> Range:
        """Store.list_range: the keys under `prefix` after `after`, at most `limit` (0: all)."""
        if not after and not limit:
            kvs, at = self.list_at(prefix, revision)
            return Range(kvs, at, 0)
        items = self._items(prefix)
        keys, lo, hi = self._span(prefix)
        start = bisect.bisect_right(keys, after, lo, hi) if after else lo
        if revision <= 0 or revision >= self.revision:
            revision, then = self.revision, {}
        else:
            then = self._then(prefix, revision)
        if not then:  # nothing under the prefix changed since: today's keys are the keys then
            end = min(hi, start + limit) if limit else hi
            return Range([items[k] for k in keys[start:end]], revision, hi - end)
        # The keys then: today's, less those created since, merged in order with those deleted since.
        gone = sorted(k for k, kv in then.items() if kv is not None and k not in items and k > after)
        found: builtins.list[KV] = []
        i, j = start, 0
        while (i < hi or j < len(gone)) and not (limit and len(found) >= limit):
            if j < len(gone) and (i >= hi or gone[j] < keys[i]):
                kv = then[gone[j]]
                j += 1
            else:
                kv = then[keys[i]] if keys[i] in then else items[keys[i]]
                i += 1
            if kv is not None:
                found.append(kv)
        # What comes after: today's keys not reached that existed then, and the deleted ones left.
        created = sum(1 for k, kv in then.items() if kv is None and k in items and i < hi and k >= keys[i])
        return Range(found, revision, (hi - i) - created + (len(gone) - j))

    def apply(self, events: Iterable[StoreEvent]) -> None:
        for event in events:
            if event.revision <= self.revision:
                raise errors.Internal(
                    f"store event {event.revision} applied out of order (at {self.revision})"
                )
            name = _collection(event.kv.key)
            bucket = self._collections[name]
            if event.type == "put":
                if event.kv.key not in bucket:
                    self._sorted.pop(name, None)
                bucket[event.kv.key] = event.kv
            elif bucket.pop(event.kv.key, None) is not None:
                self._sorted.pop(name, None)
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
