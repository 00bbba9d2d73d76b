"""A list reply put together from stored bytes (coordinator.api.encodedlist) parses as exactly
the reply built by parsing each object: every kind, pages, selectors, a node's live heartbeat
time over a stored one, and the kinds whose presentation hides secrets."""

from __future__ import annotations

from typing import Any

import pytest

from atoll import kinds, rpc
from atoll.v1 import cluster_pb2, meta_pb2, network_pb2, node_pb2
from coordinator.api.cluster import ClusterServicer
from coordinator.api.encodedlist import (
    heartbeat_time,
    top_level_field,
    top_level_fields,
    varint,
    with_field_tail,
)
from coordinator.controllers.nodelifecycle import NodeHealth
from coordinator.network.serviceips import ServiceIPAllocator
from coordinator.objects.registry import Registry
from coordinator.store.memory import MemoryStore

# Shown otherwise than stored: hidden secrets, computed quota status.
PARSED_KINDS = ("Registries", "Token", "ResourceQuota")
GRPC_CALL = object()  # any context but None: a call from a gRPC client


def servicer(registry: Registry, health: NodeHealth) -> ClusterServicer:
    no_agents: Any = None  # lists never reach an agent
    return ClusterServicer(registry, health, no_agents, ServiceIPAllocator(registry.store, "10.0.0.0/24"))


def sample(info: kinds.KindInfo, i: int) -> Any:
    obj: Any = info.message()
    obj.metadata.name = f"{info.field.replace('_', '-')}-{i}"
    if info.namespaced:
        obj.metadata.namespace = "default" if i % 2 else "team"
    obj.metadata.labels["app"] = "web" if i % 3 else "db"
    obj.metadata.annotations["note"] = "x" * (i * 7)
    return obj


def relabel(pod: Any) -> bool:
    pod.metadata.labels["v"] = "2"
    return True


async def both(cluster: ClusterServicer, request: cluster_pb2.ListRequest) -> tuple[Any, Any]:
    sent = await cluster.List(request, GRPC_CALL)
    parsed = await cluster.list_objects(request, GRPC_CALL)
    return sent, parsed


@pytest.mark.parametrize(
    "n", [1, 127, 128, 300, 16_383, 16_384, 2**21 - 1, 2**21, 2**28 - 1, 2**28, 2**31, 2**63 - 1]
)
def test_varint_is_protobufs(n: int) -> None:
    assert b"\x30" + varint(n) == meta_pb2.ObjectMeta(resource_version=n).SerializeToString()
    assert varint(0) == b"\x00"


async def test_every_kind_lists_the_same_put_together_as_parsed() -> None:
    registry = Registry(MemoryStore())
    health = NodeHealth()
    cluster = servicer(registry, health)
    for info in kinds.KINDS:
        for i in range(5):
            await registry.create(sample(info, i))
    await registry.guaranteed_update(kinds.by_name("Pod"), "default", "pod-1", relabel)
    for info in kinds.KINDS:
        for namespace in ("", "default"):
            for selector in ("", "app=web", "app!=web"):
                request = cluster_pb2.ListRequest(
                    kind=info.kind, namespace=namespace, label_selector=selector
                )
                sent, parsed = await both(cluster, request)
                assert isinstance(sent, rpc.Encoded) == (info.name not in PARSED_KINDS)
                if isinstance(sent, rpc.Encoded):
                    message_fields_once(sent.data, cluster_pb2.ListResponse)
                    sent = cluster_pb2.ListResponse.FromString(sent.data)
                assert sent == parsed, (info.name, namespace, selector)
                assert len(parsed.items) == len(
                    [o for o in parsed.items if o.WhichOneof("kind") == info.field]
                )
        # Pages: every page the same, and the token of one carries on in the other.
        request = cluster_pb2.ListRequest(kind=info.kind, limit=2)
        while True:
            sent, parsed = await both(cluster, request)
            if isinstance(sent, rpc.Encoded):
                sent = cluster_pb2.ListResponse.FromString(sent.data)
            assert sent == parsed and sent.HasField("remaining_item_count") == parsed.HasField(
                "remaining_item_count"
            )
            if not parsed.continue_token:
                break
            request.continue_token = parsed.continue_token


async def test_a_nodes_live_heartbeat_replaces_the_stored_one_whole() -> None:
    registry = Registry(MemoryStore())
    health = NodeHealth()
    cluster = servicer(registry, health)
    for name, stored_ns in (("a", 1_700_000_000_123_456_789), ("b", 1_700_000_000_999_999_999), ("c", 0)):
        node = node_pb2.Node()
        node.metadata.name = name
        if stored_ns:
            node.status.last_heartbeat_time.FromNanoseconds(stored_ns)
        await registry.create(node)
    health.last_heartbeat["a"] = 1_800_000_000.0  # nanos 0: must not keep the stored 123456789
    health.last_heartbeat["c"] = 1_800_000_001.25
    sent, parsed = await both(cluster, cluster_pb2.ListRequest(kind=kinds.by_name("Node").kind))
    assert isinstance(sent, rpc.Encoded)
    message_fields_once(sent.data, cluster_pb2.ListResponse)
    reply = cluster_pb2.ListResponse.FromString(sent.data)
    assert reply == parsed
    times = {o.node.metadata.name: o.node.status.last_heartbeat_time.ToNanoseconds() for o in reply.items}
    assert times == {
        "a": 1_800_000_000 * 10**9,
        "b": 1_700_000_000_999_999_999,
        "c": int(1_800_000_001.25 * 1e9),  # as Timestamp.FromNanoseconds(int(beat * 1e9)) has it
    }
    assert all(o.node.metadata.resource_version for o in reply.items)
    # The next heartbeat shows in the next list.
    health.last_heartbeat["a"] = 1_800_000_009.5
    sent, parsed = await both(cluster, cluster_pb2.ListRequest(kind=kinds.by_name("Node").kind))
    assert isinstance(sent, rpc.Encoded)
    reply = cluster_pb2.ListResponse.FromString(sent.data)
    assert (
        reply == parsed
        and reply.items[0].node.status.last_heartbeat_time.ToNanoseconds() == 1_800_000_009_500_000_000
    )


def test_a_heartbeat_time_written_after_a_stored_one_replaces_it_whole() -> None:
    stored = node_pb2.Node()
    stored.metadata.name = "n"
    stored.status.last_heartbeat_time.FromNanoseconds(5_000_000_123)
    stored.status.capacity.cpu_millis = 4000
    data = b"".join(with_field_tail(stored.SerializeToString(), 3, b"\x1a", heartbeat_time(7.0)))
    merged = node_pb2.Node.FromString(data)
    assert merged.status.last_heartbeat_time.ToNanoseconds() == 7_000_000_000
    assert merged.status.capacity.cpu_millis == 4000 and merged.metadata.name == "n"


def test_a_field_absent_is_added_and_bytes_that_are_not_a_message_are_refused() -> None:
    empty = node_pb2.Node()
    data = b"".join(with_field_tail(empty.SerializeToString(), 1, b"\x0a", b"\x30\x05"))
    assert node_pb2.Node.FromString(data).metadata.resource_version == 5
    for bad in (b"\x0a\x05ab", b"\x0b", b"\x80"):
        with pytest.raises(ValueError):
            top_level_field(bad, 1)


def message_fields_once(data: bytes, message: Any) -> None:
    """No message field of `data` comes twice, recursively: what a parser that replaces a
    repeated message field instead of merging it (protobuf.js) needs to read it right. Only a
    node's heartbeat time may, written whole."""
    counts: dict[int, int] = {}
    by_number = {f.number: f for f in message.DESCRIPTOR.fields}
    for number, wire, _, value, end in top_level_fields(data):
        field = by_number.get(number)
        if field is None or field.message_type is None or wire != 2:
            continue
        if not field.is_repeated and field.name != "last_heartbeat_time":
            counts[number] = counts.get(number, 0) + 1
            assert counts[number] == 1, field.full_name
        if not field.message_type.GetOptions().map_entry:
            message_fields_once(data[value:end], message_class(field.message_type))


def message_class(descriptor: Any) -> Any:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


async def test_hidden_secrets_are_never_put_together_from_stored_bytes() -> None:
    registry = Registry(MemoryStore())
    cluster = servicer(registry, NodeHealth())
    registries = network_pb2.Registries()
    registries.metadata.name = "default"
    registries.spec.auths.add(registry="registry.example", username="u", password="hunter2")
    await registry.create(registries)
    reply = await cluster.List(cluster_pb2.ListRequest(kind=kinds.by_name("Registries").kind), GRPC_CALL)
    assert isinstance(reply, cluster_pb2.ListResponse)
    assert b"hunter2" not in reply.SerializeToString()
    assert reply.items[0].registries.spec.auths[0].password_set
