"""The etcd store on a real 3-member etcd: failover, watch resume, compaction, CAS under contention.

The store contract suite runs over etcd too (test_store_contract_etcd.py); these
are the properties only a real cluster can show. Every test uses keys of its own
under a fresh prefix, on the run's shared etcd (the etcd_cluster fixture).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator

import pytest

from atoll import errors
from coordinator.store.base import StoreEvent
from coordinator.store.etcd import EtcdStore
from tests.integration.etcd import EtcdCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
async def store(etcd_cluster: EtcdCluster) -> AsyncIterator[EtcdStore]:
    s = await EtcdStore.open(etcd_cluster.endpoints)
    try:
        yield s
    finally:
        await s.close()


def prefix() -> str:
    return f"/test-{uuid.uuid4().hex[:8]}/"


async def test_every_write_is_seen_once_by_a_watch_across_killed_members(
    store: EtcdStore, etcd_cluster: EtcdCluster
) -> None:
    base = prefix()
    _, start = await store.list(base)
    seen: list[StoreEvent] = []

    async def watch() -> None:
        async for event in store.watch(base, start):
            seen.append(event)
            if len(seen) == 60:
                return

    watcher = asyncio.create_task(watch())
    written = []
    for member in range(3):  # kill each member in turn while writing: the one we talk to dies too
        for i in range(10):
            written.append((await store.create(f"{base}k{member}-{i}", b"x")).mod_revision)
        etcd_cluster.kill(member)
        for i in range(10, 20):
            written.append((await store.create(f"{base}k{member}-{i}", b"x")).mod_revision)
        etcd_cluster.restart(member)
    await asyncio.wait_for(watcher, 60)
    assert [e.revision for e in seen] == written  # none lost, none twice, in order
    items, _ = await store.list(base)
    assert len(items) == 60


async def test_a_compacted_revision_is_gone_for_watches_and_lists(store: EtcdStore) -> None:
    base = prefix()
    first = await store.create(f"{base}a", b"1")
    await store.update(f"{base}a", b"2")
    await store.compact(store.revision)
    with pytest.raises(errors.Gone, match="too old"):
        async for _ in store.watch(base, first.mod_revision - 1):
            pass
    with pytest.raises(errors.Gone):
        await store.list(base, first.mod_revision)
    items, _ = await store.list(base)
    assert [kv.value for kv in items] == [b"2"]  # values survive compaction


async def test_a_watch_learns_of_another_coordinators_compaction(etcd_cluster: EtcdCluster) -> None:
    one, two = await EtcdStore.open(etcd_cluster.endpoints), await EtcdStore.open(etcd_cluster.endpoints)
    try:
        base = prefix()
        old = await one.create(f"{base}a", b"1")
        await one.update(f"{base}a", b"2")
        await two.compact(one.revision)  # one does not know
        with pytest.raises(errors.Gone, match="compacted"):
            async with asyncio.timeout(30):
                async for _ in one.watch(base, old.mod_revision - 1):
                    pass
    finally:
        await one.close()
        await two.close()


async def test_compare_and_swap_under_contention_loses_no_increment(store: EtcdStore) -> None:
    key = f"{prefix()}counter"
    await store.create(key, b"0")

    async def increment() -> int:
        for attempt in itertools.count():
            kv = await store.get(key)
            assert kv is not None
            try:
                await store.update(key, str(int(kv.value) + 1).encode(), kv.mod_revision)
                return attempt
            except errors.Conflict:
                continue
        raise AssertionError("unreachable")

    attempts = await asyncio.gather(*(increment() for _ in range(40)))
    kv = await store.get(key)
    assert kv is not None and kv.value == b"40"
    assert sum(attempts) > 0  # they did collide, and the CAS refused the stale ones
