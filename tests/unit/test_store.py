"""The store contract, on the in-memory store (the SQLite one runs the same checks in functional)."""

from __future__ import annotations

import asyncio

import pytest

from atoll import errors
from coordinator.store.base import Op
from coordinator.store.memory import MemoryStore


async def test_revisions_cas_and_txn() -> None:
    s = MemoryStore()
    a = await s.create("/pods/default/a", b"1")
    assert (a.create_revision, a.mod_revision) == (1, 1)
    with pytest.raises(errors.AlreadyExists):
        await s.create("/pods/default/a", b"x")
    b = await s.update("/pods/default/a", b"2", expected_revision=1)
    assert b.mod_revision == 2 and b.create_revision == 1
    with pytest.raises(errors.Conflict):
        await s.update("/pods/default/a", b"3", expected_revision=1)
    with pytest.raises(errors.AlreadyExists):
        await s.txn([Op("create", "/pods/default/b", b"b"), Op("create", "/pods/default/a", b"a")])
    assert await s.get("/pods/default/b") is None  # nothing of a failed txn applies
    kvs, rev = await s.list("/pods/")
    assert [kv.key for kv in kvs] == ["/pods/default/a"] and rev == 2
    gone = await s.delete("/pods/default/a")
    assert gone.value == b"2" and gone.mod_revision == 3


async def test_watch_replays_then_follows_without_gaps() -> None:
    s = MemoryStore(history_limit=100)
    await s.create("/pods/default/a", b"1")
    await s.create("/nodes/n1", b"n")
    seen: list[tuple[str, str, int]] = []

    async def follow() -> None:
        async for e in s.watch("/pods/", 0):
            seen.append((e.type, e.kv.key, e.revision))

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    await s.update("/pods/default/a", b"2")
    await s.delete("/pods/default/a")
    await asyncio.sleep(0)
    task.cancel()
    assert seen == [
        ("put", "/pods/default/a", 1),
        ("put", "/pods/default/a", 3),
        ("delete", "/pods/default/a", 4),
    ]


async def test_watch_too_old_is_gone() -> None:
    s = MemoryStore(history_limit=5)
    for i in range(10):
        await s.create(f"/pods/default/p{i}", b"x")
    with pytest.raises(errors.Gone):
        async for _ in s.watch("/pods/", 2):
            pass
    events = []
    async for e in s.watch("/pods/", 6):
        events.append(e.revision)
        if e.revision == 10:
            break
    assert events == [7, 8, 9, 10]
