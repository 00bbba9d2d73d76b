"""The node config every WatchNodeConfig stream sends: built and serialised once per generation
for every stream, and after a first full config only the leases that changed (to agents that
accept deltas), which the agent's view applies back into the whole config."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from google.protobuf.message import Message

from agent.configview import NodeConfigView
from agent.servicecache import StreamGap
from atoll.v1 import network_pb2, node_api_pb2
from coordinator.api.node import nodeconfig
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

    def delete(self, name: str) -> None:
        self.revision += 1
        old = self.cache.pop(name)
        for handler in self.handlers:
            handler("DELETED", old, old)


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


def tracked(
    change_log: int = 4096,
    push_interval: float = 1.0,
    min_push_interval: float = nodeconfig.MIN_PUSH_INTERVAL,
) -> tuple[Objects, Objects, NodeConfigTracker]:
    networks, subnets, registries = Objects(), Objects(), Objects()
    network = network_pb2.Network()
    network.metadata.name = "default"
    network.spec.network = "10.100.0.0/16"
    networks.put(network)
    tracker = NodeConfigTracker(
        networks,  # type: ignore[arg-type]
        subnets,  # type: ignore[arg-type]
        registries,  # type: ignore[arg-type]
        change_log=change_log,
        push_interval=push_interval,
        min_push_interval=min_push_interval,
    )
    return networks, subnets, tracker


def response(payload: Any) -> node_api_pb2.WatchNodeConfigResponse:
    return node_api_pb2.WatchNodeConfigResponse.FromString(payload.data)


def test_after_a_full_config_a_stream_gets_only_the_leases_that_changed() -> None:
    _, subnets, tracker = tracked()
    for i in range(200):
        subnets.put(lease(f"node-{i}", f"10.100.{i}.0/24"))
    view = NodeConfigView()
    sent, payload = tracker.encoded(-1, accept_deltas=True)
    first = response(payload)
    assert first.HasField("config") and len(first.config.leases) == 200
    view.apply(first)

    subnets.put(lease("node-200", "10.100.200.0/24"))
    renewed = lease("node-3", "10.100.3.0/24")
    renewed.spec.public_ip = "198.51.100.33"
    subnets.put(renewed)
    subnets.delete("10.100.7.0-24")
    sent2, payload2 = tracker.encoded(sent, accept_deltas=True)
    second = response(payload2)
    assert second.HasField("delta") and not second.HasField("config")
    assert sorted(lease.spec.cidr for lease in second.delta.leases) == ["10.100.200.0/24", "10.100.3.0/24"]
    assert list(second.delta.deleted_leases) == ["10.100.7.0-24"]
    assert len(payload2.data) < len(tracker.encoded(-1)[1].data) / 50
    view.apply(second)
    assert view.config() == tracker.config() and sent2 == view.generation == tracker.generation

    # 2,000 streams at the same point share one delta, built once.
    before = tracker.encodings
    subnets.put(lease("node-201", "10.100.201.0/24"))
    shared = {id(tracker.encoded(sent2, accept_deltas=True)[1].data) for _ in range(2000)}
    assert len(shared) == 1 and tracker.encodings - before == 1


def test_a_change_beside_the_leases_is_sent_whole() -> None:
    networks, subnets, tracker = tracked()
    subnets.put(lease("node-0", "10.100.0.0/24"))
    sent, _ = tracker.encoded(-1, accept_deltas=True)
    network = network_pb2.Network()
    network.metadata.name = "default"
    network.spec.network = "10.200.0.0/16"
    networks.put(network)
    _, payload = tracker.encoded(sent, accept_deltas=True)
    assert response(payload).config.network.network == "10.200.0.0/16"


def test_a_stream_behind_the_change_log_gets_a_full_config() -> None:
    _, subnets, tracker = tracked(change_log=3)
    sent, _ = tracker.encoded(-1, accept_deltas=True)
    for i in range(5):
        subnets.put(lease(f"node-{i}", f"10.100.{i}.0/24"))
    assert response(tracker.encoded(sent, accept_deltas=True)[1]).HasField("config")
    recent = tracker.generation - 2
    assert response(tracker.encoded(recent, accept_deltas=True)[1]).HasField("delta")


def test_agents_that_do_not_ask_for_deltas_get_full_configs() -> None:
    _, subnets, tracker = tracked()
    sent, _ = tracker.encoded(-1)
    subnets.put(lease("node-0", "10.100.0.0/24"))
    assert len(response(tracker.encoded(sent, accept_deltas=False)[1]).config.leases) == 1


def test_a_delta_that_does_not_start_where_the_view_is_reopens_the_stream() -> None:
    view = NodeConfigView()
    gap = node_api_pb2.WatchNodeConfigResponse()
    gap.delta.base_generation, gap.delta.generation = 4, 5
    with pytest.raises(StreamGap):
        view.apply(gap)  # nothing full yet
    full = node_api_pb2.WatchNodeConfigResponse()
    full.config.generation = 7
    view.apply(full)
    with pytest.raises(StreamGap):
        view.apply(gap)
    assert view.generation == 7


async def test_streams_are_woken_once_for_changes_close_together_and_share_one_delta() -> None:
    _, subnets, tracker = tracked(push_interval=0.2, min_push_interval=0.2)
    subnets.put(lease("node-first", "10.100.250.0/24"))  # nothing published lately: at once
    assert tracker.published == tracker.generation
    await asyncio.wait_for(tracker.wait_change(-1), 5)  # a new stream: at once
    sent, _ = tracker.encoded(-1, accept_deltas=True)
    for i in range(5):
        subnets.put(lease(f"node-{i}", f"10.100.{i}.0/24"))
    streams = [asyncio.create_task(tracker.wait_change(sent)) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(s.done() for s in streams)  # the first lease was published just now
    await asyncio.wait_for(asyncio.gather(*streams), 5)
    assert tracker.published == tracker.generation
    before = tracker.encodings
    payloads = [tracker.encoded(sent, accept_deltas=True) for _ in streams]
    assert len({id(p.data) for _, p in payloads}) == 1 and tracker.encodings == before + 1
    assert len(response(payloads[0][1]).delta.leases) == 5


def test_a_message_with_neither_a_config_nor_a_delta_changes_nothing() -> None:
    view = NodeConfigView()
    full = node_api_pb2.WatchNodeConfigResponse()
    full.config.generation = 3
    full.config.network.network = "10.100.0.0/16"
    view.apply(full)
    view.apply(node_api_pb2.WatchNodeConfigResponse())
    assert view.generation == 3 and view.config().network.network == "10.100.0.0/16"


async def test_the_push_interval_grows_with_the_streams_open() -> None:
    _, _, tracker = tracked(push_interval=1.0)
    assert tracker.push_interval() == nodeconfig.MIN_PUSH_INTERVAL  # a new lease reaches few peers at once
    with contextlib.ExitStack() as open_streams:
        for _ in range(1000):
            open_streams.enter_context(tracker.stream())
        assert tracker.push_interval() == pytest.approx(1000 / nodeconfig.PUSH_SENDS_PER_SECOND)
        for _ in range(5000):
            open_streams.enter_context(tracker.stream())
        assert tracker.push_interval() == 1.0  # never slower than kube-proxy's min sync period
    assert tracker.push_interval() == nodeconfig.MIN_PUSH_INTERVAL


async def test_streams_busy_sending_during_a_join_are_paced_all_the_same() -> None:
    """A fleet joining: a lease every 5 ms while 500 streams each take a while to send what they
    were woken for, so that few of them wait when the next push is scheduled."""
    _, subnets, tracker = tracked(push_interval=1.0)
    wakes = 0

    async def stream(i: int) -> None:
        nonlocal wakes
        sent = -1
        with tracker.stream():
            while True:
                await tracker.wait_change(sent)
                sent, _ = tracker.encoded(sent, accept_deltas=True)
                wakes += 1
                await asyncio.sleep(0.01 + (i % 10) * 0.01)  # writing to a slow peer

    streams = [asyncio.create_task(stream(i)) for i in range(500)]
    await asyncio.sleep(0.1)
    first = wakes
    started = time.monotonic()
    for i in range(200):
        subnets.put(lease(f"node-{i}", f"10.101.{i}.0/24"))
        await asyncio.sleep(0.005)
    elapsed = time.monotonic() - started
    for s in streams:
        s.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    interval = 500 / nodeconfig.PUSH_SENDS_PER_SECOND  # 0.2 s
    assert wakes - first <= 500 * (elapsed / interval + 2)  # about 2,500 sends a second, not 100,000
    assert tracker._streams == 0


async def test_a_stream_opened_before_a_pending_publish_is_not_woken_by_it_for_nothing() -> None:
    _, subnets, tracker = tracked(push_interval=0.2, min_push_interval=0.2)
    subnets.put(lease("node-a", "10.100.1.0/24"))  # published at once
    subnets.put(lease("node-b", "10.100.2.0/24"))  # published in 0.2 s
    assert tracker.published < tracker.generation
    await asyncio.wait_for(tracker.wait_change(-1), 5)
    sent, first = tracker.encoded(-1, accept_deltas=True)  # the stream opens: both leases
    assert len(response(first).config.leases) == 2 and sent == tracker.generation
    waiting = asyncio.create_task(tracker.wait_change(sent))
    await asyncio.sleep(0.4)  # node-b's generation is published now: the stream has it already
    assert tracker.published == sent and not waiting.done()
    subnets.put(lease("node-c", "10.100.3.0/24"))
    await asyncio.wait_for(waiting, 5)
    _, payload = tracker.encoded(sent, accept_deltas=True)
    assert [x.spec.node_name for x in response(payload).delta.leases] == ["node-c"]
