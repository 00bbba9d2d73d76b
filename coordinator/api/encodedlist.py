"""List replies joined from each object's encoding, built once per revision of the object.

Parsing every listed object into the reply and serialising the reply again was
most of a list's cost on the server (bench/list_nodes.py). Here each object is
parsed and serialised once per mod revision, with its resource version, and
kept; a list is then a join of the kept entries. A node's heartbeat time, which
changes on every heartbeat without a store write, is kept out of its kept
status and written at the status's end on each list: the live one, else the
stored one.

Each kept entry is an `items` entry as serialising it gives, framed by hand:
no field comes twice, so a parser that replaces a repeated message field
instead of merging it (protobuf.js, which @grpc/proto-loader clients use) reads
what conformant ones read. A value that does not parse fails here, on the
server, as it did before.

Only kinds the API shows as stored (with a node's heartbeat) come this way: the
caller (ClusterServicer) parses the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError, Message

from atoll.kinds import KindInfo
from atoll.v1 import cluster_pb2, node_pb2
from coordinator.store.base import KV

_LEN = 2

# What the kept encodings of every kind may hold together before all are dropped and built
# again as lists ask for them.
CACHE_BYTES = 64 << 20
# A kept entry's Python objects beside its bytes (the entry, its dict slot, the bytes' headers).
ENTRY_OVERHEAD = 300


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Every length up to 16 KiB is one lookup: a node's list entry takes a few.
_SHORT = tuple(_varint(n) for n in range(1 << 14))


def varint(n: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer."""
    if n < 0:
        raise ValueError(f"no varint for {n}")
    return _SHORT[n] if n < 16384 else _varint(n)


def _tag(message: type[Message], field: str) -> bytes:
    number = message.DESCRIPTOR.fields_by_name[field].number
    return varint(number << 3 | _LEN)


_ITEMS = _tag(cluster_pb2.ListResponse, "items")
_OBJECT_NODE = _tag(cluster_pb2.Object, "node")
_NODE_STATUS = _tag(node_pb2.Node, "status")
_HEARTBEAT_TIME = _tag(node_pb2.NodeStatus, "last_heartbeat_time")


def _item(kind: bytes, data: bytes) -> bytes:
    """One `items` entry of a ListResponse: `data` (an object's encoding) as the `Object` field
    tagged `kind`."""
    inner = kind + varint(len(data)) + data
    return _ITEMS + varint(len(inner)) + inner


def heartbeat_time(when: float) -> bytes:
    """NodeStatus's `last_heartbeat_time` field at `when`, as Timestamp.FromNanoseconds(int(when
    * 1e9)) on the parsed node would serialise."""
    node = node_pb2.Node()
    node.status.last_heartbeat_time.FromNanoseconds(int(when * 1e9))
    stamp = node.status.last_heartbeat_time.SerializeToString()
    return _HEARTBEAT_TIME + varint(len(stamp)) + stamp


@dataclass(frozen=True, slots=True)
class _Kept:
    """One object's list encoding at one revision of its key. For a node: its name, the node
    without its status, the status without its heartbeat time (None: no status stored), and
    the stored heartbeat time."""

    mod_revision: int
    create_revision: int
    stored_size: int
    cost: int
    head: bytes  # the whole `items` entry; for a node, the node without its status
    name: str = ""
    status: bytes | None = None
    stored_time: bytes = b""


class ListEncoder:
    """The bytes of list replies, for every kind, from stored entries; one per servicer."""

    def __init__(self, heartbeats: Mapping[str, float], budget: int = CACHE_BYTES) -> None:
        self._heartbeats = heartbeats
        self._budget = budget
        self._kinds: dict[str, dict[str, _Kept]] = {}
        self._used = 0
        self._newest = 0  # the newest store revision a current list was read at
        # Each node's live heartbeat time, encoded once per heartbeat, not once per list.
        self._beats: dict[str, tuple[float, bytes]] = {}

    @property
    def kept_bytes(self) -> int:
        return self._used

    def reply(
        self,
        info: KindInfo,
        entries: Sequence[KV],
        tail: cluster_pb2.ListResponse,
        *,
        current: bool,
        whole_kind: bool,
    ) -> bytes:
        """The whole reply: `entries` as its items, then `tail`'s other fields (revision, token).
        `current`: read at the store's newest revision (not a later page of an older list);
        `whole_kind`: `entries` are every object of the kind, so any other kept one is gone.
        Raises ValueError when a stored value is not an object of the kind."""
        if current:
            if tail.resource_version < self._newest:
                # The store went back (an etcd restored under a running coordinator): a key's
                # revision no longer names one value.
                self.clear()
            self._newest = tail.resource_version
        kept = self._kinds.setdefault(info.plural, {})
        node = info.message is node_pb2.Node
        parts: list[bytes] = []
        for kv in entries:
            entry = kept.get(kv.key)
            if (
                entry is None
                or entry.mod_revision != kv.mod_revision
                or entry.create_revision != kv.create_revision
                or entry.stored_size != len(kv.value)
            ):
                entry = self._keep(info, kept, kv)
            parts.append(self._node_item(entry) if node else entry.head)
        if whole_kind and len(kept) > len(parts):
            listed = {kv.key for kv in entries}
            for key in [k for k in kept if k not in listed]:
                self._used -= kept.pop(key).cost
        parts.append(tail.SerializeToString())
        return b"".join(parts)

    def clear(self) -> None:
        for kept in self._kinds.values():
            kept.clear()
        self._used = 0

    def _keep(self, info: KindInfo, kept: dict[str, _Kept], kv: KV) -> _Kept:
        try:
            obj = info.message.FromString(kv.value)
        except DecodeError as exc:
            raise ValueError(f"{kv.key} is not a {info.name}: {exc}") from None
        obj.metadata.resource_version = kv.mod_revision  # type: ignore[attr-defined]
        if isinstance(obj, node_pb2.Node):
            entry = self._kept_node(obj, kv)
        else:
            head = _item(_tag(cluster_pb2.Object, info.field), obj.SerializeToString(deterministic=True))
            entry = _Kept(
                kv.mod_revision, kv.create_revision, len(kv.value), len(head) + ENTRY_OVERHEAD, head
            )
        old = kept.get(kv.key)
        if old is not None:
            self._used -= old.cost
        if self._used + entry.cost > self._budget:
            self.clear()  # more than is worth keeping: start over
        kept[kv.key] = entry
        self._used += entry.cost
        return entry

    @staticmethod
    def _kept_node(node: node_pb2.Node, kv: KV) -> _Kept:
        status: bytes | None = None
        stored_time = b""
        if node.HasField("status"):
            if node.status.HasField("last_heartbeat_time"):
                stamp = node.status.last_heartbeat_time.SerializeToString()
                stored_time = _HEARTBEAT_TIME + varint(len(stamp)) + stamp
                node.status.ClearField("last_heartbeat_time")
            status = node.status.SerializeToString(deterministic=True)
            node.ClearField("status")
        head = node.SerializeToString(deterministic=True)
        cost = len(head) + len(status or b"") + len(stored_time) + ENTRY_OVERHEAD
        return _Kept(
            kv.mod_revision,
            kv.create_revision,
            len(kv.value),
            cost,
            head,
            node.metadata.name,
            status,
            stored_time,
        )

    def _heartbeat(self, name: str, beat: float) -> bytes:
        known = self._beats.get(name)
        if known is not None and known[0] == beat:
            return known[1]
        if len(self._beats) > 2 * len(self._heartbeats) + 64:
            self._beats.clear()  # nodes gone since: start over
        encoded = heartbeat_time(beat)
        self._beats[name] = (beat, encoded)
        return encoded

    def _node_item(self, entry: _Kept) -> bytes:
        """A node's `items` entry: its kept parts, with the live heartbeat time (as
        ClusterServicer._present overlays it), else the stored one, at its status's end."""
        beat = self._heartbeats.get(entry.name)
        time = entry.stored_time if beat is None else self._heartbeat(entry.name, beat)
        if entry.status is None and not time:
            data = entry.head
        else:
            status = (entry.status or b"") + time
            data = entry.head + _NODE_STATUS + varint(len(status)) + status
        return _item(_OBJECT_NODE, data)
