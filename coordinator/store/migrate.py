"""`coordinator store migrate`: copy a stopped single-coordinator cluster from SQLite into etcd.

Every key of the source store is copied as it is (objects of every kind,
tokens, leases, node heartbeat leases, events), in transactions of at most
`BATCH` creates, so a half-done copy never looks like a whole one to a
coordinator: the last transaction writes a marker only after everything else
went in. `extra` keys go in with that last transaction: the CLI passes the
cluster CA, which a single coordinator keeps as files in its data dir,
sealed with the cluster secret where coordinators on etcd look for it
(coordinator.auth.sharedca): the agents' node certificates, issued by that
CA, stay valid, and agents reconnect without joining again.

The target must be empty, unless `force`: then the copied keys overwrite
theirs (keys only the target has are left alone).
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field

from atoll import errors
from coordinator.store.base import Op, Store

log = logging.getLogger(__name__)

BATCH = 100  # etcd's default --max-txn-ops is 128
MARKER = "/migrated-from"


@dataclass
class MigrationReport:
    keys: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)


def _write(key: str, value: bytes, held: set[str]) -> Op:
    """A create where the target has no such key (a race then fails the copy), else an overwrite."""
    return Op("update" if key in held else "create", key, value)


def kind_of(key: str) -> str:
    """The first path element of a store key (`/registry/pods/...` -> registry/pods)."""
    parts = [p for p in key.split("/") if p]
    return "/".join(parts[:2]) if parts and parts[0] == "registry" else (parts[0] if parts else key)


async def migrate(
    source: Store,
    target: Store,
    *,
    extra: dict[str, bytes],
    origin: str,
    force: bool = False,
) -> MigrationReport:
    existing, _ = await target.list("/")
    if existing and not force:
        raise errors.AlreadyExists(
            f"the target store already holds {len(existing)} keys (e.g. {existing[0].key}); "
            "migrate into an empty one, or pass --force to overwrite the keys the source has"
        )
    held = {kv.key for kv in existing}
    items, revision = await source.list("/")
    report = MigrationReport()
    counts: collections.Counter[str] = collections.Counter()
    ops: list[Op] = []
    for kv in items:
        if kv.key == MARKER or kv.key in extra:
            continue
        ops.append(_write(kv.key, kv.value, held))
        counts[kind_of(kv.key)] += 1
        if len(ops) == BATCH:
            await target.txn(ops)
            ops = []
    for key, value in extra.items():  # what a single coordinator kept outside its store (the sealed CA)
        ops.append(_write(key, value, held))
    report.extra = sorted(extra)
    marker = f"{origin} at revision {revision}".encode()
    ops.append(_write(MARKER, marker, held))
    await target.txn(ops)
    report.keys = sum(counts.values())
    report.by_kind = dict(sorted(counts.items()))
    log.info("migrated %d keys from %s", report.keys, origin)
    return report
