"""List replies put together from the objects' stored bytes, without parsing one.

A stored value is the object's wire encoding with `metadata.resource_version`
left out (Registry.encode). Its top-level fields are walked, not parsed: the
`metadata` field is copied with `resource_version` written at its end, and the
whole is framed as the kind's field of an `Object` and as one `items` entry of
a ListResponse. A node's live heartbeat time goes at the end of its `status`
the same way. Every other byte is copied as stored.

No message field is split in two, so parsers that replace a repeated message
field instead of merging it (protobuf.js, which @grpc/proto-loader clients use)
read the same objects as conformant ones. Only the heartbeat's Timestamp may
come twice inside `status`, and both of its fields are written, so replacing
it and merging it agree.

Parsing each object into the reply and serialising the reply again was most of a
list's cost on the server (bench/list_nodes.py). Kinds whose presentation
rewrites the object (redacted secrets, computed quota status) are not put
together here: the caller parses those.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from atoll.kinds import KindInfo
from atoll.v1 import cluster_pb2, meta_pb2, node_pb2
from coordinator.store.base import KV

_VARINT = 0
_FIXED64 = 1
_LEN = 2
_FIXED32 = 5


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Every length up to 16 KiB, and any object's tag, is one lookup: a list costs a few per item.
_SHORT = tuple(_varint(n) for n in range(1 << 14))


def varint(n: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer."""
    if n < 16384:
        return _SHORT[n]
    if n < 1 << 28:  # a store revision for a long while: no loop
        if n < 1 << 21:
            return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21))
    return _varint(n)


def _tag(message: type[Message], field: str, wire_type: int) -> bytes:
    number = message.DESCRIPTOR.fields_by_name[field].number
    return varint(number << 3 | wire_type)


_ITEMS = _tag(cluster_pb2.ListResponse, "items", _LEN)
_RESOURCE_VERSION = _tag(meta_pb2.ObjectMeta, "resource_version", _VARINT)
_NODE_STATUS = _tag(node_pb2.Node, "status", _LEN)
_HEARTBEAT_TIME = _tag(node_pb2.NodeStatus, "last_heartbeat_time", _LEN)
_SECONDS = _tag(timestamp_pb2.Timestamp, "seconds", _VARINT)
_NANOS = _tag(timestamp_pb2.Timestamp, "nanos", _VARINT)


def heartbeat_time(when: float) -> bytes:
    """NodeStatus's `last_heartbeat_time { seconds nanos }`, both written even when zero, so that
    it replaces a stored time whole, as Timestamp.FromNanoseconds on the parsed node does."""
    seconds, nanos = divmod(int(when * 1e9), 1_000_000_000)
    stamp = _SECONDS + varint(seconds) + _NANOS + varint(nanos)
    return _HEARTBEAT_TIME + varint(len(stamp)) + stamp


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def top_level_fields(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """Each top-level field of a message's encoding, walked, not parsed: (number, wire type,
    tag's start, value's start, end); for a length-delimited field the value is its payload.
    Raises ValueError on bytes that are not a message."""
    i, size = 0, len(data)
    try:
        while i < size:
            start = i
            key, i = _read_varint(data, i)
            wire = key & 7
            if wire == _VARINT:
                value, i = i, _read_varint(data, i)[1]
            elif wire == _LEN:
                length, value = _read_varint(data, i)
                i = value + length
            elif wire == _FIXED64:
                value, i = i, i + 8
            elif wire == _FIXED32:
                value, i = i, i + 4
            else:
                raise ValueError(f"wire type {wire} at byte {start}")
            if i > size:
                raise ValueError("truncated message")
            yield key >> 3, wire, start, value, i
    except IndexError:
        raise ValueError("truncated message") from None


def top_level_field(data: bytes, number: int) -> tuple[int, int, int]:
    """Where the last length-delimited top-level field `number` sits: (its tag's start, its
    payload's start, its end), or (-1, -1, -1) when absent."""
    found = (-1, -1, -1)
    for field, wire, start, value, end in top_level_fields(data):
        if field == number and wire == _LEN:
            found = (start, value, end)
    return found


def with_field_tail(data: bytes, number: int, tag: bytes, tail: bytes) -> list[bytes]:
    """`data` (a message's encoding) with `tail` written at the end of its message field
    `number` (tag: that field's tag), as parts to join; the field is added if absent."""
    start, payload, end = top_level_field(data, number)
    if start < 0:
        return [data, tag, varint(len(tail)), tail]
    return [data[:start], tag, varint(end - payload + len(tail)), data[payload:end], tail, data[end:]]


# What the encodings kept for lists may hold in all, per kind, before they are dropped and built
# again as lists ask for them: an object's encoding is about its stored size.
CACHE_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class _Kept:
    """One object's list encoding at one mod revision. For a node, split around its status
    payload, where the live heartbeat time goes (`status` None: no status field stored)."""

    revision: int
    head: bytes  # the whole `items` entry; for a node, the object up to its status field
    status: bytes | None = None
    tail: bytes = b""


class ListEncoder:
    """The bytes of a ListResponse for one kind, from stored entries. Each object's encoding is
    built once per mod revision and kept (up to CACHE_BYTES); a list is then a join."""

    def __init__(self, info: KindInfo, heartbeats: Mapping[str, float] | None = None) -> None:
        self._kind = _tag(cluster_pb2.Object, info.field, _LEN)
        self._metadata_number = info.message.DESCRIPTOR.fields_by_name["metadata"].number
        self._metadata = _tag(info.message, "metadata", _LEN)
        # Only nodes carry a live heartbeat time; keyed by the node's name, the key's last part.
        self._heartbeats = heartbeats if info.message is node_pb2.Node else None
        self._status_number = node_pb2.Node.DESCRIPTOR.fields_by_name["status"].number
        self._kept: dict[str, _Kept] = {}
        self._kept_bytes = 0
        # Each node's heartbeat time, encoded once per heartbeat, not once per list.
        self._beats: dict[str, tuple[float, bytes]] = {}

    def _heartbeat(self, name: str, beat: float) -> bytes:
        known = self._beats.get(name)
        if known is not None and known[0] == beat:
            return known[1]
        if len(self._beats) > 2 * len(self._heartbeats or ()) + 64:
            self._beats.clear()  # nodes gone since: start over
        encoded = heartbeat_time(beat)
        self._beats[name] = (beat, encoded)
        return encoded

    def _keep(self, kv: KV) -> _Kept:
        version = _RESOURCE_VERSION + varint(kv.mod_revision)
        data = b"".join(with_field_tail(kv.value, self._metadata_number, self._metadata, version))
        if self._heartbeats is None:
            inner = self._kind + varint(len(data)) + data
            kept = _Kept(kv.mod_revision, _ITEMS + varint(len(inner)) + inner)
        else:
            start, payload, end = top_level_field(data, self._status_number)
            if start < 0:
                kept = _Kept(kv.mod_revision, data)
            else:
                kept = _Kept(kv.mod_revision, data[:start], data[payload:end], data[end:])
        if self._kept_bytes > CACHE_BYTES:
            self._kept.clear()  # objects deleted since, or more than is worth keeping: start over
            self._kept_bytes = 0
        self._kept[kv.key] = kept
        self._kept_bytes += len(kv.value)
        return kept

    def item(self, kv: KV) -> bytes:
        """One `items` entry: the stored object with its resource version (and heartbeat)."""
        kept = self._kept.get(kv.key)
        if kept is None or kept.revision != kv.mod_revision:
            kept = self._keep(kv)
        if self._heartbeats is None:
            return kept.head
        beat = self._heartbeats.get(kv.key.rpartition("/")[2])
        if beat is None:
            if kept.status is None:
                data = kept.head
            else:
                data = kept.head + _NODE_STATUS + varint(len(kept.status)) + kept.status + kept.tail
        else:
            time = self._heartbeat(kv.key.rpartition("/")[2], beat)
            status = time if kept.status is None else kept.status + time
            data = kept.head + _NODE_STATUS + varint(len(status)) + status + kept.tail
        inner = self._kind + varint(len(data)) + data
        return _ITEMS + varint(len(inner)) + inner

    def reply(self, entries: Iterable[KV], tail: cluster_pb2.ListResponse) -> bytes:
        """The whole reply: `entries` as its items, then `tail`'s other fields (revision, token).
        Raises ValueError when a stored value is not a message."""
        parts = [self.item(kv) for kv in entries]
        parts.append(tail.SerializeToString())
        return b"".join(parts)
