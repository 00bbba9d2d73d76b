"""Finding 6 (e): namespace quotas, the cluster's default (--namespace-quota) and a namespace's own
ResourceQuota, enforced over real gRPC on what users create and on what controllers create."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator

import pytest

from atoll import errors, kinds
from atoll.v1 import pod_pb2, quota_pb2, workloads_pb2
from coordinator import manifests
from coordinator.client.api import Client
from tests.functional.harness import Cluster, eventually
from tests.functional.test_security import cert_config

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


QUOTA_FILE = """\
apiVersion: v1
kind: ResourceQuota
metadata: {name: compute, namespace: team-a}
spec:
  hard: {pods: 2, requests.cpu: "1", requests.memory: 1Gi}
"""


async def test_a_namespaces_own_resourcequota_replaces_the_default(tmp_path: pathlib.Path) -> None:
    cluster = await Cluster(tmp_path, namespace_quota=["pods=10"]).start()
    try:
        assert cluster.client is not None
        (rq,) = manifests.load_text(QUOTA_FILE, "quota.yaml")
        async with Client(config=cert_config(cluster, "olga", "atoll:operators")) as op:
            with pytest.raises(errors.PermissionDenied, match="may not create resourcequotas"):
                await op.create(rq)  # only admins set quotas
        await cluster.client.create(rq)
        await cluster.client.create(pod("a", "team-a", cpu=400))
        await cluster.client.create(pod("b", "team-a", cpu=400))
        with pytest.raises(errors.ResourceExhausted, match=r'namespace "team-a" \(its ResourceQuota\): pods'):
            await cluster.client.create(pod("c", "team-a"))
        for i in range(5):  # other namespaces keep the cluster default
            await cluster.client.create(pod(f"d{i}", "team-b"))
        got = await cluster.client.get(kinds.by_name("ResourceQuota"), "team-a", "compute")
        assert dict(got.status.used) == {"pods": "2", "requests.cpu": "800m"}  # type: ignore[attr-defined]
        assert dict(got.status.hard)["pods"] == "2"  # type: ignore[attr-defined]
        bad = quota_pb2.ResourceQuota()
        bad.metadata.name, bad.metadata.namespace = "bad", "team-a"
        bad.spec.hard["pods"] = "lots"
        with pytest.raises(errors.InvalidArgument, match=r"spec\.hard\[pods\]"):
            await cluster.client.create(bad)
    finally:
        await cluster.stop()
