"""Finding 6 (e), in part: the cluster's default namespace quota (--namespace-quota),
enforced over real gRPC on what users create and on what controllers create."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator

import pytest

from atoll import errors, kinds
from atoll.v1 import pod_pb2, workloads_pb2
from tests.functional.harness import Cluster, eventually

POD = kinds.by_name("Pod")
EVENT = kinds.by_name("Event")

QUOTA = ["pods=3", "replicationcontrollers=1", "services=1", "requests.cpu=1", "memory=1Gi"]


def pod(name: str, namespace: str = "default", cpu: int = 0) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name, p.metadata.namespace = name, namespace
    c = p.spec.containers.add(name="main", image="busybox")
    c.resources.requests.cpu_millis = cpu
    return p


def service(name: str) -> workloads_pb2.Service:
    s = workloads_pb2.Service()
    s.metadata.name = name
    s.spec.selector["app"] = name
    s.spec.ports.add(port=80, target_port=80)
    return s


def rc(name: str, namespace: str, replicas: int) -> workloads_pb2.ReplicationController:
    r = workloads_pb2.ReplicationController()
    r.metadata.name, r.metadata.namespace = name, namespace
    r.spec.replicas = replicas
    r.spec.selector["app"] = name
    r.spec.template.metadata.labels["app"] = name
    r.spec.template.spec.containers.add(name="main", image="busybox")
    return r


@pytest.fixture
async def cluster(tmp_path: pathlib.Path) -> AsyncIterator[Cluster]:
    c = await Cluster(tmp_path, insecure=True, namespace_quota=QUOTA).start()
    try:
        yield c
    finally:
        await c.stop()


async def test_counts_are_limited_per_namespace(cluster: Cluster) -> None:
    c = cluster.client
    assert c is not None
    for i in range(3):
        await c.create(pod(f"p{i}"))
    with pytest.raises(errors.ResourceExhausted) as exc:
        await c.create(pod("p3"))
    assert 'exceeded quota of namespace "default"' in str(
        exc.value
    ) and "pods: requested 1, used 3, limited 3" in str(exc.value)
    await c.create(pod("elsewhere", "team"))  # another namespace has its own quota
    await c.delete(POD, "default", "p0")
    await eventually(lambda: _created(c.create(pod("p3"))), what="room after a delete")

    await c.create(service("web"))
    with pytest.raises(errors.ResourceExhausted, match="services: requested 1, used 1, limited 1"):
        await c.create(service("db"))


async def test_cpu_requests_and_concurrent_creates(cluster: Cluster) -> None:
    c = cluster.client
    assert c is not None
    await c.create(pod("half", "cpu", cpu=600))
    with pytest.raises(
        errors.ResourceExhausted, match=r"requests\.cpu: requested 600, used 600, limited 1000"
    ):
        await c.create(pod("more", "cpu", cpu=600))
    results = await asyncio.gather(
        *(c.create(pod(f"r{i}", "race")) for i in range(10)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 7 and all(isinstance(r, errors.ResourceExhausted) for r in refused)


async def test_controller_made_pods_count_too(cluster: Cluster) -> None:
    c = cluster.client
    assert c is not None
    await c.create(rc("web", "apps", 5))
    with pytest.raises(errors.ResourceExhausted, match="replicationcontrollers"):
        await c.create(rc("db", "apps", 1))

    async def refused_event() -> bool:
        events, _ = await c.list(EVENT, "apps")
        return any(e.reason == "FailedCreate" and "exceeded quota" in e.message for e in events)  # type: ignore[attr-defined]

    await eventually(refused_event, what="the controller's create to be refused by the quota")
    pods, _ = await c.list(POD, "apps")
    assert len(pods) == 3


async def _created(create: object) -> bool:
    try:
        await create  # type: ignore[misc]
    except errors.ResourceExhausted:
        return False
    return True
