"""How a batch of pod statuses reaches the coordinator: as a message on a stream, or as a call.

During a burst of pod starts every node reports about once per pod, each report a unary call,
and the coordinator's gRPC work per call was about a fifth of its CPU per pod (bench/hollow.py
--calls). `StreamSender` holds one StreamPodStatus stream while reports flow and sends each
batch as a message on it; the coordinator serves the message as the call it stands for
(callchain.calls_on_stream) and answers in order. A coordinator without the method
(UNIMPLEMENTED), or one whose stream caps are full (RESOURCE_EXHAUSTED), gets calls, as before,
until the stream is next closed. A stream unused for IDLE_CLOSE is closed, so that an idle fleet
holds no status streams on the coordinator (its memory per agent).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import grpc

from atoll import errors, rpc
from atoll.v1 import node_api_pb2

log = logging.getLogger(__name__)


class _NoStream(Exception):
    """The coordinator will not take a status stream now: calls take over."""


# Seconds an open status stream may go unused before the agent closes it.
IDLE_CLOSE = 30.0

_CODES = {code.value[0]: code for code in grpc.StatusCode}


class StatusSender(Protocol):
    async def send(
        self, stub: Any, request: node_api_pb2.ReportPodStatusRequest, seconds: float
    ) -> node_api_pb2.ReportPodStatusResponse:
        """ReportPodStatus's answer to `request`, or its refusal as AtollError."""
        ...

    def close(self) -> None:
        """Lets go of what the sender holds open; the next send opens it again."""
        ...


class UnarySender:
    """One ReportPodStatus call per batch."""

    async def send(
        self, stub: Any, request: node_api_pb2.ReportPodStatusRequest, seconds: float
    ) -> node_api_pb2.ReportPodStatusResponse:
        response: node_api_pb2.ReportPodStatusResponse = await rpc.unary(
            stub.ReportPodStatus(request, timeout=seconds)
        )
        return response

    def close(self) -> None:
        return None


def refusal(reply: node_api_pb2.StreamPodStatusResponse) -> errors.AtollError | None:
    """The error a stream's answer carries, as the call ReportPodStatus would have raised it."""
    if reply.code == 0:
        return None
    code = _CODES.get(reply.code, grpc.StatusCode.UNKNOWN)
    return errors.from_status(code, reply.message, reply.field)


class StreamSender:
    """Batches as messages on one StreamPodStatus stream per coordinator stub, calls where the
    coordinator has no such stream. One send at a time (the StatusReporter's loop)."""

    def __init__(self) -> None:
        self._call: Any = None  # the open stream, on self._stub
        self._stub: Any = None
        self._unary_only: Any = None  # the stub whose coordinator answered UNIMPLEMENTED
        self._unary = UnarySender()

    @property
    def open(self) -> bool:
        return self._call is not None

    def close(self) -> None:
        """Closes the stream; the next batch opens one again, also where calls took over (a
        coordinator upgraded in place, or one whose stream caps are free again)."""
        call, self._call, self._stub = self._call, None, None
        self._unary_only = None
        if call is not None:
            call.cancel()

    async def send(
        self, stub: Any, request: node_api_pb2.ReportPodStatusRequest, seconds: float
    ) -> node_api_pb2.ReportPodStatusResponse:
        if stub is self._unary_only:
            return await self._unary.send(stub, request, seconds)
        try:
            reply = await self._on_stream(stub, request, seconds)
        except _NoStream as reason:
            log.info("reporting pod statuses by calls until the link is idle: %s", reason)
            self._unary_only = stub
            return await self._unary.send(stub, request, seconds)  # this batch was not applied
        failure = refusal(reply)
        if failure is not None:
            raise failure
        return reply.response

    async def _on_stream(
        self, stub: Any, request: node_api_pb2.ReportPodStatusRequest, seconds: float
    ) -> node_api_pb2.StreamPodStatusResponse:
        for attempt in (1, 2):
            if stub is not self._stub or (self._call is not None and self._call.done()):
                self.close()  # the link moved, or the coordinator ended the stream
            fresh = self._call is None
            if fresh:
                self._call, self._stub = stub.StreamPodStatus(), stub
            try:
                return await asyncio.wait_for(self._exchange(self._call, request), seconds)
            except asyncio.InvalidStateError:
                # The stream ended between the check and the write: this batch never left.
                self.close()
                if attempt == 2:
                    raise errors.Unavailable("the status stream ended twice in a row") from None
            except grpc.aio.AioRpcError as err:
                self.close()
                lost = rpc.error_from_rpc(err)
                if isinstance(lost, errors.Unimplemented):
                    raise _NoStream("the coordinator has no StreamPodStatus") from None
                if isinstance(lost, errors.ResourceExhausted):  # its stream caps are full
                    raise _NoStream(str(lost)) from None
                if fresh and err.code() == grpc.StatusCode.INTERNAL:
                    # A coordinator without the method answers UNIMPLEMENTED at once, and a write
                    # racing that answer fails in gRPC's core, which then reports INTERNAL in its
                    # place (1 run in 12 against such a coordinator). A call settles it; statuses
                    # are idempotent, so one the stream did apply is only applied again.
                    raise _NoStream(f"the new status stream failed: {lost}") from None
                raise lost from None
            except TimeoutError:
                # Its answer may still come; the next batch must not take it for its own.
                self.close()
                raise errors.DeadlineExceeded(f"no answer to a status report within {seconds:g}s") from None
            except asyncio.CancelledError:
                self.close()
                task = asyncio.current_task()
                if task is None or task.cancelling() > 0:
                    raise
                # grpc raises it from a stream whose channel was closed under it (the link moved).
                raise errors.Unavailable("the status stream's channel was closed") from None
            except errors.AtollError:  # the coordinator ended the stream
                self.close()
                raise
            except Exception as exc:  # grpc's own (a stub on a closed channel): the loop must go on
                self.close()
                raise errors.Unavailable(f"the status stream failed: {exc!r}") from None
        raise AssertionError("unreachable")

    @staticmethod
    async def _exchange(
        call: Any, request: node_api_pb2.ReportPodStatusRequest
    ) -> node_api_pb2.StreamPodStatusResponse:
        await call.write(node_api_pb2.StreamPodStatusRequest(report=request))
        reply = await call.read()
        if reply is grpc.aio.EOF:
            raise errors.Unavailable("the coordinator ended the status stream")
        assert isinstance(reply, node_api_pb2.StreamPodStatusResponse)
        return reply
