"""Replication controllers, services and endpoints, node loss and events, with fake-runtime agents."""

from __future__ import annotations

import pathlib
import string
from typing import Any

import pytest

from atoll import errors, kinds
from atoll.v1 import pod_pb2, workloads_pb2
from coordinator.controllers import replication
from coordinator.objects.registry import Registry
from tests.functional.harness import Cluster, eventually
from tests.functional.test_agent_behaviour import make_pod

POD = kinds.by_name("Pod")
RC = kinds.by_name("ReplicationController")
SVC = kinds.by_name("Service")
EP = kinds.by_name("Endpoints")
EVENT = kinds.by_name("Event")


def make_rc(name: str, replicas: int, *, host_port: int = 0) -> workloads_pb2.ReplicationController:
    rc = workloads_pb2.ReplicationController()
    rc.metadata.name = name
    rc.spec.replicas = replicas
    rc.spec.selector["name"] = name
    rc.spec.template.metadata.labels["name"] = name
    c = rc.spec.template.spec.containers.add(name="web", image="busybox", command=["httpd"])
    c.ports.add(container_port=80, host_port=host_port, name="http")
    return rc


async def pods_of(cluster: Cluster, selector: str) -> list[pod_pb2.Pod]:
    assert cluster.client is not None
    items, _ = await cluster.client.list(POD, "default", selector)
    return [p for p in items if isinstance(p, pod_pb2.Pod)]


async def running(cluster: Cluster, selector: str, n: int) -> list[pod_pb2.Pod] | None:
    pods = await pods_of(cluster, selector)
    ok = [p for p in pods if p.status.phase == pod_pb2.POD_PHASE_RUNNING and p.status.pod_ip]
    return ok if len(ok) == n and len(pods) == n else None


async def test_replication_controller_lifecycle(cluster: Cluster) -> None:
    for i in range(3):
        await cluster.add_node(f"node-{i}", images=("busybox",))
    c = cluster.client
    assert c is not None
    await c.create(make_pod("stray"))  # matches nothing
    orphan = make_pod("adoptee")
    orphan.metadata.labels["name"] = "web"
    await c.create(orphan)
    await c.create(make_rc("web", 3))
    pods = await eventually(lambda: running(cluster, "name=web", 3), what="3 web replicas")
    assert "adoptee" in {p.metadata.name for p in pods}  # adopted, not duplicated
    assert all(p.metadata.owner_references[0].kind == "ReplicationController" for p in pods)
    assert sorted(p.spec.node_name for p in pods) == ["node-0", "node-1", "node-2"]  # spread
    created = [p.metadata.name for p in pods if p.metadata.name != "adoptee"]
    assert all(n.startswith("web-") and len(n) == len("web-") + 5 for n in created)

    rc = await c.get(RC, "default", "web")
    assert isinstance(rc, workloads_pb2.ReplicationController)

    async def status_counts() -> bool:
        current = await c.get(RC, "default", "web")  # type: ignore[union-attr]
        return current.status.replicas == 3 and current.status.ready_replicas == 3  # type: ignore[attr-defined]

    await eventually(status_counts, what="rc status 3/3")
    rc = await c.get(RC, "default", "web")
    rc.spec.replicas = 5  # type: ignore[attr-defined]
    await c.update(rc)
    await eventually(lambda: running(cluster, "name=web", 5), what="scaled to 5")
    rc = await c.get(RC, "default", "web")
    rc.spec.replicas = 1  # type: ignore[attr-defined]
    await c.update(rc)
    await eventually(lambda: running(cluster, "name=web", 1), what="scaled to 1")

    await c.delete(RC, "default", "web")
    await eventually(lambda: _none(cluster, "name=web"), what="pods deleted with their rc")
    assert [p.metadata.name for p in await pods_of(cluster, "")] == ["stray"]


async def _none(cluster: Cluster, selector: str) -> bool:
    return not await pods_of(cluster, selector)


def _draws(monkeypatch: pytest.MonkeyPatch, *suffixes: str) -> None:
    """The replication controller's name suffixes are these, in this order."""
    drawn = iter(suffixes)
    monkeypatch.setattr(replication, "random_suffix", lambda: next(drawn))


async def _reasons(cluster: Cluster, name: str) -> set[str]:
    """The reasons of the events about object `name`."""
    assert cluster.client is not None
    events, _ = await cluster.client.list(EVENT, "default", "")
    return {e.reason for e in events if e.involved_object.name == name}  # type: ignore[attr-defined]


async def test_a_generated_name_that_is_taken_is_generated_again(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    await cluster.add_node("node-0", images=("busybox",))
    c = cluster.client
    assert c is not None
    await c.create(make_pod("clash-aaaaa"))  # another owner's pod holds the first name drawn
    _draws(monkeypatch, "aaaaa", "aaaaa", "bbbbb")
    await c.create(make_rc("clash", 1))
    pods = await eventually(lambda: running(cluster, "name=clash", 1), what="the replica")
    assert [p.metadata.name for p in pods] == ["clash-bbbbb"]
    assert await _reasons(cluster, "clash") == {"SuccessfulCreate"}  # no FailedCreate for the clashes


async def test_names_drawn_twice_in_one_batch_are_drawn_again(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    await cluster.add_node("node-0", images=("busybox",))
    c = cluster.client
    assert c is not None
    _draws(monkeypatch, "aaaaa", "aaaaa", "bbbbb")
    create = Registry.create
    tried: list[str] = []

    async def counted(self: Registry, obj: Any, **kwargs: Any) -> Any:
        if isinstance(obj, pod_pb2.Pod):
            tried.append(obj.metadata.name)
        return await create(self, obj, **kwargs)

    monkeypatch.setattr(Registry, "create", counted)
    await c.create(make_rc("twice", 2))
    pods = await eventually(lambda: running(cluster, "name=twice", 2), what="both replicas")
    assert sorted(p.metadata.name for p in pods) == ["twice-aaaaa", "twice-bbbbb"]
    # Unique before any create: no clash in the store, whose retry would have dropped the
    # expectation of the pod that won.
    assert sorted(tried) == ["twice-aaaaa", "twice-bbbbb"]


async def test_a_create_that_finds_its_own_pod_counts_it_created(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that resent a create it could not confirm answers AlreadyExists for the pod its
    first try wrote: that pod is the controller's, not a clash to draw another name for."""
    await cluster.add_node("node-0", images=("busybox",))
    c = cluster.client
    assert c is not None
    create = Registry.create
    resent: list[str] = []

    written: list[str] = []

    async def written_then_refused(self: Registry, obj: Any, **kwargs: Any) -> Any:
        created = await create(self, obj, **kwargs)
        if isinstance(obj, pod_pb2.Pod):
            written.append(obj.metadata.name)
        if isinstance(obj, pod_pb2.Pod) and obj.metadata.name.startswith("mine-") and not resent:
            resent.append(obj.metadata.name)
            raise errors.AlreadyExists(f'pods "{obj.metadata.name}" already exists')
        return created

    monkeypatch.setattr(Registry, "create", written_then_refused)
    await c.create(make_rc("mine", 1))
    pods = await eventually(lambda: running(cluster, "name=mine", 1), what="the replica")
    assert [p.metadata.name for p in pods] == resent == written  # the one written, no second one
    assert await _reasons(cluster, "mine") == {"SuccessfulCreate"}


def test_generated_suffixes_use_the_whole_alphabet() -> None:
    seen = {ch for _ in range(2000) for ch in replication.random_suffix()}
    assert seen == set(string.ascii_lowercase + string.digits)
    assert all(len(replication.random_suffix()) == 5 for _ in range(100))


async def test_delete_rc_orphaning_pods(cluster: Cluster) -> None:
    await cluster.add_node("node-0", images=("busybox",))
    c = cluster.client
    assert c is not None
    await c.create(make_rc("keep", 2))
    await eventually(lambda: running(cluster, "name=keep", 2), what="2 replicas")
    await c.delete(RC, "default", "keep", orphan=True)
    with pytest.raises(errors.NotFound):
        await c.get(RC, "default", "keep")
    pods = await pods_of(cluster, "name=keep")
    assert len(pods) == 2 and all(not p.metadata.owner_references for p in pods)


async def test_service_ip_allocation_and_endpoints(cluster: Cluster) -> None:
    await cluster.add_node("node-0", images=("busybox",))
    c = cluster.client
    assert c is not None
    await c.create(make_rc("api", 2))
    pods = await eventually(lambda: running(cluster, "name=api", 2), what="2 api pods")
    svc = workloads_pb2.Service()
    svc.metadata.name = "api"
    svc.spec.selector["name"] = "api"
    svc.spec.ports.add(port=80, target_port_name="http")
    created = await c.create(svc)
    assert isinstance(created, workloads_pb2.Service)
    assert created.spec.cluster_ip.startswith("10.254.")
    other = workloads_pb2.Service()
    other.CopyFrom(svc)
    other.metadata.name = "api-2"
    other.spec.cluster_ip = created.spec.cluster_ip
    with pytest.raises(errors.AlreadyExists, match="already allocated"):
        await c.create(other)

    async def endpoints() -> list[str]:
        try:
            ep = await c.get(EP, "default", "api")  # type: ignore[union-attr]
        except errors.NotFound:
            return []
        return sorted(f"{a.ip}:{s.ports[0].port}" for s in ep.subsets for a in s.addresses)  # type: ignore[attr-defined]

    want = sorted(f"{p.status.pod_ip}:80" for p in pods)
    assert await eventually(lambda: _equals(endpoints, want), what="endpoints of both pods") == want
    await c.delete(SVC, "default", "api")
    # The address is free again.
    other.metadata.name = "api-3"
    again = await c.create(other)
    assert again.spec.cluster_ip == created.spec.cluster_ip  # type: ignore[attr-defined]


async def _equals(fetch, want):  # type: ignore[no-untyped-def]
    got = await fetch()
    return got if got == want else None


async def test_lost_node_pods_are_replaced(tmp_path: pathlib.Path) -> None:
    cluster = await Cluster(tmp_path, node_grace_period=1.0, pod_eviction_timeout=0.5).start()
    try:
        nodes = [await cluster.add_node(f"node-{i}", images=("busybox",)) for i in range(2)]
        c = cluster.client
        assert c is not None
        await c.create(make_rc("ha", 2))
        pods = await eventually(lambda: running(cluster, "name=ha", 2), what="2 replicas")
        assert sorted(p.spec.node_name for p in pods) == ["node-0", "node-1"]
        await nodes[1].stop()
        cluster.nodes.remove(nodes[1])

        async def all_on_node0() -> bool:
            ok = await running(cluster, "name=ha", 2)
            return ok is not None and all(p.spec.node_name == "node-0" for p in ok)

        await eventually(all_on_node0, timeout=15, what="replacement on node-0 and the lost pod gone")
        items, _ = await c.list(EVENT, "default")
        reasons = {e.reason for e in items}  # type: ignore[attr-defined]
        assert {"Scheduled", "SuccessfulCreate", "NodeLost"} <= reasons
    finally:
        await cluster.stop()


async def test_cordon_uncordon_and_drain(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from coordinator.cli.main import main
    from tests.functional.test_pod_lifecycle import _node_ready

    for i in range(2):
        await cluster.add_node(f"node-{i}", images=("busybox",))
        await eventually(lambda i=i: _node_ready(cluster, f"node-{i}"), what=f"node-{i} Ready")
    c = cluster.client
    assert c is not None
    server = cluster.cli_args()
    assert await asyncio.to_thread(main, [*server, "cordon", "node-1"]) == 0
    await c.create(make_rc("drained", 2))
    pods = await eventually(lambda: running(cluster, "name=drained", 2), what="2 replicas")
    assert {p.spec.node_name for p in pods} == {"node-0"}  # node-1 is cordoned
    nodes = await asyncio.to_thread(main, [*server, "get", "nodes"])
    assert nodes == 0 and "Ready,SchedulingDisabled" in capsys.readouterr().out
    assert await asyncio.to_thread(main, [*server, "uncordon", "node-1"]) == 0
    loner = make_pod("loner")
    loner.spec.node_name = "node-0"
    await c.create(loner)
    assert await asyncio.to_thread(main, [*server, "drain", "node-0"]) == 2  # an unmanaged pod: refused
    assert "use --force" in capsys.readouterr().err
    await c.delete(POD, "default", "loner")
    assert await asyncio.to_thread(main, [*server, "drain", "node-0"]) == 0

    async def moved() -> bool:
        ok = await running(cluster, "name=drained", 2)
        return ok is not None and all(p.spec.node_name == "node-1" for p in ok)

    await eventually(moved, what="replicas moved off the drained node")
