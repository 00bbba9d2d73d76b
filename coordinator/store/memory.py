"""MemoryStore: the store contract with nothing durable behind it.

A test double for unit tests and hollow benchmarks; it shares MemoryState with
the SQLite store, so revisions, compare-and-swap and watch behave the same.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence

from coordinator.store.base import KV, Op, Range, StoreEvent, check_op
from coordinator.store.state import MemoryState


class MemoryStore:
    def __init__(self, history_limit: int = 10_000) -> None:
        self._state = MemoryState(history_limit)
        self.writes: list[Op] = []

    @property
    def revision(self) -> int:
        return self._state.revision

    @property
    def compacted(self) -> int:
        return self._state.compacted

    async def compact(self, revision: int) -> None:
        self._state.compact(revision)

    async def get(self, key: str) -> KV | None:
        return self._state.get(key)

    async def list(self, prefix: str, revision: int = 0) -> tuple[builtins.list[KV], int]:
        return self._state.list_at(prefix, revision)

    async def list_range(self, prefix: str, revision: int = 0, *, after: str = "", limit: int = 0) -> Range:
        return self._state.list_range(prefix, revision, after, limit)

    async def create(self, key: str, value: bytes) -> KV:
        return (await self.txn([Op("create", key, value)]))[0]

    async def update(self, key: str, value: bytes, expected_revision: int | None = None) -> KV:
        return (await self.txn([Op("update", key, value, expected_revision)]))[0]

    async def delete(self, key: str, expected_revision: int | None = None) -> KV:
        return (await self.txn([Op("delete", key, b"", expected_revision)]))[0]

    async def txn(self, ops: Sequence[Op]) -> builtins.list[KV]:
        pending: dict[str, KV | None] = {}
        events: list[StoreEvent] = []
        revision = self._state.revision
        for op in ops:
            current = pending[op.key] if op.key in pending else self._state.get(op.key)
            err = check_op(op, current)
            if err is not None:
                raise err
            revision += 1
            if op.type == "delete":
                assert current is not None
                kv = KV(op.key, current.value, current.create_revision, revision)
                events.append(StoreEvent("delete", kv, current))
                pending[op.key] = None
            else:
                created = current.create_revision if current else revision
                kv = KV(op.key, op.value, created, revision)
                events.append(StoreEvent("put", kv, current))
                pending[op.key] = kv
        self.writes.extend(ops)
        self._state.apply(events)
        return [e.kv for e in events]

    def watch(self, prefix: str, from_revision: int) -> AsyncIterator[StoreEvent]:
        return self._state.watch(prefix, from_revision)

    async def close(self) -> None:
        return None
