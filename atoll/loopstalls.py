"""When this process's event loop could not run what was due, and for how long.

A coordinator saturated by a scheduling burst answers heartbeats late: they
wait behind the work in the loop. Silence that accrued while the coordinator
itself could not listen is not the node's fault, so the node lifecycle
subtracts it before judging (Kubernetes' node controller likewise judges by
when it observed a lease, not by the lease's own time). A sentinel sleeps
`interval` at a time; whatever it oversleeps by more than `threshold` was a
stall.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from atoll.aio import wait_or_stop


class DeafTime(Protocol):
    def within(self, seconds: float) -> float:
        """How many of the last `seconds` this process could not hear calls."""
        ...


class Deafness:
    """The larger of several measures of deaf time (they overlap: a stalled loop delays calls
    too, and coordinator.api.callqueue times calls held in gRPC's queue as well)."""

    def __init__(self, sources: Sequence[DeafTime]) -> None:
        self._sources = tuple(sources)

    def within(self, seconds: float) -> float:
        return max((s.within(seconds) for s in self._sources), default=0.0)


class LoopStalls:
    def __init__(
        self,
        *,
        interval: float = 0.1,
        threshold: float = 0.1,
        keep: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._threshold = threshold
        self._keep = keep
        self._clock = clock
        self._stalls: collections.deque[tuple[float, float]] = collections.deque()  # (start, end)

    def record(self, start: float, end: float) -> None:
        """The loop could not run between `start` and `end` (monotonic)."""
        self._stalls.append((start, end))
        while self._stalls and self._stalls[0][1] < end - self._keep:
            self._stalls.popleft()

    def within(self, seconds: float) -> float:
        """How many of the last `seconds` the loop spent stalled."""
        now = self._clock()
        since = now - seconds
        total = 0.0
        for start, end in reversed(self._stalls):
            if end <= since:
                break
            total += end - max(start, since)
        return min(total, seconds)

    def longest(self) -> float:
        """The longest stall still remembered."""
        return max((end - start for start, end in self._stalls), default=0.0)

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            before = self._clock()
            if await wait_or_stop(stop, self._interval):
                return
            after = self._clock()
            late = after - before - self._interval
            if late > self._threshold:
                self.record(after - late, after)
