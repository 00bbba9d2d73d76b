"""Finding 6 (a, b): objects over the size limit and controllers over the replicas ceiling
are refused at write, over real gRPC, naming the object or the field."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from atoll import errors, kinds
from atoll.v1 import pod_pb2, workloads_pb2
from coordinator.cli.main import main
from tests.functional.harness import Cluster

POD = kinds.by_name("Pod")
RC = kinds.by_name("ReplicationController")
MIB = 1024 * 1024


def padded_pod(name: str, size: int) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    c = p.spec.containers.add(name="main", image="busybox")
    c.env.add(name="PAD", value="x" * size)
    return p


def rc(name: str, replicas: int) -> workloads_pb2.ReplicationController:
    r = workloads_pb2.ReplicationController()
    r.metadata.name = name
    r.spec.replicas = replicas
    r.spec.selector["name"] = name
    r.spec.template.metadata.labels["name"] = name
    r.spec.template.spec.containers.add(name="web", image="busybox")
    return r


async def test_object_over_the_size_limit_is_refused_naming_it(cluster: Cluster) -> None:
    c = cluster.client
    assert c is not None
    with pytest.raises(errors.InvalidArgument) as exc:
        await c.create(padded_pod("big", 2 * MIB))
    assert 'pods "big" is 2097' in str(exc.value)
    assert "over the limit of 1048576 bytes per object (--max-object-bytes)" in str(exc.value)
    with pytest.raises(errors.NotFound):
        await c.get(POD, "default", "big")
    # Just under the limit is fine; growing it past the limit by an update is refused too.
    small = await c.create(padded_pod("fits", 900 * 1024))
    assert isinstance(small, pod_pb2.Pod)
    grown = padded_pod("fits", 2 * MIB)
    grown.spec.containers[0].image = "busybox:2"
    grown.metadata.resource_version = small.metadata.resource_version
    assert cluster.coordinator.registry is not None
    with pytest.raises(errors.InvalidArgument, match='pods "fits" is'):
        await cluster.coordinator.registry.update(grown)


async def test_max_object_bytes_is_configurable(tmp_path: pathlib.Path) -> None:
    cluster = await Cluster(tmp_path, insecure=True, max_object_bytes=64 * 1024).start()
    try:
        assert cluster.client is not None
        with pytest.raises(errors.InvalidArgument, match="limit of 65536 bytes"):
            await cluster.client.create(padded_pod("p", 100 * 1024))
    finally:
        await cluster.stop()


async def test_replicas_ceiling_on_create_and_scale(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    c = cluster.client
    assert c is not None
    with pytest.raises(errors.InvalidArgument) as exc:
        await c.create(rc("huge", 1_000_000_000))
    assert exc.value.field == "spec.replicas"
    assert "at most 10000" in str(exc.value) and "1000000000" in str(exc.value)
    with pytest.raises(errors.NotFound):
        await c.get(RC, "default", "huge")

    created = await c.create(rc("web", 0))
    assert isinstance(created, workloads_pb2.ReplicationController)
    created.spec.replicas = 1_000_000_000
    created.metadata.resource_version = 0  # unconditional: the controller writes status meanwhile
    with pytest.raises(errors.InvalidArgument) as exc:
        await c.update(created)
    assert exc.value.field == "spec.replicas"

    code = await asyncio.to_thread(
        main, [*cluster.cli_args(), "scale", "rc", "web", "--replicas", "1000000000"]
    )
    _, err = capsys.readouterr()
    assert code != 0 and "spec.replicas: must be at most 10000" in err
    stored = await c.get(RC, "default", "web")
    assert isinstance(stored, workloads_pb2.ReplicationController) and stored.spec.replicas == 0


async def test_max_replicas_is_configurable(tmp_path: pathlib.Path) -> None:
    cluster = await Cluster(tmp_path, insecure=True, max_replicas=5).start()
    try:
        assert cluster.client is not None
        with pytest.raises(errors.InvalidArgument, match="at most 5"):
            await cluster.client.create(rc("six", 6))
        await cluster.client.create(rc("five", 0))
    finally:
        await cluster.stop()
