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

Events about an object not seen for a while cost nothing: both caches keep the
latest 4,096 keys, and an evicted key starts afresh.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import NamedTuple

from atoll.v1 import workloads_pb2

SPAM_BURST = 25
SPAM_REFILL_SECONDS = 300.0
AGGREGATE_AT = 10
AGGREGATE_WINDOW_SECONDS = 600.0
CACHE_ENTRIES = 4096
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
    messages: set[str] = field(default_factory=set)


class EventCorrelator:
    def __init__(
        self,
        *,
        burst: int = SPAM_BURST,
        refill_seconds: float = SPAM_REFILL_SECONDS,
        aggregate_at: int = AGGREGATE_AT,
        window_seconds: float = AGGREGATE_WINDOW_SECONDS,
        entries: int = CACHE_ENTRIES,
    ) -> None:
        self._burst = burst
        self._refill = refill_seconds
        self._aggregate_at = aggregate_at
        self._window = window_seconds
        self._entries = entries
        self._buckets: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()
        self._similar: collections.OrderedDict[str, _Similar] = collections.OrderedDict()

    def correlate(
        self,
        ref: workloads_pb2.ObjectReference,
        type_: str,
        reason: str,
        message: str,
        *,
        component: str,
        host: str,
        now: float,
    ) -> Correlated | None:
        """The event to write for this one, or None: it is dropped (spam)."""
        source = f"{component}\0{host}\0{ref.kind}\0{ref.namespace}\0{ref.name}\0{ref.uid}"
        # Aggregation first, as client-go does: a dropped event still counts as similar.
        key = f"{source}\0{type_}\0{reason}"
        similar = self._similar.get(key)
        if similar is None or now - similar.at > self._window:
            similar = _Similar(now)
            self._similar[key] = similar
            if len(self._similar) > self._entries:
                self._similar.popitem(last=False)
        else:
            self._similar.move_to_end(key)
            similar.at = now
        similar.messages.add(message)
        if len(similar.messages) < self._aggregate_at:
            correlated = Correlated(message, fold_of(ref, reason, message))
        else:
            similar.messages.pop()  # bounded: one in, one out, as client-go keeps it
            correlated = Correlated(COMBINED + message, f"{ref.uid}/{type_}/{reason}/{COMBINED}")
        return correlated if self._take_token(source, now) else None

    def _take_token(self, source: str, now: float) -> bool:
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = _Bucket(float(self._burst), now)
            if len(self._buckets) > self._entries:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
            bucket.tokens = min(float(self._burst), bucket.tokens + max(0.0, now - bucket.at) / self._refill)
            bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True
