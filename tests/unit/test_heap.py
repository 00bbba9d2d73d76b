"""The agent's C heap: arenas capped once at start, free pages handed back on a timer."""

from __future__ import annotations

import asyncio

from agent.host.heap import GlibcHeap, RecordingHeap, trim_loop


class TwiceHeap(RecordingHeap):
    def __init__(self) -> None:
        super().__init__()
        self.twice = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def trim(self) -> bool:  # on the loop's worker thread
        done = super().trim()
        if self.trims == 2:
            self._loop.call_soon_threadsafe(self.twice.set)
        return done


async def test_the_trim_loop_trims_on_its_interval_and_ends_with_stop() -> None:
    heap, stop = TwiceHeap(), asyncio.Event()
    loop = asyncio.create_task(trim_loop(heap, stop, interval=0.01))
    await asyncio.wait_for(heap.twice.wait(), 5)
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert heap.arenas == []


async def test_a_stopped_loop_never_trims() -> None:
    heap, stop = RecordingHeap(), asyncio.Event()
    stop.set()
    await asyncio.wait_for(trim_loop(heap, stop, interval=0.01), 5)
    assert heap.trims == 0


def test_glibc_trims_this_process() -> None:
    # Debian's C library has malloc_trim; what it returns depends on what was free.
    assert GlibcHeap().trim() in (True, False)
