"""The store contract: an etcd-shaped key/value space with revisions.

Every write gets the next store revision (monotonic, never reused). Writes are
conditional on the key's current mod revision (compare-and-swap), and a watch
replays every change after a given revision, then follows. That is exactly what
etcd offers, so an etcd implementation can slot in beside the SQLite one.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from atoll import errors

OpType = Literal["create", "update", "delete"]


@dataclass(frozen=True, slots=True)
class KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Op:
    """One write. `expected_revision` (update/delete) makes it a compare-and-swap."""

    type: OpType
    key: str
    value: bytes = b""
    expected_revision: int | None = None


@dataclass(frozen=True, slots=True)
class Range:
    """Part of a list (Store.list_range): `kvs` in key order, read at `revision`, and how many
    keys under the prefix come after the last of them then (`more`: 0 once the list is done)."""

    kvs: list[KV]
    revision: int
    more: int


@dataclass(frozen=True, slots=True)
class StoreEvent:
    type: Literal["put", "delete"]
    kv: KV  # for a delete: the last value, with mod_revision = the delete's revision
    prev: KV | None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


def check_op(op: Op, current: KV | None) -> errors.AtollError | None:
    """The precondition of `op` against the key's current value, shared by every store."""
    if op.type == "create":
        if current is not None:
            return errors.AlreadyExists(f"{op.key} already exists")
        return None
    if current is None:
        return errors.NotFound(f"{op.key} not found")
    if op.expected_revision is not None and op.expected_revision != current.mod_revision:
        return errors.Conflict(
            f"{op.key} was modified (revision {current.mod_revision}, expected {op.expected_revision}); "
            "read it again and retry"
        )
    return None


class Store(Protocol):
    async def get(self, key: str) -> KV | None: ...

    async def list(self, prefix: str, revision: int = 0) -> tuple[builtins.list[KV], int]:
        """Every key under `prefix`, sorted, and the revision they were read at.

        With `revision` (not above the current one): the keys as they were then, for
        pages of one snapshot; errors.Gone when that revision was compacted.
        """
        ...

    async def list_range(self, prefix: str, revision: int = 0, *, after: str = "", limit: int = 0) -> Range:
        """The keys under `prefix` after the key `after` ("": from the start; one that sorts
        before the prefix also starts there), at most `limit` of them (0: all), as `list` reads
        them: one page of an API list costs its own keys, not every key under the prefix."""
        ...

    async def create(self, key: str, value: bytes) -> KV: ...

    async def update(self, key: str, value: bytes, expected_revision: int | None = None) -> KV: ...

    async def delete(self, key: str, expected_revision: int | None = None) -> KV: ...

    async def txn(self, ops: Sequence[Op]) -> builtins.list[KV]:
        """Apply all ops atomically, or none: the first failing precondition is raised."""
        ...

    def watch(self, prefix: str, from_revision: int) -> AsyncIterator[StoreEvent]:
        """Events under `prefix` with revision > from_revision, then live ones.

        Raises errors.Gone when from_revision is older than the kept history.
        """
        ...

    async def compact(self, revision: int) -> None:
        """Forget history at and below `revision` (capped at the current revision).

        Keys keep their values; a watch or list from before `revision` then raises
        errors.Gone. Durable stores give the freed space back to the file system.
        """
        ...

    @property
    def revision(self) -> int: ...

    @property
    def compacted(self) -> int:
        """History at and below this revision is gone."""
        ...

    async def close(self) -> None: ...
