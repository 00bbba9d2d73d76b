"""Pod statuses as messages on one stream (StreamPodStatus): each message is served as its
ReportPodStatus call would be, links included, on a server whose handlers are handed to the main
loop as the coordinator's are; the agent's sender falls back to calls, and never takes a late
answer for the next report's."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from agent import reporting, statusstream
from agent.reporting import StatusReporter
from agent.statusstream import StreamSender, UnarySender
from atoll import callchain, errors, rpc
from atoll.handoff import Handoff, LoopThread
from atoll.limits import LimitConfig, Limits
from atoll.v1 import node_api_pb2, node_api_pb2_grpc, pod_pb2
from coordinator.api.node.service import status_answer, status_refusal
from tests.functional.harness import eventually

FULL = "/atoll.v1.NodeService/StreamPodStatus"


class _Node:
    """ReportPodStatus by node name: "refuse-*" fails with a field's error, "hold" waits for
    `release`; the stream serves each message as that call."""

    def __init__(self) -> None:
        self.served: list[tuple[str, bool]] = []  # (node name, on the main loop)
        self.release = asyncio.Event()

    async def ReportPodStatus(self, request: node_api_pb2.ReportPodStatusRequest, context: Any) -> Any:
        self.served.append((request.node_name, threading.current_thread() is threading.main_thread()))
        if request.node_name.startswith("refuse"):
            raise errors.FailedPrecondition("not this one", field="reports[0].uid")
        if request.node_name == "hold":
            await self.release.wait()
        return node_api_pb2.ReportPodStatusResponse(ignored=len(request.reports))

    @callchain.calls_on_stream(answer=status_answer, refuse=status_refusal)
    async def StreamPodStatus(self, request: node_api_pb2.StreamPodStatusRequest, context: Any) -> Any:
        return await self.ReportPodStatus(request.report, context)


class _Gate(callchain.CallInterceptor):
    """Counts admissions by method; refuses node "intruder" as the authorizing link would."""

    def __init__(self) -> None:
        self.admitted: list[str] = []
        self.finished: list[grpc.StatusCode] = []

    async def admit(self, method: str, request: Any, context: Any) -> Any:
        self.admitted.append(method.rsplit("/", 1)[-1])
        report = getattr(request, "report", request)
        if report.node_name == "intruder":
            raise errors.PermissionDenied("node node-1 may only act as itself")
        return None

    def finish(self, method: str, ticket: Any, code: grpc.StatusCode) -> None:
        self.finished.append(code)


Served = tuple[_Node, _Gate, node_api_pb2_grpc.NodeServiceStub, grpc.aio.Channel]


async def _serve(methods: list[str], *more_links: callchain.CallInterceptor) -> AsyncIterator[Served]:
    front = LoopThread("test-front")
    front.start()
    node, gate = _Node(), _Gate()
    binding = rpc.ServiceBinding(
        node,
        rpc.only_methods(node_api_pb2_grpc.add_NodeServiceServicer_to_server, methods),
        "atoll.v1.NodeService",
    )
    server = await front.run(
        rpc.start_server(
            "127.0.0.1:0", [binding], links=[gate, *more_links], handoff=Handoff(asyncio.get_running_loop())
        ),
        10,
    )
    channel = rpc.open_channel(f"127.0.0.1:{server.port}")
    try:
        yield node, gate, node_api_pb2_grpc.NodeServiceStub(channel), channel
    finally:
        node.release.set()
        await channel.close()
        await front.run(server.stop(0), 10)
        await front.stop()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async for value in _serve(["ReportPodStatus", "StreamPodStatus"]):
        yield value


@pytest.fixture
async def older() -> AsyncIterator[Served]:
    """A coordinator from before StreamPodStatus."""
    async for value in _serve(["ReportPodStatus"]):
        yield value


LIMITS = Limits(LimitConfig(max_watches=1))


@pytest.fixture
async def capped() -> AsyncIterator[Served]:
    """A coordinator whose stream caps let each client hold one stream."""
    LIMITS.__init__(LimitConfig(max_watches=1))  # type: ignore[misc]  # afresh for each test
    async for value in _serve(["ReportPodStatus", "StreamPodStatus"], LIMITS):
        yield value


class _CountingStub:
    """The stub, counting the streams opened on it."""

    def __init__(self, stub: node_api_pb2_grpc.NodeServiceStub) -> None:
        self._stub = stub
        self.streams = 0

    def StreamPodStatus(self) -> Any:
        self.streams += 1
        return self._stub.StreamPodStatus()

    def ReportPodStatus(self, request: Any, timeout: float) -> Any:
        return self._stub.ReportPodStatus(request, timeout=timeout)


def report(node: str, pods: int = 1) -> node_api_pb2.ReportPodStatusRequest:
    return node_api_pb2.ReportPodStatusRequest(
        node_name=node, reports=[node_api_pb2.PodStatusReport(name=f"p{i}") for i in range(pods)]
    )


async def test_each_message_is_served_as_its_call_and_answered_in_order(served: Served) -> None:
    node, gate, stub, _ = served
    sender = StreamSender()
    assert (await sender.send(stub, report("node-1", 2), 10)).ignored == 2
    # A refused report is answered with the call's error, field path included; the stream goes on.
    with pytest.raises(errors.FailedPrecondition, match="not this one") as refused:
        await sender.send(stub, report("refuse-me"), 10)
    assert refused.value.field == "reports[0].uid"
    assert sender.open
    assert (await sender.send(stub, report("node-1", 3), 10)).ignored == 3
    # Every message went through the links on its own and was served on the main loop.
    assert gate.admitted == ["StreamPodStatus"] * 3
    assert gate.finished == [grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OK]
    assert node.served == [("node-1", True), ("refuse-me", True), ("node-1", True)]
    sender.close()


async def test_garbage_is_answered_invalid_argument_and_the_stream_goes_on(served: Served) -> None:
    _, gate, _, channel = served
    call = channel.stream_stream(FULL)()  # bytes in, bytes out
    await call.write(b"\xff\xff\xff")
    bad = node_api_pb2.StreamPodStatusResponse.FromString(await call.read())
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "cannot parse the StreamPodStatus request" in bad.message
    await call.write(node_api_pb2.StreamPodStatusRequest(report=report("node-1")).SerializeToString())
    good = node_api_pb2.StreamPodStatusResponse.FromString(await call.read())
    assert good.code == 0 and good.response.ignored == 1
    assert gate.admitted == ["StreamPodStatus"]  # garbage never reached the links
    await call.done_writing()
    assert await call.code() == grpc.StatusCode.OK


async def test_a_caller_the_links_refuse_ends_the_stream_as_its_call_would_end(served: Served) -> None:
    node, _, stub, _ = served
    sender = StreamSender()
    await sender.send(stub, report("node-1"), 10)
    with pytest.raises(errors.PermissionDenied, match="may only act as itself"):
        await sender.send(stub, report("intruder"), 10)
    assert not sender.open
    assert [name for name, _ in node.served] == ["node-1"]
    # The next report opens a stream of its own.
    await sender.send(stub, report("node-1"), 10)
    assert sender.open
    sender.close()


async def test_a_coordinator_without_the_stream_gets_calls(older: Served) -> None:
    node, gate, stub, _ = older
    sender = StreamSender()
    assert (await sender.send(stub, report("node-1", 2), 10)).ignored == 2
    assert (await sender.send(stub, report("node-1", 1), 10)).ignored == 1
    # The first batch was tried on a stream (UNIMPLEMENTED, not applied) and then sent as a
    # call; from then on calls only, on this stub.
    assert gate.admitted == ["ReportPodStatus", "ReportPodStatus"]
    assert [name for name, _ in node.served] == ["node-1", "node-1"]
    assert not sender.open


async def test_calls_take_over_until_the_stream_is_next_closed(older: Served) -> None:
    _, _, stub, _ = older
    counting = _CountingStub(stub)
    sender = StreamSender()
    await sender.send(counting, report("node-1"), 10)
    await sender.send(counting, report("node-1"), 10)
    assert counting.streams == 1  # tried once, then calls
    sender.close()  # idle: a coordinator upgraded in place meanwhile gets the stream again
    await sender.send(counting, report("node-1"), 10)
    assert counting.streams == 2


async def test_a_stream_counts_against_the_stream_caps_until_it_ends(capped: Served) -> None:
    node, gate, stub, _ = capped
    first, second = StreamSender(), StreamSender()
    await first.send(stub, report("node-1"), 10)
    assert LIMITS.total_streams == 1
    # The client's one stream is taken: a second stream is refused at its first request, and
    # that batch goes as a call instead.
    assert (await second.send(stub, report("node-1", 2), 10)).ignored == 2
    assert not second.open
    assert gate.admitted == ["StreamPodStatus", "StreamPodStatus", "ReportPodStatus"]
    assert [name for name, _ in node.served] == ["node-1", "node-1"]
    assert LIMITS.total_streams == 1
    first.close()

    async def released() -> bool:
        return LIMITS.total_streams == 0

    await eventually(released, timeout=10, what="the closed stream no longer counted")
    second.close()  # calls took over until now
    await second.send(stub, report("node-1"), 10)
    assert second.open and LIMITS.total_streams == 1
    second.close()


async def test_an_answer_that_comes_too_late_is_not_taken_for_the_next_reports(served: Served) -> None:
    node, _, stub, _ = served
    sender = StreamSender()
    with pytest.raises(errors.DeadlineExceeded):
        await sender.send(stub, report("hold", 5), 0.3)
    assert not sender.open  # its answer may still come: that stream is gone
    node.release.set()
    assert (await sender.send(stub, report("node-1", 1), 10)).ignored == 1
    sender.close()


async def test_the_reporter_closes_its_stream_once_reports_stop(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, stub, _ = served
    monkeypatch.setattr(reporting, "IDLE_CLOSE", 0.3)
    reporter = StatusReporter()
    sender = reporter.sender
    assert isinstance(sender, StreamSender)

    class Source:
        def __init__(self) -> None:
            self.stub = stub

    stop = asyncio.Event()
    task = asyncio.create_task(reporter.run(Source(), "node-1", stop))
    try:
        pod = pod_pb2.Pod()
        pod.metadata.name, pod.metadata.namespace, pod.metadata.uid = "web", "default", "uid-web"
        reporter.update(pod, pod_pb2.PodStatus(phase=pod_pb2.POD_PHASE_RUNNING))

        async def opened() -> bool:
            return sender.open

        async def closed() -> bool:
            return not sender.open

        await eventually(opened, timeout=10, what="a stream opened for the report")
        await eventually(closed, timeout=10, what="the idle stream closed")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def test_a_refusal_comes_back_as_the_error_the_call_raises() -> None:
    for err in (
        errors.FailedPrecondition("pod is not bound to this node"),
        errors.InvalidArgument("bad name", field="node_name"),
        errors.ResourceExhausted("slow down"),
    ):
        back = statusstream.refusal(status_refusal(err))
        assert type(back) is type(err) and back.message == err.message and back.field == err.field
    assert statusstream.refusal(status_answer(node_api_pb2.ReportPodStatusResponse())) is None


def test_the_unary_sender_stays_for_stubs_that_only_call() -> None:
    assert isinstance(StatusReporter(UnarySender()).sender, UnarySender)
