"""OwnedPods keeps a controller's counts per pod event; a sync reads them instead of walking."""

from __future__ import annotations

from atoll.v1 import meta_pb2, pod_pb2
from coordinator.controllers.ownedpods import OwnedPods


def pod(
    name: str, *, app: str = "web", phase: int = pod_pb2.POD_PHASE_RUNNING, ready: bool = False
) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.namespace, p.metadata.name = "default", name
    p.metadata.labels["app"] = app
    p.status.phase = phase  # type: ignore[assignment]
    if ready:
        p.status.conditions.add(type="Ready", status=meta_pb2.CONDITION_STATUS_TRUE)
    return p


def test_counts_follow_each_pod_event() -> None:
    owned = OwnedPods()
    owned.use_selector({"app": "web"})
    owned.put("default/a", pod("a"))
    owned.put("default/b", pod("b", ready=True))
    owned.put("default/c", pod("c", phase=pod_pb2.POD_PHASE_SUCCEEDED))
    assert (owned.active, owned.ready) == ({"default/a", "default/b"}, {"default/b"})
    owned.put("default/a", pod("a", ready=True))  # became ready
    owned.put("default/b", pod("b", app="other", ready=True))  # relabelled out of the selector
    assert (owned.active, owned.ready) == ({"default/a"}, {"default/a"})
    owned.remove("default/a")
    assert (owned.active, owned.ready, len(owned)) == (set(), set(), 2)


def test_lost_pods_are_counted_apart() -> None:
    owned = OwnedPods()
    owned.use_selector({"app": "web"})
    lost = pod("x", phase=pod_pb2.POD_PHASE_FAILED)
    lost.status.reason = "NodeLost"
    owned.put("default/x", lost)
    owned.put("default/y", pod("y", phase=pod_pb2.POD_PHASE_FAILED))
    assert owned.active == set()
    assert [p.metadata.name for p in owned.lost_pods()] == ["x"]


def test_pods_filed_before_the_selector_is_known_count_once_it_is() -> None:
    owned = OwnedPods()
    owned.put("default/a", pod("a", ready=True))
    assert owned.active == set()  # the controller's selector is not known yet
    owned.use_selector({"app": "web"})
    assert (owned.active, owned.ready) == ({"default/a"}, {"default/a"})


def test_a_new_selector_refiles_every_pod() -> None:
    owned = OwnedPods()
    owned.use_selector({"app": "web"})
    owned.put("default/a", pod("a"))
    owned.put("default/b", pod("b", app="api"))
    owned.use_selector({"app": "api"})
    assert owned.active == {"default/b"}
    assert [p.metadata.name for p in owned.active_pods()] == ["b"]
