"""A gRPC list reply joined from kept encodings (coordinator.api.encodedlist) parses as exactly
the reply built by parsing each object and presenting it: every kind with every field set,
pages, selectors, a node's live or stored heartbeat time, objects changed, deleted and
corrupt, the cache's budget; and the kinds whose presentation hides secrets never come
this way."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.message import DecodeError, Message

from atoll import callchain, kinds
from atoll.v1 import cluster_pb2, meta_pb2, network_pb2, node_pb2
from coordinator.api import cluster as cluster_api
from coordinator.api.cluster import ClusterServicer
from coordinator.api.encodedlist import ListEncoder, varint
from coordinator.api.strategy import redacted
from coordinator.controllers.nodelifecycle import NodeHealth
from coordinator.network.serviceips import ServiceIPAllocator
from coordinator.objects.registry import Registry
from coordinator.store.base import KV
from coordinator.store.memory import MemoryStore

GRPC_CALL = object()  # any context but None: a call from a gRPC client
NODE = kinds.by_name("Node")
POD = kinds.by_name("Pod")


def servicer(registry: Registry, health: NodeHealth) -> ClusterServicer:
    no_agents: Any = None  # lists never reach an agent
    return ClusterServicer(registry, health, no_agents, ServiceIPAllocator(registry.store, "10.0.0.0/24"))


def scalar(field: Any) -> Any:
    if field.type == field.TYPE_BYTES:
        return b"marker"
    if field.type == field.TYPE_STRING:
        return "marker"
    if field.type == field.TYPE_BOOL:
        return True
    if field.type == field.TYPE_ENUM:
        return field.enum_type.values[-1].number
    if field.type in (field.TYPE_DOUBLE, field.TYPE_FLOAT):
        return 1.5
    return 7


def fill(msg: Message, depth: int = 0) -> None:
    """Every field of `msg` set, to depth 5: whatever a presentation would change shows."""
    for field in msg.DESCRIPTOR.fields:
        oneof = field.containing_oneof
        if oneof is not None and msg.WhichOneof(oneof.name):
            continue
        value = getattr(msg, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field, value_field = (field.message_type.fields_by_name[n] for n in ("key", "value"))
            if value_field.message_type is not None:
                if depth < 5:
                    fill(value[scalar(key_field)], depth + 1)
            else:
                value[scalar(key_field)] = scalar(value_field)
        elif field.message_type is not None:
            if depth < 5:
                fill(value.add() if field.is_repeated else value, depth + 1)
        elif field.is_repeated:
            value.append(scalar(field))
        else:
            setattr(msg, field.name, scalar(field))


def sample(info: kinds.KindInfo, i: int, *, full: bool = True) -> Any:
    obj: Any = info.message()
    if full:
        fill(obj)
    obj.metadata.name = f"{info.field.replace('_', '-')}-{i}"
    obj.metadata.namespace = ("default" if i % 2 else "team") if info.namespaced else ""
    obj.metadata.resource_version = 0
    obj.metadata.labels["app"] = "web" if i % 3 else "db"
    return obj


async def both(cluster: ClusterServicer, request: cluster_pb2.ListRequest) -> tuple[Any, Any]:
    """What a gRPC caller gets (parsed back if it came as bytes), and the parsing path's reply."""
    sent = await cluster.List(request, GRPC_CALL)
    parsed = await cluster.list_objects(request, GRPC_CALL)
    if isinstance(sent, callchain.Encoded):
        message_fields_once(sent.data, cluster_pb2.ListResponse)
        sent = cluster_pb2.ListResponse.FromString(sent.data)
    return sent, parsed


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return value, i
        shift += 7


def message_fields_once(data: bytes, message: Any) -> None:
    """No singular message field of `data` comes twice, recursively: a parser that replaces a
    repeated message field instead of merging it (protobuf.js) reads it as conformant ones do."""
    by_number = {f.number: f for f in message.DESCRIPTOR.fields}
    seen: set[int] = set()
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        wire = key & 7
        if wire == 0:
            i = _read_varint(data, i)[1]
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            assert wire == 2, f"wire type {wire}"
            length, i = _read_varint(data, i)
            field = by_number.get(key >> 3)
            if field is not None and field.message_type is not None:
                if not field.is_repeated:
                    assert field.number not in seen, f"{field.full_name} comes twice"
                    seen.add(field.number)
                if not field.message_type.GetOptions().map_entry:
                    message_fields_once(data[i : i + length], field.message_type._concrete_class)
            i += length


@pytest.mark.parametrize(
    "n", [1, 127, 128, 300, 16_383, 16_384, 2**21 - 1, 2**21, 2**28 - 1, 2**28, 2**31, 2**63 - 1]
)
def test_varint_is_protobufs(n: int) -> None:
    assert b"\x30" + varint(n) == meta_pb2.ObjectMeta(resource_version=n).SerializeToString()
    assert varint(0) == b"\x00"
    with pytest.raises(ValueError):
        varint(-1)


def test_no_kind_shown_as_stored_hides_anything() -> None:
    for message in cluster_api._PRESENTED_AS_STORED:
        assert not redacted(message), message
    assert network_pb2.Registries not in cluster_api._PRESENTED_AS_STORED


async def test_every_kind_with_every_field_lists_the_same_joined_as_parsed() -> None:
    registry = Registry(MemoryStore())
    health = NodeHealth()
    cluster = servicer(registry, health)
    for info in kinds.KINDS:
        for i in range(5):
            await registry.create(sample(info, i))
    health.last_heartbeat["node-1"] = 1_800_000_000.25
    for info in kinds.KINDS:
        for namespace in ("", "default"):
            for selector in ("", "app=web", "app!=web"):
                request = cluster_pb2.ListRequest(
                    kind=info.kind, namespace=namespace, label_selector=selector
                )
                raw = await cluster.List(request, GRPC_CALL)
                assert isinstance(raw, callchain.Encoded) == (
                    info.message in cluster_api._PRESENTED_AS_STORED
                )
                sent, parsed = await both(cluster, request)
                assert sent == parsed, (info.name, namespace, selector)
                assert len(parsed.items) and all(o.WhichOneof("kind") == info.field for o in parsed.items)
        # Pages: every page the same, and the token of one carries on in the other.
        request = cluster_pb2.ListRequest(kind=info.kind, limit=2)
        while True:
            sent, parsed = await both(cluster, request)
            assert sent == parsed
            assert sent.HasField("remaining_item_count") == parsed.HasField("remaining_item_count")
            if not parsed.continue_token:
                break
            request.continue_token = parsed.continue_token


async def test_a_nodes_live_heartbeat_time_else_its_stored_one() -> None:
    registry = Registry(MemoryStore())
    health = NodeHealth()
    cluster = servicer(registry, health)
    for name, stored_ns, status in (
        ("a", 1_700_000_000_123_456_789, True),
        ("b", 1_700_000_000_999_999_999, True),
        ("c", 0, True),
        ("d", 0, False),
    ):
        node = node_pb2.Node()
        node.metadata.name = name
        if stored_ns:
            node.status.last_heartbeat_time.FromNanoseconds(stored_ns)
        elif status:
            node.status.capacity.cpu_millis = 4000
        await registry.create(node)
    request = cluster_pb2.ListRequest(kind=NODE.kind)

    async def times() -> dict[str, int | None]:
        sent, parsed = await both(cluster, request)
        assert sent == parsed
        return {
            o.node.metadata.name: o.node.status.last_heartbeat_time.ToNanoseconds()
            if o.node.status.HasField("last_heartbeat_time")
            else None
            for o in sent.items
        }

    assert await times() == {
        "a": 1_700_000_000_123_456_789,
        "b": 1_700_000_000_999_999_999,
        "c": None,
        "d": None,
    }
    health.last_heartbeat.update(a=1_800_000_000.0, c=1_800_000_001.25, d=1_800_000_002.5)
    assert await times() == {
        "a": 1_800_000_000 * 10**9,  # nanos 0: nothing of the stored time is left
        "b": 1_700_000_000_999_999_999,
        "c": int(1_800_000_001.25 * 1e9),
        "d": int(1_800_000_002.5 * 1e9),
    }
    health.last_heartbeat["a"] = 1_800_000_009.5  # the next heartbeat shows in the next list
    assert (await times())["a"] == 1_800_000_009_500_000_000


async def test_changed_deleted_and_corrupt_objects() -> None:
    store = MemoryStore()
    registry = Registry(store)
    cluster = servicer(registry, NodeHealth())
    for i in range(4):
        await registry.create(sample(POD, i, full=False))
    request = cluster_pb2.ListRequest(kind=POD.kind)
    await both(cluster, request)
    kept = cluster._list_encoder.kept_bytes

    def relabel(pod: Any) -> bool:
        pod.metadata.labels["v"] = "2"
        return True

    await registry.guaranteed_update(POD, "default", "pod-1", relabel)
    await registry.delete(POD, "team", "pod-2")
    sent, parsed = await both(cluster, request)
    assert sent == parsed and len(sent.items) == 3
    assert {o.pod.metadata.name: o.pod.metadata.labels.get("v") for o in sent.items}["pod-1"] == "2"
    assert cluster._list_encoder.kept_bytes < kept  # the deleted pod's encoding went with it

    # A value that is not a pod fails on the server, as parsing always did.
    await store.update("/pods/default/pod-1", b"\x0a\x05ab")
    with pytest.raises(DecodeError):
        await cluster.List(request, GRPC_CALL)


def kv(key: str, value: bytes, revision: int) -> KV:
    return KV(key, value, revision, revision)


def test_a_small_budget_starts_over() -> None:
    pods = [sample(POD, i, full=False) for i in range(6)]
    for p in pods:
        p.metadata.annotations["pad"] = "x" * 500
    entries = [kv(f"/pods/team/{p.metadata.name}", p.SerializeToString(), 10 + i) for i, p in enumerate(pods)]
    encoder = ListEncoder({}, budget=2_000)
    tail = cluster_pb2.ListResponse(resource_version=20)
    first = encoder.reply(POD, entries, tail, current=True, whole_kind=True)
    assert encoder.kept_bytes <= 2_000
    assert cluster_pb2.ListResponse.FromString(first) == cluster_pb2.ListResponse.FromString(
        encoder.reply(POD, entries, tail, current=True, whole_kind=True)
    )


def test_a_store_gone_back_forgets_what_was_kept() -> None:
    pods = [sample(POD, i, full=False) for i in range(3)]
    entries = [kv(f"/pods/team/{p.metadata.name}", p.SerializeToString(), 10 + i) for i, p in enumerate(pods)]
    encoder = ListEncoder({})
    encoder.reply(POD, entries, cluster_pb2.ListResponse(resource_version=20), current=True, whole_kind=True)
    # The store restored to an older revision under a running coordinator: the same key and
    # revision may now hold another value, so nothing kept is trusted.
    pods[0].metadata.labels["app"] = "xy"  # as long as "db": only the store's revision tells
    entries[0] = kv(entries[0].key, pods[0].SerializeToString(), 10)
    older = cluster_pb2.ListResponse.FromString(
        encoder.reply(
            POD, entries, cluster_pb2.ListResponse(resource_version=15), current=True, whole_kind=True
        )
    )
    assert older.items[0].pod.metadata.labels["app"] == "xy"
