"""Per-client rate limit and stream caps over real gRPC: RESOURCE_EXHAUSTED at the exact counts, then admission.

The coordinator's rate-limit clock is the test's: it steps time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator

import pytest

from atoll import errors, kinds
from atoll.v1 import pod_pb2
from tests.functional.harness import Cluster

NODE = kinds.by_name("Node")
POD = kinds.by_name("Pod")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def limited(tmp_path: pathlib.Path) -> AsyncIterator[tuple[Cluster, Clock]]:
    clock = Clock()
    cluster = await Cluster(
        tmp_path, clock=clock, api_rate=20, api_burst=10, max_watches_per_client=2
    ).start()
    try:
        yield cluster, clock
    finally:
        await cluster.stop()


async def test_the_rate_limit_admits_the_burst_then_the_rate(limited: tuple[Cluster, Clock]) -> None:
    cluster, clock = limited
    c = cluster.client
    assert c is not None
    clock.now += 10  # a full bucket, whatever starting the cluster spent
    for _ in range(10):
        await c.list(NODE)  # the burst, admitted one by one
    with pytest.raises(errors.ResourceExhausted, match=r"rate limit: admin exceeds 20 calls/s \(burst 10\)"):
        await c.list(NODE)
    clock.now += 0.06  # 1.2 tokens at 20/s: one call
    await c.list(NODE)
    with pytest.raises(errors.ResourceExhausted):
        await c.list(NODE)


async def test_the_stream_cap_refuses_the_third_and_admits_it_once_one_closed(
    limited: tuple[Cluster, Clock],
) -> None:
    cluster, clock = limited
    c = cluster.client
    assert c is not None
    clock.now += 10  # no rate limit in the way

    async def open_watch() -> tuple[asyncio.Task[None], asyncio.Queue[str]]:
        """A watch whose stream is admitted: it delivers the pod created to prove it."""
        seen: asyncio.Queue[str] = asyncio.Queue()

        async def run() -> None:
            async for _, obj in c.watch(POD):
                seen.put_nowait(obj.metadata.name)  # type: ignore[attr-defined]

        return asyncio.create_task(run()), seen

    async def admitted(seen: asyncio.Queue[str], name: str) -> None:
        pod = pod_pb2.Pod()
        pod.metadata.name = name
        pod.spec.containers.add(name="main", image="busybox")
        await c.create(pod)
        while await asyncio.wait_for(seen.get(), 5) != name:
            pass

    first, first_seen = await open_watch()
    second, second_seen = await open_watch()
    await admitted(first_seen, "one")
    await admitted(second_seen, "two")
    with pytest.raises(errors.ResourceExhausted, match="admin holds 2 open streams, the limit per client"):
        async for _ in c.watch(POD):
            pass
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)

    async def third_admitted() -> asyncio.Task[None]:
        for _ in range(100):  # the server sees the closed stream within a few round trips
            clock.now += 10  # the rate limit stays out of the way
            task, seen = await open_watch()
            try:
                await admitted(seen, f"three-{_}")
                return task
            except (errors.ResourceExhausted, TimeoutError):
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await asyncio.sleep(0.02)
        raise AssertionError("the third watch was never admitted")

    third = await third_admitted()
    for task in (second, third):
        task.cancel()
    await asyncio.gather(second, third, return_exceptions=True)
