"""What only the SQLite store does: durability across reopening, WAL, group commit (the shared contract
is tests/store_contract.py, run over every store by test_store_contract.py)."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3

import pytest

from atoll import errors
from coordinator.store.base import Op
from coordinator.store.sqlite import SqliteStore


async def test_every_acknowledged_write_survives_reopening(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "atoll.db"
    s = await SqliteStore.open(path)
    await s.create("/pods/default/a", b"1")
    await s.update("/pods/default/a", b"2", expected_revision=1)
    with pytest.raises(errors.Conflict):
        await s.update("/pods/default/a", b"x", expected_revision=1)
    with pytest.raises(errors.AlreadyExists):
        await s.txn([Op("create", "/pods/default/b", b"b"), Op("create", "/pods/default/a", b"a")])
    await s.create("/nodes/n1", b"n")
    await s.delete("/nodes/n1")
    await s.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    again = await SqliteStore.open(path)
    try:
        kv = await again.get("/pods/default/a")
        assert kv is not None and kv.value == b"2" and kv.mod_revision == 2
        assert await again.get("/pods/default/b") is None
        assert again.revision == 4
        replay = []
        async for e in again.watch("/", 1):
            replay.append((e.type, e.kv.key, e.revision))
            if e.revision == 4:
                break
        assert replay == [("put", "/pods/default/a", 2), ("put", "/nodes/n1", 3), ("delete", "/nodes/n1", 4)]
    finally:
        await again.close()


async def test_concurrent_writes_commit_together_with_unique_revisions(tmp_path: pathlib.Path) -> None:
    s = await SqliteStore.open(tmp_path / "atoll.db")
    try:
        results = await asyncio.gather(
            *(s.create(f"/pods/default/p{i}", b"x") for i in range(500)),
            *(s.create("/pods/default/p0", b"dup") for _ in range(5)),
            return_exceptions=True,
        )
        revisions = [r.mod_revision for r in results if not isinstance(r, BaseException)]
        failures = [r for r in results if isinstance(r, BaseException)]
        assert len(revisions) == 500 and sorted(revisions) == list(range(1, 501))
        assert len(failures) == 5 and all(isinstance(f, errors.AlreadyExists) for f in failures)
    finally:
        await s.close()


async def test_a_second_opener_is_refused_while_the_store_is_open(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "atoll.db"
    s = await SqliteStore.open(path)
    try:
        with pytest.raises(errors.FailedPrecondition, match="in use by another process"):
            await SqliteStore.open(path)
        await s.create("/pods/default/a", b"1")  # the refused opener took nothing from the holder
    finally:
        await s.close()
    again = await SqliteStore.open(path)  # closing let go of the lock
    try:
        kv = await again.get("/pods/default/a")
        assert kv is not None and kv.value == b"1"
    finally:
        await again.close()


async def test_a_store_from_before_gets_a_rowid_kv_table_with_its_keys(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "atoll.db"
    s = await SqliteStore.open(path)
    await s.create("/pods/default/a", b"1")
    await s.create("/pods/default/b", b"2")
    await s.update("/pods/default/a", b"3", expected_revision=1)
    await s.close()
    # As the version before made it: the same rows in a WITHOUT ROWID table.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        "CREATE TABLE old_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL,"
        " mod_rev INTEGER NOT NULL) WITHOUT ROWID;"
        "INSERT INTO old_kv SELECT * FROM kv; DROP TABLE kv; ALTER TABLE old_kv RENAME TO kv;"
    )
    conn.close()

    again = await SqliteStore.open(path)
    try:
        (sql,) = sqlite3.connect(path).execute("SELECT sql FROM sqlite_master WHERE name='kv'").fetchone()
        assert "WITHOUT ROWID" not in sql.upper()
        a, b = await again.get("/pods/default/a"), await again.get("/pods/default/b")
        assert a is not None and (a.value, a.create_revision, a.mod_revision) == (b"3", 1, 3)
        assert b is not None and (b.value, b.create_revision, b.mod_revision) == (b"2", 2, 2)
        await again.update("/pods/default/b", b"4", expected_revision=2)
        await again.create("/pods/default/c", b"5")
    finally:
        await again.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0  # the old table's pages went back
    finally:
        conn.close()
    third = await SqliteStore.open(path)
    try:
        b, c = await third.get("/pods/default/b"), await third.get("/pods/default/c")
        assert b is not None and (b.value, b.create_revision, b.mod_revision) == (b"4", 2, 4)
        assert c is not None and c.value == b"5" and third.revision == 5
    finally:
        await third.close()


def test_a_conversion_that_fails_keeps_the_old_table(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "atoll.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL,"
        " mod_rev INTEGER NOT NULL) WITHOUT ROWID;"
    )
    for i in range(200):
        conn.execute("INSERT INTO kv VALUES (?, ?, 1, 1)", (f"/pods/default/p{i}", b"x" * 2000))
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages + 5}")  # no room for a copy: a full disk
    SqliteStore(path)._convert_kv(conn)
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name='kv'").fetchone()
    assert "WITHOUT ROWID" in sql.upper() and not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM kv").fetchone()[0] == 200
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name='kv_rowid'").fetchone()[0] == 0
    conn.close()
