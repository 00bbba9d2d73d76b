"""Finding 6 (c): store history is compacted and the SQLite file shrinks again.

Over real gRPC: big pods are created and deleted, the history is compacted and
the database file gives the space back; watches from a compacted revision get
OUT_OF_RANGE (errors.Gone), and watchers recover by listing again.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import sqlite3
from collections.abc import AsyncIterator

import pytest
from google.protobuf.message import Message

from atoll import errors, kinds
from atoll.v1 import pod_pb2
from coordinator.cli.getcmd import cmd_get
from coordinator.cli.parser import build_parser
from coordinator.store.base import Store
from coordinator.store.compactor import Compactor
from coordinator.store.memory import MemoryStore
from coordinator.store.sqlite import SqliteStore
from tests.functional.harness import Cluster, eventually

POD = kinds.by_name("Pod")
KIB = 1024
log = logging.getLogger(__name__)


def padded_pod(name: str, size: int) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    c = p.spec.containers.add(name="main", image="busybox")
    c.env.add(name="PAD", value="x" * size)
    return p


def db_bytes(cluster: Cluster) -> int:
    """The database and its write-ahead log: what the store takes on disk."""
    base = cluster.coordinator.cfg.data_path / "atoll.db"
    return sum(p.stat().st_size for p in (base, base.with_name("atoll.db-wal")) if p.exists())


async def test_compaction_and_vacuum_shrink_the_database(tmp_path: pathlib.Path) -> None:
    cluster = await Cluster(tmp_path, insecure=True, compaction_interval=0).start()
    try:
        c = cluster.client
        store = cluster.coordinator.store
        assert c is not None and store is not None
        empty = db_bytes(cluster)
        for i in range(60):
            await c.create(padded_pod(f"big-{i}", 900 * KIB))
        for i in range(60):
            await c.delete(POD, "default", f"big-{i}")
        before = db_bytes(cluster)
        await Compactor(store, 300).tick(store.revision)
        after = db_bytes(cluster)
        log.warning(
            "store on disk: empty %d, after 60 pods of 900 KiB came and went %d, compacted %d",
            empty,
            before,
            after,
        )
        assert before > 100 * 1024 * KIB  # every pod is in the history at least twice
        assert after < 2 * 1024 * KIB and after < before // 50
        assert store.compacted == store.revision
    finally:
        await cluster.stop()


async def test_watch_from_a_compacted_revision_is_too_old(tmp_path: pathlib.Path) -> None:
    cluster = await Cluster(tmp_path, insecure=True, compaction_interval=0.2).start()
    try:
        c = cluster.client
        store = cluster.coordinator.store
        assert c is not None and store is not None
        first = await c.create(padded_pod("a", 10))
        old = first.metadata.resource_version  # type: ignore[attr-defined]
        await c.create(padded_pod("b", 10))
        # The periodic compactor catches up within two intervals.
        await eventually(
            lambda: _async(store.compacted > old), timeout=5, what="the compactor to pass revision a"
        )
        with pytest.raises(errors.Gone, match="too old"):
            async for _ in c.watch(POD, "default", "", old):
                break
        # Listing again gives a revision to watch from, and the watch follows.
        items, revision = await c.list(POD, "default")
        assert sorted(p.metadata.name for p in items) == ["a", "b"]  # type: ignore[attr-defined]
        stream = c.watch(POD, "default", "", revision)
        await c.create(padded_pod("c", 10))
        _, obj = await anext(stream)
        assert obj.metadata.name == "c"  # type: ignore[attr-defined]
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await cluster.stop()


async def _async(value: bool) -> bool:
    return value


async def test_existing_database_is_converted_to_incremental_vacuum(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "atoll.db"
    old = await SqliteStore.open(path)
    await old.create("/pods/default/a", b"1")
    await old.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA auto_vacuum=NONE")
    conn.execute("VACUUM")  # as a database written before auto_vacuum was set
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()

    store = await SqliteStore.open(path)
    try:
        kv = await store.get("/pods/default/a")
        assert kv is not None and kv.value == b"1"
        await store.create("/pods/default/b", b"2" * 100_000)
        await store.delete("/pods/default/b")
        await store.compact(store.revision)
        assert store.compacted == 3
        with pytest.raises(errors.Gone):
            async for _ in store.watch("/", 2):
                break
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    assert conn.execute("SELECT value FROM meta WHERE name='compacted'").fetchone()[0] == 3
    conn.close()
    reopened = await SqliteStore.open(path)
    try:
        assert reopened.compacted == 3 and reopened.revision == 3
    finally:
        await reopened.close()


async def test_cli_watch_survives_compaction(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`get pod NAME -w` of an object older than the history, and a watch cut off with Gone, list again."""
    cluster = await Cluster(tmp_path, insecure=True, compaction_interval=0).start()
    try:
        c = cluster.client
        store = cluster.coordinator.store
        assert c is not None and store is not None
        await c.create(padded_pod("old", 10))
        await c.create(padded_pod("other", 10))
        await store.compact(store.revision)  # "old"'s own revision is no longer in the history

        seen = ""

        async def printed(text: str, times: int = 1) -> bool:
            nonlocal seen
            captured = capsys.readouterr()
            seen += captured.out + captured.err
            return seen.count(text) >= times

        args = build_parser().parse_args(["get", "pod", "old", "-w", "-o", "name"])
        watching = asyncio.create_task(cmd_get(c, args))
        await eventually(lambda: printed("pod/old"), what="the first listing")
        current = await c.get(POD, "default", "old")
        assert isinstance(current, pod_pb2.Pod)
        current.spec.containers[0].image = "busybox:2"
        await c.update(current)
        await eventually(lambda: printed("pod/old", 2), what="the update, watched")
        assert not watching.done()
        assert "listing again" not in seen  # it watched from the store's revision, not the pod's
        watching.cancel()

        # A watch that ends with Gone (history compacted, or fallen behind) lists again and goes on.
        real_watch = c.watch
        calls = 0

        def flaky_watch(*a: object, **kw: object) -> AsyncIterator[tuple[int, Message]]:
            nonlocal calls
            calls += 1
            if calls == 1:
                return _gone()
            return real_watch(*a, **kw)  # type: ignore[arg-type]

        c.watch = flaky_watch  # type: ignore[method-assign]
        args = build_parser().parse_args(["get", "pods", "-w", "-o", "name"])
        watching = asyncio.create_task(cmd_get(c, args))
        await eventually(lambda: _async(calls == 2), what="the watch to be opened again")
        await c.create(padded_pod("new", 10))
        seen = ""
        await eventually(lambda: printed("pod/new"), what="the new pod, watched after relisting")
        assert "listing again" in seen and seen.count("pod/old") >= 1
        watching.cancel()
    finally:
        await cluster.stop()


async def _gone() -> AsyncIterator[tuple[int, Message]]:
    raise errors.Gone("resource version 1 is too old")
    yield  # pragma: no cover


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_compact_and_snapshot_lists_in_every_store(tmp_path: pathlib.Path, kind: str) -> None:
    store: Store = MemoryStore() if kind == "memory" else await SqliteStore.open(tmp_path / "atoll.db")
    try:
        await store.create("/pods/default/a", b"a1")  # 1
        await store.create("/pods/default/b", b"b1")  # 2
        await store.update("/pods/default/a", b"a2")  # 3
        await store.delete("/pods/default/b")  # 4
        await store.create("/nodes/n", b"n")  # 5
        at2, rev = await store.list("/pods/", 2)
        assert rev == 2 and [(kv.key, kv.value) for kv in at2] == [
            ("/pods/default/a", b"a1"),
            ("/pods/default/b", b"b1"),
        ]
        now, rev = await store.list("/pods/")
        assert rev == 5 and [(kv.key, kv.value) for kv in now] == [("/pods/default/a", b"a2")]
        await store.compact(3)
        assert store.compacted == 3
        with pytest.raises(errors.Gone):
            await store.list("/pods/", 2)
        with pytest.raises(errors.Gone):
            async for _ in store.watch("/", 2):
                break
        replay = []
        async for event in store.watch("/", 3):
            replay.append((event.type, event.kv.key))
            if event.revision == 5:
                break
        assert replay == [("delete", "/pods/default/b"), ("put", "/nodes/n")]
        await store.compact(100)  # capped at the current revision
        assert store.compacted == 5
    finally:
        await store.close()
