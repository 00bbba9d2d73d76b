"""WatchNode's parts: aio.merge (several watches on one stream) and pushes.as_field (a shared
push's bytes inside WatchNodeResponse, built once)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from atoll import callchain
from atoll.aio import merge
from atoll.v1 import node_api_pb2
from coordinator.api.node import pushes


async def ticks(name: str, count: int, pause: float, ended: list[str]) -> AsyncIterator[str]:
    try:
        for i in range(count):
            await asyncio.sleep(pause)
            yield f"{name}{i}"
    finally:
        ended.append(name)


async def test_merge_keeps_each_sources_order_and_ends_when_all_do() -> None:
    ended: list[str] = []
    got = [item async for item in merge(ticks("a", 3, 0.001, ended), ticks("b", 2, 0.0015, ended))]
    assert sorted(got) == ["a0", "a1", "a2", "b0", "b1"]
    assert [x for x in got if x[0] == "a"] == ["a0", "a1", "a2"]
    assert [x for x in got if x[0] == "b"] == ["b0", "b1"]
    assert sorted(ended) == ["a", "b"]


async def test_a_sources_error_ends_the_merge_and_closes_the_others() -> None:
    ended: list[str] = []

    async def broken() -> AsyncIterator[str]:
        yield "x0"
        raise ValueError("gone")

    got: list[str] = []
    with pytest.raises(ValueError, match="gone"):
        async for item in merge(broken(), ticks("slow", 100, 10.0, ended)):
            got.append(item)
    assert got == ["x0"] and ended == ["slow"]


async def test_closing_the_merge_cancels_and_closes_every_source() -> None:
    ended: list[str] = []
    async with contextlib.aclosing(
        merge(ticks("a", 100, 0.001, ended), ticks("b", 100, 10.0, ended))
    ) as merged:
        async for item in merged:
            assert item == "a0"
            break
    assert sorted(ended) == ["a", "b"]


def test_a_push_as_a_field_parses_as_watch_node_response() -> None:
    services = node_api_pb2.WatchServicesResponse()
    services.state.generation = 7
    services.state.service_cidr = "10.254.0.0/16"
    for i in range(200):  # past one byte of length
        services.state.services.add().metadata.name = f"svc-{i}"
    payload = callchain.Encoded(services.SerializeToString())
    wrapped = pushes.as_field(pushes.SERVICES, payload)
    got = node_api_pb2.WatchNodeResponse.FromString(wrapped.data)
    assert got.WhichOneof("push") == "services" and got.services == services
    assert pushes.as_field(pushes.SERVICES, payload) is wrapped  # built once per payload
    small = node_api_pb2.WatchAssignmentResponse()
    small.assignment.generation = 3
    one = node_api_pb2.WatchNodeResponse.FromString(
        pushes.as_field(pushes.ASSIGNMENT, callchain.Encoded(small.SerializeToString())).data
    )
    assert one.assignment == small
    empty = node_api_pb2.WatchNodeResponse.FromString(
        pushes.as_field(pushes.NODE_CONFIG, callchain.Encoded(b"")).data
    )
    assert empty.WhichOneof("push") == "node_config"


async def test_a_source_cancelled_from_within_ends_the_merge_as_before() -> None:
    ended: list[str] = []

    async def cancelled() -> AsyncIterator[str]:
        yield "c0"
        shared = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(shared.cancel)  # someone else cancels what it awaits
        await shared
        yield "c1"

    got: list[str] = []
    with pytest.raises(asyncio.CancelledError):
        async for item in merge(cancelled(), ticks("slow", 100, 10.0, ended)):
            got.append(item)
    assert got == ["c0"] and ended == ["slow"]
