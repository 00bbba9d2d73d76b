"""The periodic compactor: keep one interval of store history, give the rest back.

Kubernetes' API server compacts etcd every 5 minutes to the revision it saw at
the previous tick; this does the same. A watch can therefore resume from any
revision of the last `interval` (and at most two), and one from before that
gets errors.Gone and lists again (informers do so on their own).
"""

from __future__ import annotations

import asyncio
import logging

from atoll import errors
from atoll.aio import wait_or_stop
from coordinator.store.base import Store

log = logging.getLogger(__name__)


class Compactor:
    def __init__(self, store: Store, interval: float) -> None:
        self._store = store
        self.interval = interval

    async def tick(self, previous: int) -> int:
        """Compact to `previous` (the revision seen one interval ago); return the revision to use next."""
        if previous > self._store.compacted:
            try:
                await self._store.compact(previous)
                log.info("store history compacted to revision %d", previous)
            except errors.AtollError as exc:
                log.warning("store compaction to revision %d failed: %s", previous, exc)
        return self._store.revision

    async def run(self, stop: asyncio.Event) -> None:
        if self.interval <= 0:
            return
        previous = self._store.revision
        while not stop.is_set():
            if await wait_or_stop(stop, self.interval):
                return
            previous = await self.tick(previous)
