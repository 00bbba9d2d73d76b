"""A gRPC server on a loop thread of its own, its handlers handed to the main loop (atoll.handoff):
statuses, field paths, streams and cancellations come through as they do on one loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from atoll import callchain, errors, rpc
from atoll.handoff import Handoff, LoopThread
from atoll.v1 import cluster_pb2, cluster_pb2_grpc
from tests.functional.harness import eventually


class _Servicer:
    def __init__(self) -> None:
        self.seen: list[tuple[asyncio.AbstractEventLoop, str, str]] = []
        self.watch_ended = threading.Event()
        self.fail_with: Exception | None = None

    async def GetVersion(self, request: cluster_pb2.GetVersionRequest, context: Any) -> Any:
        self.seen.append((asyncio.get_running_loop(), context.peer(), callchain.CALLER.get()))
        if self.fail_with is not None:
            raise self.fail_with
        return cluster_pb2.GetVersionResponse(server_version="9.9.9")

    async def Watch(self, request: cluster_pb2.WatchRequest, context: Any) -> AsyncIterator[Any]:
        try:
            for _ in range(3):
                yield cluster_pb2.WatchResponse()
            if request.kind == cluster_pb2.KIND_NODE:
                raise errors.NotFound("no such thing", field="kind")
            await asyncio.sleep(60)
        finally:
            self.watch_ended.set()


class _NameLink(callchain.CallInterceptor):
    async def admit(self, method: str, request: Any, context: Any) -> Any:
        callchain.CALLER.set(
            "link-on-" + ("main" if threading.current_thread() is threading.main_thread() else "x")
        )
        return None


@pytest.fixture
async def served() -> AsyncIterator[tuple[_Servicer, cluster_pb2_grpc.ClusterServiceStub]]:
    front = LoopThread("test-front")
    front.start()
    servicer = _Servicer()
    binding = rpc.ServiceBinding(
        servicer,
        rpc.only_methods(cluster_pb2_grpc.add_ClusterServiceServicer_to_server, ["GetVersion", "Watch"]),
        "atoll.v1.ClusterService",
    )
    server = await front.run(
        rpc.start_server(
            "127.0.0.1:0", [binding], links=[_NameLink()], handoff=Handoff(asyncio.get_running_loop())
        ),
        10,
    )
    channel = rpc.open_channel(f"127.0.0.1:{server.port}")
    try:
        yield servicer, cluster_pb2_grpc.ClusterServiceStub(channel)
    finally:
        await channel.close()
        await front.run(server.stop(0), 10)
        await front.stop()


async def test_handlers_run_on_the_main_loop_and_see_the_call(
    served: tuple[_Servicer, cluster_pb2_grpc.ClusterServiceStub],
) -> None:
    servicer, stub = served
    response = await rpc.unary(stub.GetVersion(cluster_pb2.GetVersionRequest(), timeout=10))
    assert response.server_version == "9.9.9"
    [(loop, peer, caller)] = servicer.seen
    assert loop is asyncio.get_running_loop()
    assert peer.startswith("ipv4:127.0.0.1:")
    assert caller == "link-on-main"  # the links run beside the handler, on the main loop


async def test_errors_keep_their_status_and_field(
    served: tuple[_Servicer, cluster_pb2_grpc.ClusterServiceStub],
) -> None:
    servicer, stub = served
    servicer.fail_with = errors.InvalidArgument("bad name", field="metadata.name")
    with pytest.raises(errors.InvalidArgument) as bad:
        await rpc.unary(stub.GetVersion(cluster_pb2.GetVersionRequest(), timeout=10))
    assert bad.value.field == "metadata.name"
    servicer.fail_with = RuntimeError("a bug with a secret in it")
    with pytest.raises(grpc.aio.AioRpcError) as internal:
        await stub.GetVersion(cluster_pb2.GetVersionRequest(), timeout=10)
    assert internal.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (internal.value.details() or "")


async def test_a_stream_delivers_its_items_then_its_error(
    served: tuple[_Servicer, cluster_pb2_grpc.ClusterServiceStub],
) -> None:
    _, stub = served
    got = 0
    with pytest.raises(errors.NotFound) as missing:
        async for _ in rpc.stream(
            stub.Watch(cluster_pb2.WatchRequest(kind=cluster_pb2.KIND_NODE), timeout=10)
        ):
            got += 1
    assert got == 3
    assert missing.value.field == "kind"


async def test_a_client_leaving_a_stream_ends_its_handler(
    served: tuple[_Servicer, cluster_pb2_grpc.ClusterServiceStub],
) -> None:
    servicer, stub = served
    call = stub.Watch(cluster_pb2.WatchRequest(kind=cluster_pb2.KIND_POD), timeout=30)
    for _ in range(3):
        await call.read()
    call.cancel()
    await eventually(lambda: _async(servicer.watch_ended.is_set()), what="the handler's finally")


async def _async(value: bool) -> bool:
    return value
