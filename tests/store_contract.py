"""The store contract (coordinator/store/base.py), written once, run over every Store implementation.

Not a test module itself: `tests/functional/test_store_contract.py` runs these
over the memory and SQLite stores, `tests/integration/test_store_contract_etcd.py`
over etcd (like Nomad's state tests over every backend). Each importing module
provides a `store` fixture: an empty store, or one whose keys are all this
test's. Revisions are compared with each other, never with fixed numbers:
etcd's start wherever the cluster is, and a transaction's ops share one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from atoll import errors
from coordinator.store.base import Op, Store, StoreEvent

__all__ = [
    "test_compaction_forgets_history_but_keeps_values",
    "test_create_get_and_compare_and_swap",
    "test_delete_returns_the_last_value",
    "test_list_is_sorted_scoped_and_reads_a_snapshot",
    "test_ranges_read_one_page_of_a_snapshot_and_count_the_rest",
    "test_revisions_only_grow",
    "test_transactions_apply_all_or_nothing",
    "test_watch_replays_then_follows_only_its_prefix",
]


async def _collect(stream: AsyncIterator[StoreEvent], count: int, timeout: float = 10) -> list[StoreEvent]:
    seen: list[StoreEvent] = []

    async def take() -> None:
        async for event in stream:
            seen.append(event)
            if len(seen) == count:
                return

    await asyncio.wait_for(take(), timeout)
    return seen


async def test_create_get_and_compare_and_swap(store: Store) -> None:
    a = await store.create("/pods/default/a", b"1")
    assert (a.key, a.value) == ("/pods/default/a", b"1") and a.create_revision == a.mod_revision
    assert await store.get("/pods/default/a") == a
    assert await store.get("/pods/default/missing") is None
    with pytest.raises(errors.AlreadyExists):
        await store.create("/pods/default/a", b"again")
    b = await store.update("/pods/default/a", b"2", expected_revision=a.mod_revision)
    assert b.create_revision == a.create_revision and b.mod_revision > a.mod_revision
    with pytest.raises(errors.Conflict):
        await store.update("/pods/default/a", b"stale", expected_revision=a.mod_revision)
    c = await store.update("/pods/default/a", b"3")  # unconditional
    assert c.value == b"3" and c.mod_revision > b.mod_revision
    with pytest.raises(errors.NotFound):
        await store.update("/pods/default/missing", b"x")
    kv = await store.get("/pods/default/a")
    assert kv is not None and kv.value == b"3"


async def test_delete_returns_the_last_value(store: Store) -> None:
    a = await store.create("/pods/default/a", b"1")
    with pytest.raises(errors.Conflict):
        await store.delete("/pods/default/a", expected_revision=a.mod_revision + 1000)
    gone = await store.delete("/pods/default/a", expected_revision=a.mod_revision)
    assert (
        gone.value == b"1"
        and gone.create_revision == a.create_revision
        and gone.mod_revision > a.mod_revision
    )
    assert await store.get("/pods/default/a") is None
    with pytest.raises(errors.NotFound):
        await store.delete("/pods/default/a")


async def test_transactions_apply_all_or_nothing(store: Store) -> None:
    existing = await store.create("/pods/default/a", b"1")
    with pytest.raises(errors.AlreadyExists):
        await store.txn([Op("create", "/pods/default/b", b"b"), Op("create", "/pods/default/a", b"a")])
    with pytest.raises(errors.Conflict):
        await store.txn(
            [
                Op("create", "/pods/default/b", b"b"),
                Op("update", "/pods/default/a", b"x", existing.mod_revision - 1),
            ]
        )
    assert await store.get("/pods/default/b") is None  # nothing of a refused transaction applies
    b, a = await store.txn(
        [Op("create", "/pods/default/b", b"b"), Op("update", "/pods/default/a", b"2", existing.mod_revision)]
    )
    assert (b.value, a.value) == (b"b", b"2") and b.mod_revision > existing.mod_revision
    assert a.create_revision == existing.create_revision


async def test_list_is_sorted_scoped_and_reads_a_snapshot(store: Store) -> None:
    for name in ("c", "a", "b"):
        await store.create(f"/pods/default/{name}", name.encode())
    await store.create("/nodes/n1", b"n")
    items, revision = await store.list("/pods/")
    assert [kv.key for kv in items] == ["/pods/default/a", "/pods/default/b", "/pods/default/c"]
    assert revision >= max(kv.mod_revision for kv in items)
    await store.delete("/pods/default/a")
    await store.create("/pods/default/d", b"d")
    then, at = await store.list("/pods/", revision)  # the same snapshot, for the next page of a list
    assert at == revision and [kv.key for kv in then] == [kv.key for kv in items]
    now, _ = await store.list("/pods/")
    assert [kv.key for kv in now] == ["/pods/default/b", "/pods/default/c", "/pods/default/d"]


async def test_ranges_read_one_page_of_a_snapshot_and_count_the_rest(store: Store) -> None:
    for name in ("e", "a", "c", "b", "d"):
        await store.create(f"/pods/default/{name}", name.encode())
    await store.create("/pods/other/z", b"z")
    await store.create("/nodes/n1", b"n")
    first = await store.list_range("/pods/default/", limit=2)
    assert [kv.key for kv in first.kvs] == ["/pods/default/a", "/pods/default/b"]
    assert first.more == 3
    revision = first.revision
    # Between pages, one key goes, one comes and one changes: the next pages read the snapshot.
    await store.delete("/pods/default/c")
    await store.create("/pods/default/bb", b"bb")
    old_d = await store.get("/pods/default/d")
    assert old_d is not None
    await store.update("/pods/default/d", b"d2")
    second = await store.list_range("/pods/default/", revision, after="/pods/default/b", limit=2)
    assert [(kv.key, kv.value) for kv in second.kvs] == [("/pods/default/c", b"c"), ("/pods/default/d", b"d")]
    assert second.revision == revision and second.more == 1
    assert second.kvs[1].mod_revision == old_d.mod_revision
    last = await store.list_range("/pods/default/", revision, after="/pods/default/d", limit=2)
    assert [kv.key for kv in last.kvs] == ["/pods/default/e"] and last.more == 0
    # Now, from a key that is not there, without a limit: the rest, nothing counted after it.
    now = await store.list_range("/pods/", after="/pods/default/ba")
    assert [kv.key for kv in now.kvs] == [
        "/pods/default/bb",
        "/pods/default/d",
        "/pods/default/e",
        "/pods/other/z",
    ]
    assert now.more == 0 and [kv.value for kv in now.kvs][1] == b"d2"
    # A start before the prefix starts at the prefix: no key of another namespace.
    early = await store.list_range("/pods/other/", after="/pods/default/a")
    assert [kv.key for kv in early.kvs] == ["/pods/other/z"] and early.more == 0


async def test_revisions_only_grow(store: Store) -> None:
    seen = [store.revision]
    for i in range(5):
        seen.append((await store.create(f"/pods/default/p{i}", b"x")).mod_revision)
        seen.append(store.revision)
    assert seen == sorted(seen) and len(set(seen[1::2])) == 5


async def test_watch_replays_then_follows_only_its_prefix(store: Store) -> None:
    _, start = await store.list("/pods/")
    a = await store.create("/pods/default/a", b"1")
    await store.create("/nodes/n1", b"n")  # another prefix: not seen
    stream = store.watch("/pods/", start)
    first = await _collect(stream, 1)
    assert [(e.type, e.kv.key, e.kv.value) for e in first] == [("put", "/pods/default/a", b"1")]
    assert first[0].revision == a.mod_revision and first[0].prev is None

    async def later() -> None:
        await asyncio.sleep(0.05)
        await store.update("/pods/default/a", b"2")
        await store.delete("/pods/default/a")

    writer = asyncio.create_task(later())
    rest = await _collect(stream, 2)
    await writer
    update, delete = rest
    assert (
        (update.type, update.kv.value) == ("put", b"2")
        and update.prev is not None
        and update.prev.value == b"1"
    )
    assert (delete.type, delete.kv.key, delete.kv.value) == ("delete", "/pods/default/a", b"2")
    assert first[0].revision < update.revision < delete.revision


async def test_compaction_forgets_history_but_keeps_values(store: Store) -> None:
    a = await store.create("/pods/default/a", b"1")
    b = await store.update("/pods/default/a", b"2")
    await store.compact(b.mod_revision)
    assert store.compacted >= b.mod_revision
    with pytest.raises(errors.Gone):
        await _collect(store.watch("/pods/", a.mod_revision - 1), 1)
    with pytest.raises(errors.Gone):
        await store.list("/pods/", a.mod_revision)
    items, _ = await store.list("/pods/")
    assert [kv.value for kv in items] == [b"2"]
    c = await store.update("/pods/default/a", b"3")  # a watch from the compaction point on works
    (event,) = await _collect(store.watch("/pods/", b.mod_revision), 1)
    assert event.revision == c.mod_revision
