"""The node config every WatchNodeConfig stream sends is built and serialised once per generation."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from atoll.v1 import network_pb2, node_api_pb2
from coordinator.api.node.nodeconfig import NodeConfigTracker


class Objects:
    """An informer, as far as the tracker reads it: a cache and its handlers."""

    def __init__(self) -> None:
        self.cache: dict[str, Message] = {}
        self.handlers: list[Any] = []
        self.revision = 0

    def add_handler(self, handler: Any) -> None:
        self.handlers.append(handler)

    def get(self, namespace: str, name: str) -> Message | None:
        return self.cache.get(name)

    def items(self) -> list[Message]:
        return list(self.cache.values())

    def put(self, obj: Any) -> None:
        self.revision += 1
        obj.metadata.resource_version = self.revision
        old = self.cache.get(obj.metadata.name)
        self.cache[obj.metadata.name] = obj
        for handler in self.handlers:
            handler("MODIFIED" if old else "ADDED", obj, old)


def lease(node: str, cidr: str) -> network_pb2.Subnet:
    subnet = network_pb2.Subnet()
    subnet.metadata.name = cidr.replace("/", "-")
    subnet.spec.cidr, subnet.spec.node_name = cidr, node
    return subnet


def test_every_stream_at_one_generation_shares_one_encoding() -> None:
    networks, subnets, registries = Objects(), Objects(), Objects()
    tracker = NodeConfigTracker(networks, subnets, registries)  # type: ignore[arg-type]
    for i in range(300):
        subnets.put(lease(f"node-{i}", f"10.100.{i % 250}.0/24"))
    payloads = [tracker.encoded() for _ in range(3000)]
    assert tracker.encodings == 1
    assert len({id(data.data) for _, data in payloads}) == 1
    generation, payload = payloads[0]
    sent = node_api_pb2.WatchNodeConfigResponse.FromString(payload.data)
    assert generation == tracker.generation == sent.config.generation
    assert sent.config == tracker.config() and len(sent.config.leases) == 250

    subnets.put(lease("node-late", "10.101.0.0/24"))
    generation2, payload2 = tracker.encoded()
    assert tracker.encodings == 2 and generation2 > generation
    assert len(node_api_pb2.WatchNodeConfigResponse.FromString(payload2.data).config.leases) == 251
