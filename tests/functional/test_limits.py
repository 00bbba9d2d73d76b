"""Per-client rate limit and stream caps answer RESOURCE_EXHAUSTED, and recover."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

from atoll import errors, kinds
from tests.functional.harness import Cluster

NODE = kinds.by_name("Node")
POD = kinds.by_name("Pod")


async def test_rate_limit_and_watch_cap(tmp_path: pathlib.Path) -> None:
    cluster = await Cluster(tmp_path, api_rate=20, api_burst=10, max_watches_per_client=2).start()
    try:
        c = cluster.client
        assert c is not None
        results = await asyncio.gather(*(c.list(NODE) for _ in range(40)), return_exceptions=True)
        refused = [r for r in results if isinstance(r, BaseException)]
        assert refused and all(isinstance(r, errors.ResourceExhausted) for r in refused)
        assert "rate limit" in str(refused[0])
        await asyncio.sleep(1.0)  # the bucket refills
        await c.list(NODE)

        streams = [c.watch(POD) for _ in range(3)]
        first, second, third = streams
        tasks = [asyncio.create_task(_drain(s)) for s in (first, second)]
        await asyncio.sleep(0.3)
        with pytest.raises(errors.ResourceExhausted, match="open streams"):
            await asyncio.wait_for(third.__anext__(), 5)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.3)
        again = c.watch(POD)
        follow = asyncio.create_task(_drain(again))
        await asyncio.sleep(0.3)
        assert not follow.done()  # admitted once the others closed
        follow.cancel()
    finally:
        await cluster.stop()


async def _drain(stream: object) -> None:
    async for _ in stream:  # type: ignore[attr-defined]
        pass
