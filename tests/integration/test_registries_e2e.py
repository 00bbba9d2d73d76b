"""Registries end to end (issue #3): settings pushed by the coordinator, pods pulling through them.

A real registry (Debian's docker-registry) runs on the master host of the bed,
plain HTTP. The cluster's Registries object lists it for search and as
insecure, and blocks docker.io and quay.io; the agents apply that to their
engines (daemon.json + SIGHUP) and to image resolution.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from atoll.v1 import network_pb2, pod_pb2
from tests.integration.cluster import Cluster, pinned_pod, start_cluster
from tests.integration.daemons import eventually, pod, wait_running
from tests.integration.test_registries import drop_image, insecure_hosts, push, start_registry
from tests.integration.testbed import TestBed


@pytest.fixture
async def two(testbed_factory: Callable[..., TestBed]) -> AsyncIterator[Cluster]:
    cluster = await start_cluster(testbed_factory, 2, overlay=False)
    try:
        yield cluster
    finally:
        await cluster.close()


async def test_pods_pull_through_the_clusters_registry_settings(two: Cluster) -> None:
    registry, _ = await asyncio.to_thread(start_registry, two.master, 5000)
    settings = network_pb2.Registries()
    settings.metadata.name = "default"
    settings.spec.search.append(registry)
    settings.spec.insecure.append(registry)
    settings.spec.blocked.extend(["docker.io", "quay.io"])
    await two.client.create(settings)
    for worker in two.workers:
        await eventually(
            lambda w=worker: _insecure(w, registry),
            timeout=30,
            what=f"{worker.name} treats {registry} as insecure",
        )
    # The image lives only in the registry: pushed from node-0, gone from node-1's engine.
    await asyncio.to_thread(push, two.workers[0], f"{registry}/fedora/apache")
    await asyncio.to_thread(
        drop_image, two.workers[1], "fedora/apache:latest", f"{registry}/fedora/apache:latest"
    )

    await two.client.create(pinned_pod("searched", two.node(1)))
    running = await wait_running(two.client, "searched", timeout=60)
    container = await asyncio.to_thread(
        two.workers[1].docker().containers.get,
        running.status.container_statuses[0].container_id.removeprefix("docker://"),
    )
    assert container.attrs["Config"]["Image"] == f"{registry}/fedora/apache"

    await two.client.create(pinned_pod("blocked", two.node(1), image="quay.io/fedora/apache"))

    async def blocked_reason() -> str:
        cs = (await pod(two.client, "blocked")).status.container_statuses
        waiting = cs[0].state.waiting if cs else pod_pb2.ContainerStateWaiting()
        return waiting.message if waiting.reason in ("ErrImagePull", "ImagePullBackOff") else ""

    message = await eventually(blocked_reason, timeout=30, what="a clear reason on the blocked pod")
    assert "quay.io is blocked" in message, message


async def _insecure(worker: object, registry: str) -> bool:
    return registry in await asyncio.to_thread(insecure_hosts, worker)  # type: ignore[arg-type]
