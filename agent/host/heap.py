"""The agent's C heap: few malloc arenas, and free pages handed back to the kernel.

An idle agent holds memory it no longer uses. glibc gives every thread that
allocates an arena of its own (up to eight per core), and the Docker SDK's
calls run on up to 16 pool threads, so a few hundred KiB of free blocks sit
in each arena; and the start-up's and each sync's temporaries leave free pages
inside the heap that glibc keeps rather than returns. So the agent caps the
arenas at two, before it starts any thread, and asks glibc to give back whole
free pages (`malloc_trim`) every half minute. `bench/agent_footprint.py`
measures what it saves. On a C library without these calls (musl) both are
no-ops.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from typing import Any, Protocol

from atoll.aio import wait_or_stop

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2
TRIM_INTERVAL = 30.0


class Heap(Protocol):
    def limit_arenas(self, count: int) -> bool:
        """Cap the allocator's arenas at `count`; False when the C library cannot."""
        ...

    def trim(self) -> bool:
        """Hand free pages back to the kernel; True when some were."""
        ...


class GlibcHeap:
    """glibc's `mallopt` and `malloc_trim`, looked up on first use (never at import)."""

    def __init__(self) -> None:
        self._libc: Any = None

    def _lookup(self, name: str) -> Any:
        if self._libc is None:
            self._libc = ctypes.CDLL(None)
        return getattr(self._libc, name, None)

    def limit_arenas(self, count: int) -> bool:
        mallopt = self._lookup("mallopt")
        return bool(mallopt is not None and mallopt(M_ARENA_MAX, count) == 1)

    def trim(self) -> bool:
        malloc_trim = self._lookup("malloc_trim")
        return bool(malloc_trim is not None and malloc_trim(0) == 1)


class RecordingHeap:
    """A fake for tests: counts the calls, changes nothing."""

    def __init__(self) -> None:
        self.arenas: list[int] = []
        self.trims = 0

    def limit_arenas(self, count: int) -> bool:
        self.arenas.append(count)
        return True

    def trim(self) -> bool:
        self.trims += 1
        return True


async def trim_loop(heap: Heap, stop: asyncio.Event, interval: float = TRIM_INTERVAL) -> None:
    """Trim every `interval` seconds until `stop`; in a thread (it walks the heap under its lock)."""
    while not await wait_or_stop(stop, interval):
        try:
            await asyncio.to_thread(heap.trim)
        except OSError as exc:  # ctypes could not load the C library: nothing to trim, ever
            log.debug("heap trim unavailable: %s", exc)
            return
