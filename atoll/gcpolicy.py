"""How a long-running daemon lets Python's cyclic garbage collector run, and what its pauses cost.

CPython collects its young generation every 700 net allocations, and runs a
full (gen2) collection whenever the objects that survived grew by a quarter.
A coordinator in a scheduling burst keeps every pod it creates (store cache,
informers), so its heap grows all the time: bench/hollow.py measured 15 to 18
full collections in one 10,000-pod burst, 3.5 to 4.0 s of its 32 to 46 s of
CPU, each up to 343 ms. A collection holds the GIL, so it stops the event loop
and the heartbeat lane's thread alike. Most of what the coordinator allocates
per call (coroutines, futures, call state) is freed by reference counting
within a few thousand allocations. With a young generation of 20,000 those die
before any collection sees them, far fewer objects are promoted, and the
growth that triggers full collections is mostly the cache itself: the same
burst then ran no full collection, and its collections took 0.5 to 1.0 s.

`GCPolicy.apply` sets the thresholds; `freeze_start_up` moves what start-up built
(modules, configuration, the informers' first lists) out of every later
collection (`gc.freeze`). `GCPauses` times each collection through
`gc.callbacks`; `atoll.metrics.GCPauseMetrics` serves its figures. The
collector is the process's: one policy per process (`coordinator serve`).

The figures are CPython 3.11's, whose collector has three generations (Debian
12's Python). 3.14's incremental collector has two; there `old` means nothing
and `middle` paces the old generation's increments.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

#: The coordinator's young-generation threshold (CPython's own is 700).
DEFAULT_YOUNG = 20_000
#: What gc.set_threshold accepts (a C int).
MAX_THRESHOLD = 2**31 - 1
GENERATIONS = (0, 1, 2)


class GarbageCollector(Protocol):
    """The slice of the `gc` module a policy drives (a recording fake in the tests)."""

    def set_threshold(self, threshold0: int, threshold1: int = ..., threshold2: int = ..., /) -> None: ...
    def get_threshold(self) -> tuple[int, int, int]: ...
    def freeze(self) -> None: ...
    def get_freeze_count(self) -> int: ...
    def collect(self, generation: int = ..., /) -> int: ...
    def unfreeze(self) -> None: ...


@dataclass(frozen=True)
class GCPolicy:
    """Thresholds for the three generations; young 0 leaves the interpreter's own in place."""

    young: int = DEFAULT_YOUNG
    middle: int = 20
    old: int = 20

    def apply(self, collector: GarbageCollector = gc) -> tuple[int, int, int]:
        """Set the thresholds; returns what was in place before."""
        before = collector.get_threshold()
        if self.young > 0:
            collector.set_threshold(self.young, self.middle, self.old)
        return before


def freeze_start_up(collector: GarbageCollector = gc) -> int:
    """Leave everything alive now out of later collections; returns how many objects that is.
    A full collection first, so no garbage from start-up is frozen with it."""
    collector.collect()
    collector.freeze()
    return collector.get_freeze_count()


@dataclass
class GenerationPauses:
    collections: int = 0
    seconds: float = 0.0
    longest: float = 0.0


class GCPauses:
    """Times each collection of this process. Install once per process (`gc.callbacks` is global)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.generations = {g: GenerationPauses() for g in GENERATIONS}
        self._started = 0.0
        self._callbacks: list[Any] = []

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        took = self._clock() - self._started
        generation = int(info.get("generation", 0))
        g = self.generations.get(generation) or self.generations.setdefault(generation, GenerationPauses())
        g.collections += 1
        g.seconds += took
        g.longest = max(g.longest, took)

    def install(self, callbacks: list[Any] | None = None) -> GCPauses:
        """Start timing (`callbacks`: gc.callbacks unless a test gives its own list)."""
        self._callbacks = gc.callbacks if callbacks is None else callbacks
        if self not in self._callbacks:
            self._callbacks.append(self)
        return self

    def uninstall(self) -> None:
        if self in self._callbacks:
            self._callbacks.remove(self)


@contextlib.contextmanager
def governing(
    policy: GCPolicy, collector: GarbageCollector = gc, callbacks: list[Any] | None = None
) -> Iterator[tuple[GCPauses, bool]]:
    """The policy for the life of a serving process: yields its pause timer and whether the caller
    may freeze what start-up built (not when something froze objects before: that is not ours to
    thaw); afterwards the thresholds, the callbacks and the frozen objects are as they were."""
    ours = collector.get_freeze_count() == 0
    before = policy.apply(collector)
    pauses = GCPauses().install(callbacks)
    try:
        yield pauses, ours
    finally:
        pauses.uninstall()
        if ours:
            collector.unfreeze()
        collector.set_threshold(*before)
