"""Several coordinators on one etcd: all serve the API, exactly one leads, a successor takes over.

Three coordinators run in this process on the run's real etcd (plain text on
loopback, --insecure: the shared CA of several coordinators is not built yet).
Each answers the API from the shared store; only the leader schedules.
"""

from __future__ import annotations

import asyncio
import pathlib
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from atoll import kinds
from atoll.v1 import pod_pb2
from coordinator.client.api import Client
from coordinator.server import Coordinator
from coordinator.store.etcdelection import EtcdElector
from tests.functional.harness import serve_config
from tests.integration.etcd import EtcdCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
POD = kinds.by_name("Pod")


@pytest.fixture
async def three(etcd_cluster: EtcdCluster, tmp_path: pathlib.Path) -> AsyncIterator[list[Coordinator]]:
    # A key prefix of its own: a fresh cluster on the run's shared etcd (objects and election).
    started: list[Coordinator] = []
    prefix = f"atoll-{uuid.uuid4().hex[:6]}"
    try:
        for i in range(3):
            cfg = serve_config(
                tmp_path / f"c{i}",
                insecure=True,
                token_listen="",
                store=f"etcd://{etcd_cluster.endpoints}/{prefix}",
                leader_ttl=2,
            )
            c = Coordinator(cfg)
            await c.start()
            started.append(c)
        yield started
    finally:
        for c in started:
            await c.stop()


async def leaders(coordinators: list[Coordinator]) -> list[Coordinator]:
    return [c for c in coordinators if c.leading is not None and not c.leading.lost.is_set()]


async def test_all_serve_one_leads_and_a_successor_takes_over(three: list[Coordinator]) -> None:
    deadline = time.monotonic() + 10
    while not await leaders(three):
        assert time.monotonic() < deadline, "no leader"
        await asyncio.sleep(0.05)
    (leader,) = await leaders(three)
    async with Client(f"127.0.0.1:{three[0].port}") as client:
        members = (await client.coordinators()).members
        assert len(members) == 3 and [m.leader for m in members].count(True) == 1
        pod = pod_pb2.Pod()
        pod.metadata.name = f"p-{uuid.uuid4().hex[:6]}"
        pod.spec.containers.add(name="main", image="busybox")
        await client.create(pod)
    for c in three:  # every coordinator answers from the shared store
        async with Client(f"127.0.0.1:{c.port}") as client:
            got = await client.get(POD, "default", pod.metadata.name)
            assert got.metadata.name == pod.metadata.name  # type: ignore[attr-defined]

    stopped = time.monotonic()
    await leader.stop()
    three.remove(leader)
    while not await leaders(three):
        assert time.monotonic() - stopped < 6, "no successor"
        await asyncio.sleep(0.05)
    assert isinstance(three[0].elector, EtcdElector)
