"""Node heartbeats, persisted coarsely as leases, so a restarted coordinator (and every coordinator of
several) knows who is alive.

Heartbeats arrive every few seconds and stay in memory (NodeHealth); what is
written is a lease per node, ``/nodeleases/<node>``, holding the time of its
last heartbeat, at most once per `write_interval` and batched into few
transactions: Kubernetes' Lease objects, not a Node rewrite. Every
coordinator loads the leases at start and follows them by watch, so a node
that heartbeats to one coordinator is alive for all, the leader's node
lifecycle included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable

from atoll import errors
from atoll.aio import wait_or_stop
from coordinator.controllers.nodelifecycle import NodeHealth
from coordinator.store.base import Op, Store

log = logging.getLogger(__name__)

PREFIX = "/nodeleases/"
BATCH = 64  # ops per transaction (etcd caps them)


class NodeLeases:
    def __init__(
        self,
        store: Store,
        health: NodeHealth,
        *,
        write_interval: float,
        flush_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._health = health
        self._write_interval = write_interval
        self._flush_interval = flush_interval
        self._clock = clock
        self._written: dict[str, float] = {}  # node -> the heartbeat time last persisted
        self._written_interval: dict[str, float] = {}  # node -> the interval it was persisted with
        self._exists: set[str] = set()

    async def load(self) -> int:
        """Every persisted heartbeat into memory; returns the revision read at."""
        items, revision = await self._store.list(PREFIX)
        for kv in items:
            self._seen(kv.key.removeprefix(PREFIX), kv.value)
        return revision

    def _seen(self, node: str, value: bytes) -> None:
        self._exists.add(node)
        try:
            lease = json.loads(value)
            renewed = float(lease["renewTime"])
            interval = float(lease.get("interval", 0.0))  # absent in an older coordinator's lease
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        if renewed >= self._written.get(node, 0.0):
            self._written[node], self._written_interval[node] = renewed, interval
        self._health.seen(node, renewed, interval)

    async def run(self, stop: asyncio.Event) -> None:
        revision = await self.load()
        follow = asyncio.create_task(self._follow(stop, revision))
        try:
            while not await wait_or_stop(stop, self._flush_interval):
                try:
                    await self.flush()
                except errors.AtollError as exc:
                    log.warning("persisting node heartbeats failed: %s", exc)
        finally:
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)

    async def flush(self) -> int:
        """Write the heartbeats that moved on by `write_interval` since last written; returns how many."""
        judged = self._health.judged_interval
        due = self.due()
        for start in range(0, len(due), BATCH):
            batch = due[start : start + BATCH]
            intervals = {node: judged.get(node, 0.0) for node, _ in batch}
            ops = [
                Op(
                    "update" if node in self._exists else "create",
                    PREFIX + node,
                    _value(beat, intervals[node]),
                )
                for node, beat in batch
            ]
            try:
                await self._store.txn(ops)
            except (errors.NotFound, errors.AlreadyExists, errors.Conflict):
                for op in ops:  # someone else created or deleted one meanwhile: one by one
                    await self._write_one(op.key, op.value)
            for node, beat in batch:
                self._written[node] = beat
                self._written_interval[node] = intervals[node]
                self._exists.add(node)
        return len(due)

    def due(self) -> list[tuple[str, float]]:
        """(node, heartbeat) whose lease is to be written: a heartbeat newer by write_interval, or
        a longer interval than the lease says (the leader must not judge the node by a shorter one
        it may no longer be sleeping on)."""
        judged = self._health.judged_interval
        return [
            (node, beat)
            for node, beat in list(self._health.last_heartbeat.items())
            if beat - self._written.get(node, 0.0) >= self._write_interval
            or judged.get(node, 0.0) > self._written_interval.get(node, 0.0)
        ]

    async def _write_one(self, key: str, value: bytes) -> None:
        try:
            await self._store.update(key, value)
        except errors.NotFound:
            try:
                await self._store.create(key, value)
            except errors.AlreadyExists:
                await self._store.update(key, value)

    async def _follow(self, stop: asyncio.Event, revision: int) -> None:
        while not stop.is_set():
            try:
                async for event in self._store.watch(PREFIX, revision):
                    node = event.kv.key.removeprefix(PREFIX)
                    if event.type == "put":
                        self._seen(node, event.kv.value)
                    else:
                        self._exists.discard(node)
                        self._written.pop(node, None)
                        self._written_interval.pop(node, None)
                    revision = event.revision
            except errors.Gone:
                revision = await self.load()

    async def forget(self, node: str) -> None:
        """The node was deleted: its lease goes too."""
        try:
            await self._store.delete(PREFIX + node)
        except errors.NotFound:
            pass
        self._exists.discard(node)
        self._written.pop(node, None)
        self._written_interval.pop(node, None)


def _value(beat: float, interval: float = 0.0) -> bytes:
    """A lease: the node's last heartbeat, and the interval it may be sleeping on, by which
    every coordinator judges its silence (Kubernetes' Lease carries leaseDurationSeconds)."""
    # Rounded down: the lease never looks newer than the heartbeat it records (its own echo,
    # read back through the watch, must not replace what this coordinator knows).
    lease: dict[str, float] = {"renewTime": math.floor(beat * 1000) / 1000}
    if interval > 0:
        lease["interval"] = round(interval, 3)
    return json.dumps(lease).encode()
