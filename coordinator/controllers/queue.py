"""A work queue of object keys with at most one worker per key, like client-go's workqueue.

Handlers only enqueue keys; `run` pops them and calls the sync function. A key
enqueued while its sync runs is synced once more afterwards, so no change is
lost and no key is synced twice at the same time. Failed syncs are retried
with a delay; a periodic resync re-enqueues everything as a safety net.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Iterable

from atoll import errors
from atoll.aio import wait_any

log = logging.getLogger(__name__)


class WorkQueue:
    def __init__(
        self, name: str, sync: Callable[[str], Awaitable[None]], *, workers: int = 4, retry_delay: float = 1.0
    ) -> None:
        self.name = name
        self._sync = sync
        self._workers = workers
        self._retry_delay = retry_delay
        self._queue: collections.deque[str] = collections.deque()
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._dirty: set[str] = set()
        self._later: set[str] = set()
        self._wakeup = asyncio.Event()

    def add(self, key: str) -> None:
        if key in self._active:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._queue.append(key)
            self._wakeup.set()

    def add_all(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.add(key)

    def add_after(self, key: str, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.add, key)

    def add_later(self, key: str, delay: float) -> None:
        """Add `key` after `delay`, unless it is queued or already scheduled: coalesces bursts."""
        if key in self._queued or key in self._later:
            return
        self._later.add(key)

        def fire() -> None:
            self._later.discard(key)
            self.add(key)

        asyncio.get_running_loop().call_later(delay, fire)

    def __len__(self) -> int:
        return len(self._queue)

    async def _worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self._queue:
                self._wakeup.clear()
                await wait_any(stop, None, self._wakeup)
                continue
            key = self._queue.popleft()
            self._queued.discard(key)
            self._active.add(key)
            try:
                await self._sync(key)
            except errors.AtollError as exc:
                log.info("%s: sync of %s failed: %s; retrying", self.name, key, exc)
                self.add_after(key, self._retry_delay)
            except Exception:
                log.exception("%s: sync of %s crashed; retrying", self.name, key)
                self.add_after(key, self._retry_delay)
            finally:
                self._active.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._worker(stop) for _ in range(self._workers)))
