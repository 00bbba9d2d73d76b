"""Which events are written, and under which name: Kubernetes' event correlation.

client-go's EventCorrelator sits between every recorder and the API server, and
operators read `kubectl get events` with it in mind. We keep its two rules and
its figures:

- Aggregation: events from one source about one object with the same type and
  reason but other messages are "similar". From the tenth similar event within
  ten minutes on, they go into one event, "(combined from similar events): "
  and the latest message, counted up. A replication controller creating 10,000
  pods leaves nine "Created pod" events and a combined one, not 10,000.
- Spam filter: each source may record 25 events about one object at once, then
  one more every five minutes (a token bucket); the rest are dropped. A node
  reporting events about its pods, or a controller failing in a loop, cannot
  fill the store, whatever it sends.

Each source (a component of the coordinator, or a node) has caches of its
own: 4,096 keys for the coordinator's components (client-go's size), 512 for a
node, which speaks only of itself and its pods; an evicted key starts afresh,
and no source can evict another's. Entries that no longer count (similar events
older than the window, budgets full again) are dropped as events come, and a
source with none left goes, so the caches hold what the last window saw. A
node's events are filed under the object as the coordinator knows it
(coordinator.api.node.service), so it cannot pick new keys to escape its budget.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from atoll.v1 import workloads_pb2

SPAM_BURST = 25
SPAM_REFILL_SECONDS = 300.0
AGGREGATE_AT = 10
AGGREGATE_WINDOW_SECONDS = 600.0
# Keys each source keeps (client-go's LRU size, per recorder): the coordinator's own components
# see every object; a node sees itself and its pods, and what it sends costs the coordinator's
# memory, so less. Sources themselves: every component and node, with room to spare.
CACHE_ENTRIES = 4096
NODE_CACHE_ENTRIES = 512
SOURCES = 65536
COMBINED = "(combined from similar events): "


class Correlated(NamedTuple):
    """An event to write: its message, and what names it (`fold`: repeats of the same fold
    are one event, counted up; a combined event's fold leaves the message out)."""

    message: str
    fold: str


def fold_of(ref: workloads_pb2.ObjectReference, reason: str, message: str) -> str:
    """The fold of an event that is not combined: repeats of the same message count up."""
    return f"{ref.uid}/{reason}/{message}"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class _Similar:
    at: float
    # Hashes of the messages seen, not the messages: a node's messages (up to 1 KiB each) would
    # otherwise be kept here until evicted.
    messages: set[int] = field(default_factory=set)


class _Source:
    """One source's (component and host's) budgets and similar events, each its own LRU: no
    source can evict another's, and a flood of new reasons cannot evict a budget."""

    __slots__ = ("buckets", "entries", "similar")

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.buckets: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()
        self.similar: collections.OrderedDict[tuple[str, str, str], _Similar] = collections.OrderedDict()


class EventCorrelator:
    def __init__(
        self,
        *,
        burst: int = SPAM_BURST,
        refill_seconds: float = SPAM_REFILL_SECONDS,
        aggregate_at: int = AGGREGATE_AT,
        window_seconds: float = AGGREGATE_WINDOW_SECONDS,
        entries: int = CACHE_ENTRIES,
        node_entries: int = NODE_CACHE_ENTRIES,
        sources: int = SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = burst
        self._refill = refill_seconds
        self._aggregate_at = aggregate_at
        self._window = window_seconds
        self._entries = entries
        self._node_entries = node_entries
        self._max_sources = sources
        # Monotonic, as client-go's: a wall clock stepped forward would refill every budget.
        self._clock = clock
        self._sources: collections.OrderedDict[tuple[str, str], _Source] = collections.OrderedDict()

    def correlate(
        self,
        ref: workloads_pb2.ObjectReference,
        type_: str,
        reason: str,
        message: str,
        *,
        component: str,
        host: str,
    ) -> Correlated | None:
        """The event to write for this one, or None: it is dropped (spam)."""
        now = self._clock()
        source = self._source(component, host)
        self._forget_expired(source, now)
        obj = f"{ref.kind}\0{ref.namespace}\0{ref.name}\0{ref.uid}"
        # Aggregation first, as client-go does: a dropped event still counts as similar.
        key = (obj, type_, reason)
        similar = source.similar.get(key)
        if similar is None or now - similar.at > self._window:
            similar = source.similar[key] = _Similar(now)
            if len(source.similar) > source.entries:
                source.similar.popitem(last=False)
        else:
            source.similar.move_to_end(key)
            similar.at = now
        similar.messages.add(hash(message))
        if len(similar.messages) < self._aggregate_at:
            correlated = Correlated(message, fold_of(ref, reason, message))
        else:
            similar.messages.pop()  # bounded: one in, one out, as client-go keeps it
            fold = f"{ref.uid}/{type_}/{reason}/{component}/{host}/{COMBINED}"
            correlated = Correlated(COMBINED + message, fold)
        return correlated if self._take_token(source, obj, now) else None

    def _forget_expired(self, source: _Source, now: float) -> None:
        """Drop what no longer counts: similar events outside the window, and budgets that are
        full again (a new one would start full), from the least recently used end of `source`'s
        caches and of the least recently used source, which goes once both are empty. Each entry
        is dropped once, so this costs O(1) per event, and the caches hold what the last window
        (up to two hours for a spent budget) saw, not every pod and node there ever was."""
        for caches in (source, next(iter(self._sources.values()))):
            similar, buckets = caches.similar, caches.buckets
            while similar:
                key, record = next(iter(similar.items()))
                if now - record.at <= self._window:
                    break
                del similar[key]
            while buckets:
                obj, bucket = next(iter(buckets.items()))
                if now - bucket.at < (self._burst - bucket.tokens) * self._refill:
                    break
                del buckets[obj]
        oldest_key, oldest = next(iter(self._sources.items()))
        if oldest is not source and not oldest.similar and not oldest.buckets:
            del self._sources[oldest_key]

    def _source(self, component: str, host: str) -> _Source:
        key = (component, host)
        source = self._sources.get(key)
        if source is None:
            source = self._sources[key] = _Source(self._node_entries if host else self._entries)
            if len(self._sources) > self._max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(key)
        return source

    def _take_token(self, source: _Source, obj: str, now: float) -> bool:
        bucket = source.buckets.get(obj)
        if bucket is None:
            bucket = source.buckets[obj] = _Bucket(float(self._burst), now)
            if len(source.buckets) > source.entries:
                source.buckets.popitem(last=False)
        else:
            source.buckets.move_to_end(obj)
            bucket.tokens = min(float(self._burst), bucket.tokens + max(0.0, now - bucket.at) / self._refill)
            bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True
