"""Service state pushed to nodes: built and serialised once per generation, sent as deltas."""

from __future__ import annotations

import random
from typing import Any

import pytest

from agent.servicecache import ServiceView, StreamGap
from atoll import callchain
from atoll.v1 import node_api_pb2, workloads_pb2
from coordinator.api.node.servicestate import ServiceStateTracker


class FakeInformer:
    """An informer's cache and handlers, driven by the test."""

    def __init__(self) -> None:
        self.cache: dict[str, Any] = {}
        self.handlers: list[Any] = []
        self.revision = 0

    def add_handler(self, handler: Any) -> None:
        self.handlers.append(handler)

    def items(self) -> list[Any]:
        return list(self.cache.values())

    def put(self, obj: Any) -> None:
        self.revision += 1
        obj.metadata.resource_version = self.revision
        key = f"{obj.metadata.namespace}/{obj.metadata.name}"
        old = self.cache.get(key)
        self.cache[key] = obj
        for h in self.handlers:
            h("MODIFIED" if old is not None else "ADDED", obj, old)

    def delete(self, namespace: str, name: str) -> None:
        old = self.cache.pop(f"{namespace}/{name}")
        for h in self.handlers:
            h("DELETED", old, old)


def service(name: str, port: int = 80, namespace: str = "default") -> workloads_pb2.Service:
    s = workloads_pb2.Service()
    s.metadata.namespace, s.metadata.name = namespace, name
    s.spec.cluster_ip = "10.96.0.10"
    s.spec.ports.add(port=port)
    return s


def endpoints(name: str, *ips: str) -> workloads_pb2.Endpoints:
    e = workloads_pb2.Endpoints()
    e.metadata.namespace, e.metadata.name = "default", name
    subset = e.subsets.add()
    for ip in ips:
        subset.addresses.add(ip=ip)
    return e


def decode(payload: callchain.Encoded) -> node_api_pb2.WatchServicesResponse:
    return node_api_pb2.WatchServicesResponse.FromString(payload.data)


def setup(change_log: int = 4096) -> tuple[FakeInformer, FakeInformer, ServiceStateTracker]:
    svcs, eps = FakeInformer(), FakeInformer()
    return svcs, eps, ServiceStateTracker(svcs, eps, "10.96.0.0/16", change_log=change_log)  # type: ignore[arg-type]


def test_a_stream_gets_a_full_state_then_only_what_changed() -> None:
    svcs, eps, tracker = setup()
    for i in range(50):
        svcs.put(service(f"s{i}"))
        eps.put(endpoints(f"s{i}", "10.1.0.1"))
    view = ServiceView()
    sent, payload = tracker.encoded(-1, accept_deltas=True)
    first = decode(payload)
    assert first.HasField("state") and len(first.state.services) == 50
    view.apply(first)
    eps.put(endpoints("s7", "10.1.0.1", "10.1.0.2"))
    sent2, payload = tracker.encoded(sent, accept_deltas=True)
    second = decode(payload)
    assert second.HasField("delta") and not second.HasField("state")
    assert [e.metadata.name for e in second.delta.endpoints] == ["s7"] and not second.delta.services
    assert len(payload.data) < len(tracker.encoded(-1, accept_deltas=True)[1].data) / 20
    view.apply(second)
    assert view.state() == tracker.state() and sent2 == tracker.generation


def test_every_stream_at_one_point_shares_one_encoding() -> None:
    svcs, eps, tracker = setup()
    svcs.put(service("a"))
    base = tracker.generation
    eps.put(endpoints("a", "10.1.0.1"))
    before = tracker.encodings
    payloads = [tracker.encoded(base, accept_deltas=True)[1] for _ in range(1000)]
    fulls = [tracker.encoded(-1, accept_deltas=True)[1] for _ in range(1000)]
    assert tracker.encodings - before == 2  # one delta and one full state for 2,000 streams
    assert len({id(p.data) for p in payloads}) == 1 and len({id(p.data) for p in fulls}) == 1


def test_agents_that_do_not_ask_for_deltas_get_full_states() -> None:
    svcs, _, tracker = setup()
    svcs.put(service("a"))
    sent, _ = tracker.encoded(-1, accept_deltas=False)
    svcs.put(service("b"))
    _, payload = tracker.encoded(sent, accept_deltas=False)
    assert decode(payload).HasField("state")


def test_a_stream_behind_the_change_log_gets_a_full_state() -> None:
    svcs, _, tracker = setup(change_log=4)
    svcs.put(service("a"))
    sent, _ = tracker.encoded(-1, accept_deltas=True)
    for i in range(10):
        svcs.put(service(f"b{i}"))
    _, payload = tracker.encoded(sent, accept_deltas=True)
    assert decode(payload).HasField("state")


def test_a_delta_that_does_not_fit_is_a_gap() -> None:
    view = ServiceView()
    view.apply(node_api_pb2.WatchServicesResponse(state=node_api_pb2.ServiceState(generation=5)))
    with pytest.raises(StreamGap):
        view.apply(
            node_api_pb2.WatchServicesResponse(
                delta=node_api_pb2.ServiceDelta(base_generation=4, generation=9)
            )
        )


@pytest.mark.parametrize("seed", range(20))
def test_random_changes_followed_by_deltas_end_at_the_full_state(seed: int) -> None:
    """Streams that read at random moments, from a random point, always converge."""
    rng = random.Random(seed)
    svcs, eps, tracker = setup(change_log=rng.choice([8, 64, 4096]))
    views = [(ServiceView(), [-1]) for _ in range(4)]
    for _ in range(300):
        name = f"s{rng.randrange(12)}"
        action = rng.random()
        if action < 0.05:
            svcs.put(service(name, namespace=rng.choice(["a", "a-b"])))  # orders differ as "ns/name"
        elif action < 0.35:
            svcs.put(service(name, rng.choice([80, 443])))
        elif action < 0.7:
            eps.put(endpoints(name, *(f"10.1.0.{i}" for i in range(rng.randrange(4)))))
        elif action < 0.85 and f"default/{name}" in svcs.cache:
            svcs.delete("default", name)
        elif f"default/{name}" in eps.cache:
            eps.delete("default", name)
        for view, sent in views:
            if rng.random() < 0.3 and tracker.generation != sent[0]:
                sent[0], payload = tracker.encoded(sent[0], accept_deltas=True)
                view.apply(decode(payload))
    for view, sent in views:
        if tracker.generation != sent[0]:
            sent[0], payload = tracker.encoded(sent[0], accept_deltas=True)
            view.apply(decode(payload))
        assert view.state() == tracker.state()
