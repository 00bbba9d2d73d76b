"""NamespaceQuota's creates in flight: held per namespace as they come and go, never counted twice."""

from __future__ import annotations

from typing import Any

import pytest

from atoll import errors, kinds
from atoll.v1 import pod_pb2
from coordinator.objects.informer import object_key
from coordinator.objects.quota import CPU, PODS, NamespaceQuota

POD = kinds.by_name("Pod")


class FakePodInformer:
    """Only what NamespaceQuota reads of an Informer: its kind and a handler hook."""

    def __init__(self) -> None:
        self.info = POD
        self.handlers: list[Any] = []

    def add_handler(self, handler: Any) -> None:
        self.handlers.append(handler)

    def emit(self, type_: str, obj: pod_pb2.Pod) -> None:
        for handler in self.handlers:
            handler(type_, obj, None)


def pod(name: str, namespace: str = "a", cpu: int = 100) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name, p.metadata.namespace = name, namespace
    c = p.spec.containers.add(name="c", image="i")
    c.resources.requests.cpu_millis = cpu
    return p


def quota(hard: dict[str, int]) -> tuple[NamespaceQuota, FakePodInformer]:
    informer = FakePodInformer()
    q = NamespaceQuota(hard, [informer])  # type: ignore[list-item]
    return q, informer


def key(p: pod_pb2.Pod) -> str:
    return object_key(POD, p)


def test_creates_in_flight_count_until_the_informer_sees_them_or_they_are_released() -> None:
    q, informer = quota({PODS: 3, CPU: 1000})
    a, b, c = pod("a"), pod("b"), pod("c")
    q.reserve(key(a), a)
    release_b = q.reserve(key(b), b)
    assert q.used("a") == {PODS: 2, CPU: 200}
    assert release_b is not None
    release_b()  # the create failed
    assert q.used("a") == {PODS: 1, CPU: 100}
    informer.emit("ADDED", a)  # the create landed: counted once, no longer in flight
    assert q.used("a") == {PODS: 1, CPU: 100}
    q.reserve(key(b), b)
    q.reserve(key(c), c)
    with pytest.raises(errors.ResourceExhausted, match="pods: requested 1, used 3, limited 3"):
        d = pod("d")
        q.reserve(key(d), d)


def test_namespaces_are_held_apart_and_a_late_release_takes_nothing_back() -> None:
    q, informer = quota({PODS: 1})
    a1, a2 = pod("x", "a"), pod("x", "b")
    release = q.reserve(key(a1), a1)
    q.reserve(key(a2), a2)  # another namespace: its own count
    informer.emit("ADDED", a1)
    assert release is not None
    release()  # after the informer saw it: nothing to give back
    assert q.used("a") == {PODS: 1, CPU: 100}
    assert q.used("b") == {PODS: 1}  # a reservation holds only what the quota limits


def test_status_reports_count_what_the_pod_counted_and_finished_pods_nothing() -> None:
    q, informer = quota({PODS: 5})
    p = pod("p")
    informer.emit("ADDED", p)
    running = pod_pb2.Pod()
    running.CopyFrom(p)
    running.status.phase = pod_pb2.POD_PHASE_RUNNING
    informer.emit("MODIFIED", running)
    assert q.used("a") == {PODS: 1, CPU: 100}
    done = pod_pb2.Pod()
    done.CopyFrom(p)
    done.status.phase = pod_pb2.POD_PHASE_SUCCEEDED
    informer.emit("MODIFIED", done)
    assert q.used("a") == {}
    informer.emit("DELETED", done)
    assert q.used("a") == {}
