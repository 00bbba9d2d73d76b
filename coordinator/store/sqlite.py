"""SqliteStore: the embedded, zero-setup store of a single coordinator.

Durability: WAL journal with synchronous=FULL, so a write is acknowledged only
after its commit reached the disk; a `kill -9` (or power loss) after the
acknowledgement cannot lose it. One writer thread owns the connection and
commits whatever writes queued up meanwhile in one transaction (group commit),
so throughput does not collapse to one fsync per write. Each write keeps its
own precondition and its own revision; a failing one is rolled back to its
savepoint without touching its neighbours. Reads never touch the disk: current
keys and recent history are mirrored in memory (MemoryState).

Space: the file uses auto_vacuum=INCREMENTAL (a database made before that is
converted by one VACUUM at open). `compact(revision)` deletes the history at and
below `revision`, then `PRAGMA incremental_vacuum` and a truncating WAL
checkpoint hand the freed pages back, so the file shrinks after big objects
are deleted and their history is compacted.

One process at a time: the store holds an exclusive flock(2) on the database
file while open (SQLite's own locks are POSIX record locks, which flock does
not touch), so a second coordinator on the same file, or `coordinator store
migrate` while a coordinator runs, is refused instead of sharing it.
"""

from __future__ import annotations

import asyncio
import builtins
import fcntl
import logging
import os
import pathlib
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from atoll import errors, files
from coordinator.store.base import KV, Op, Range, StoreEvent, check_op
from coordinator.store.state import MemoryState

log = logging.getLogger(__name__)

_SIDE_FILES = ("-wal", "-shm", "-journal")  # SQLite's, beside the database

# kv is a rowid table: its rows are whole objects (a pod is 1-2 KiB), and a WITHOUT ROWID table
# keeps rows in its key's B-tree, which SQLite advises only for rows under about a twentieth of a
# page; there every insert split and every update rewrote pages of large cells. During
# bench/hollow.py's 10,000-pod burst the writer thread's CPU fell from 2.2 s to 1.2-1.3 s. A
# database from before is converted at open (_convert_kv).
_KV_COLUMNS = "key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL, create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS kv ({_KV_COLUMNS});
CREATE TABLE IF NOT EXISTS events (
    rev INTEGER PRIMARY KEY, type TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    create_rev INTEGER NOT NULL, prev_value BLOB, prev_create_rev INTEGER, prev_mod_rev INTEGER
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# Commit at most this many writes together.
_BATCH_LIMIT = 2000


@dataclass
class _Request:
    ops: Sequence[Op]
    future: asyncio.Future[builtins.list[KV]]
    events: builtins.list[StoreEvent] = field(default_factory=list)
    error: errors.AtollError | None = None
    # A compaction request (no ops): forget history at and below this revision.
    compact: int = 0


def _storage_error(exc: sqlite3.Error) -> errors.AtollError:
    text = str(exc)
    if "full" in text:
        return errors.ResourceExhausted(f"store write failed: {text}; free space under the data directory")
    return errors.Unavailable(f"store write failed: {text}")


class SqliteStore:
    def __init__(self, path: pathlib.Path, *, history_limit: int = 10_000, synchronous: str = "FULL") -> None:
        self._path = path
        self._synchronous = synchronous
        self._history_limit = history_limit
        self._state = MemoryState(history_limit)
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: sqlite3.Connection | None = None
        self._rev = 0
        self._compacted = 0  # the writer thread's view of meta.compacted
        self._lock: int | None = None  # a descriptor of the database holding flock(LOCK_EX)

    @classmethod
    async def open(cls, path: pathlib.Path, **kwargs: object) -> SqliteStore:
        store = cls(path, **kwargs)  # type: ignore[arg-type]
        await asyncio.to_thread(store._open_sync)
        store._loop = asyncio.get_running_loop()
        store._thread = threading.Thread(target=store._run_writer, name="sqlite-writer", daemon=True)
        store._thread.start()
        return store

    @property
    def files(self) -> tuple[pathlib.Path, ...]:
        """The store's files on disk: the database and SQLite's side files (those that exist)."""
        return (self._path, *(self._path.with_name(self._path.name + s) for s in _SIDE_FILES))

    # -- reads, served from memory ---------------------------------------------------------

    @property
    def revision(self) -> int:
        return self._state.revision

    async def get(self, key: str) -> KV | None:
        return self._state.get(key)

    async def list(self, prefix: str, revision: int = 0) -> tuple[builtins.list[KV], int]:
        return self._state.list_at(prefix, revision)

    async def list_range(self, prefix: str, revision: int = 0, *, after: str = "", limit: int = 0) -> Range:
        return self._state.list_range(prefix, revision, after, limit)

    def watch(self, prefix: str, from_revision: int) -> AsyncIterator[StoreEvent]:
        return self._state.watch(prefix, from_revision)

    @property
    def compacted(self) -> int:
        return self._state.compacted

    # -- writes, through the writer thread ------------------------------------------------

    async def create(self, key: str, value: bytes) -> KV:
        return (await self.txn([Op("create", key, value)]))[0]

    async def update(self, key: str, value: bytes, expected_revision: int | None = None) -> KV:
        return (await self.txn([Op("update", key, value, expected_revision)]))[0]

    async def delete(self, key: str, expected_revision: int | None = None) -> KV:
        return (await self.txn([Op("delete", key, b"", expected_revision)]))[0]

    async def txn(self, ops: Sequence[Op]) -> builtins.list[KV]:
        if self._thread is None or not self._thread.is_alive():
            raise errors.Unavailable("store is closed")
        future: asyncio.Future[builtins.list[KV]] = asyncio.get_running_loop().create_future()
        self._queue.put(_Request(list(ops), future))
        return await future

    async def compact(self, revision: int) -> None:
        if self._thread is None or not self._thread.is_alive():
            raise errors.Unavailable("store is closed")
        future: asyncio.Future[builtins.list[KV]] = asyncio.get_running_loop().create_future()
        self._queue.put(_Request([], future, compact=max(revision, 1)))
        await future

    async def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
        self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _take_lock(self) -> None:
        """Hold the database for this store alone, or refuse naming the problem."""
        fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise errors.FailedPrecondition(
                f"store {self._path} is in use by another process (a running coordinator?): stop it first"
            ) from None
        except OSError as exc:  # a file system without flock: serve, unguarded
            log.warning(
                "cannot lock store %s (%s): nothing stops a second process opening it", self._path, exc
            )
        self._lock = fd

    # -- the writer thread ----------------------------------------------------------------

    def _open_sync(self) -> None:
        # Private whatever the umask (objects carry registry passwords): a missing directory is made
        # 0700, the database 0600 before SQLite opens it, and SQLite then gives -wal and -shm the
        # database's mode; files an older version left readable by others are tightened.
        files.private_dir(self._path.parent, tighten=False)
        for path in (self._path, *(self._path.with_name(self._path.name + s) for s in _SIDE_FILES)):
            if files.private_file(path, create=path == self._path):
                log.warning("%s was readable by others: now mode 0600", path)
        self._take_lock()
        try:
            self._open_locked()
        except BaseException:
            self._unlock()
            raise

    def _open_locked(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            # Only takes effect before the first table exists, or after a VACUUM.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                log.info("converting store %s to incremental auto-vacuum (one VACUUM)", self._path)
                conn.execute("VACUUM")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.executescript(_SCHEMA)
        self._convert_kv(conn)
        row = conn.execute("SELECT value FROM meta WHERE name='revision'").fetchone()
        self._rev = row[0] if row else 0
        row = conn.execute("SELECT value FROM meta WHERE name='compacted'").fetchone()
        compacted = row[0] if row else 0
        kvs = [
            KV(k, v, c, m) for k, v, c, m in conn.execute("SELECT key, value, create_rev, mod_rev FROM kv")
        ]
        history = [
            self._event_from_row(r)
            for r in conn.execute(
                "SELECT rev, type, key, value, create_rev, prev_value, prev_create_rev, prev_mod_rev "
                "FROM events WHERE rev > ? ORDER BY rev",
                (max(compacted, self._rev - self._history_limit),),
            )
        ]
        compacted = max(compacted, self._rev - self._history_limit, 0)
        self._compacted = compacted
        self._state.load(kvs, history, self._rev, compacted)
        self._conn = conn
        log.info("opened store %s at revision %d with %d keys", self._path, self._rev, len(kvs))

    def _convert_kv(self, conn: sqlite3.Connection) -> None:
        """A kv table made WITHOUT ROWID (before this version) becomes a rowid table, in one
        transaction. A coordinator of the version before reads and writes either kind."""
        row = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='kv'").fetchone()
        if row is None or "WITHOUT ROWID" not in row[0].upper():
            return
        count = conn.execute("SELECT count(*) FROM kv").fetchone()[0]
        log.info("converting the kv table of store %s (%d keys) to a rowid table", self._path, count)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DROP TABLE IF EXISTS kv_rowid")
            conn.execute(f"CREATE TABLE kv_rowid ({_KV_COLUMNS})")
            conn.execute("INSERT INTO kv_rowid SELECT key, value, create_rev, mod_rev FROM kv")
            conn.execute("DROP TABLE kv")
            conn.execute("ALTER TABLE kv_rowid RENAME TO kv")
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            # A full disk, most likely: the copy needs the table's size again. Both kinds serve.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.warning(
                "store %s keeps its WITHOUT ROWID kv table (the conversion failed: %s)", self._path, exc
            )
            return
        self._give_back_space(conn)  # the old table's pages, and the WAL the copy grew

    @staticmethod
    def _event_from_row(row: tuple[Any, ...]) -> StoreEvent:
        rev, type_, key, value, create_rev, prev_value, prev_create, prev_mod = row
        kv = KV(str(key), bytes(value), int(create_rev), int(rev))
        prev = None
        if prev_value is not None:
            prev = KV(str(key), bytes(prev_value), int(prev_create), int(prev_mod))
        return StoreEvent("put" if type_ == "put" else "delete", kv, prev)

    def _run_writer(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            stop = False
            while len(batch) < _BATCH_LIMIT:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop:
                break
        if self._conn is not None:
            self._conn.close()

    def _current(self, key: str) -> KV | None:
        assert self._conn is not None
        row = self._conn.execute("SELECT value, create_rev, mod_rev FROM kv WHERE key=?", (key,)).fetchone()
        return KV(key, row[0], row[1], row[2]) if row else None

    def _apply_request(self, req: _Request, rev: int) -> int:
        assert self._conn is not None
        conn = self._conn
        for op in req.ops:
            current = self._current(op.key)
            err = check_op(op, current)
            if err is not None:
                raise err
            rev += 1
            if op.type == "delete":
                assert current is not None
                kv = KV(op.key, current.value, current.create_revision, rev)
                conn.execute("DELETE FROM kv WHERE key=?", (op.key,))
                event = StoreEvent("delete", kv, current)
            else:
                kv = KV(op.key, op.value, current.create_revision if current else rev, rev)
                if current is None:
                    conn.execute(
                        "INSERT INTO kv (key, value, create_rev, mod_rev) VALUES (?, ?, ?, ?)",
                        (kv.key, kv.value, kv.create_revision, kv.mod_revision),
                    )
                else:  # in place: the row keeps its rowid, the key's index entry stays
                    conn.execute(
                        "UPDATE kv SET value=?, mod_rev=? WHERE key=?", (kv.value, kv.mod_revision, kv.key)
                    )
                event = StoreEvent("put", kv, current)
            conn.execute(
                "INSERT INTO events (rev, type, key, value, create_rev, prev_value, prev_create_rev, prev_mod_rev) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rev,
                    event.type,
                    kv.key,
                    kv.value,
                    kv.create_revision,
                    current.value if current else None,
                    current.create_revision if current else None,
                    current.mod_revision if current else None,
                ),
            )
            req.events.append(event)
        return rev

    def _commit(self, batch: builtins.list[_Request]) -> None:
        assert self._conn is not None
        conn = self._conn
        rev = self._rev
        try:
            conn.execute("BEGIN IMMEDIATE")
            for req in batch:
                conn.execute("SAVEPOINT op")
                try:
                    rev = self._apply_request(req, rev)
                except errors.AtollError as err:
                    # `rev` still holds the value from before this request.
                    conn.execute("ROLLBACK TO op")
                    req.events.clear()
                    req.error = err
                conn.execute("RELEASE op")
            conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('revision', ?)", (rev,))
            compact_to = rev - self._history_limit
            if not (compact_to > 0 and rev // 1000 != self._rev // 1000):
                compact_to = 0
            requested = min(max((req.compact for req in batch), default=0), rev)
            compact_to = max(compact_to, requested)
            if compact_to > self._compacted:
                conn.execute("DELETE FROM events WHERE rev <= ?", (compact_to,))
                conn.execute(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES ('compacted', ?)", (compact_to,)
                )
            conn.execute("COMMIT")
            self._compacted = max(self._compacted, compact_to)
            if requested:
                self._give_back_space()
        except sqlite3.Error as exc:
            log.error("store commit of %d writes failed: %s", len(batch), exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            failure = _storage_error(exc)
            for req in batch:
                req.events.clear()
                req.error = failure
            rev = self._rev
        self._rev = rev
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._publish, batch)

    def _give_back_space(self, conn: sqlite3.Connection | None = None) -> None:
        """Free pages go back to the file system: vacuum them to the end, truncate, checkpoint."""
        conn = conn if conn is not None else self._conn
        assert conn is not None
        try:
            # executescript steps the pragma to completion; execute() would free one page.
            conn.executescript("PRAGMA incremental_vacuum;")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("store vacuum failed (space is reused, not returned): %s", exc)

    def _publish(self, batch: builtins.list[_Request]) -> None:
        # Runs on the event loop, in commit order: mirror first, then acknowledge.
        for req in batch:
            if req.error is None:
                self._state.apply(req.events)
                if req.compact:
                    self._state.compact(req.compact)
        for req in batch:
            if req.future.done():
                continue
            if req.error is not None:
                req.future.set_exception(req.error)
            else:
                req.future.set_result([e.kv for e in req.events])
