"""The coordinator's heartbeat lane, as the agent uses it.

A coordinator serves heartbeats on a listener of their own (coordinator
--lease-listen) and tells agents its port in every Register and Heartbeat
answer. gRPC's asyncio server takes calls one at a time in arrival order, so
on the API's listener a heartbeat waits behind every status report and event
that came before it: during a 10,000-pod burst that was 5-8 s, most of a
node's grace period. On the lane it waits behind heartbeats only (Kubernetes
gives node leases a priority level of their own for the same reason).

The lane is an optimisation, never a dependency: the agent uses it only once
its channel is connected, to the host it reached the coordinator at, with the
same credentials; a heartbeat that fails there goes to the API's listener at
once, and the lane is tried again only after a backoff (a firewall that lets
6443 through but not the lane costs nothing but the priority).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from atoll.backoff import Backoff
from atoll.v1 import node_api_pb2_grpc

log = logging.getLogger(__name__)

READY_TIMEOUT = 5.0  # a lane not connected by then is given up until the backoff ends
RETIRE_AFTER = 15.0  # a dropped lane's channel is closed this long after (its calls end first)


def lane_address(target: str, port: int) -> str:
    """The lane on the host of `target` (HOST:PORT, [V6]:PORT): the host the agent already reaches."""
    host = target.rpartition(":")[0] or target
    return f"{host}:{port}"


class LeaseLane:
    """One lane at a time, to the coordinator the agent is on; `stub_for(target)` is its stub while
    it is connected and belongs to `target`, else None (heartbeat on the API's listener)."""

    def __init__(
        self,
        open_channel: Callable[[str], grpc.aio.Channel],
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self._open_channel = open_channel
        self._clock = clock
        self._backoff = backoff or Backoff(initial=5.0, maximum=300.0)
        self._ready_timeout = ready_timeout
        self._target = ""  # the coordinator (API address) the lane belongs to
        self._port = 0
        self._channel: grpc.aio.Channel | None = None
        self._stub: node_api_pb2_grpc.NodeServiceStub | None = None
        self._ready = False
        self._connecting: asyncio.Task[None] | None = None
        self._retry_at = 0.0  # after a failure: no new lane before this (clock)
        # Dropped channels, each closed RETIRE_AFTER later by its timer (by id() of the channel).
        self._retired: dict[int, tuple[grpc.aio.Channel, asyncio.TimerHandle]] = {}
        self._closes: set[asyncio.Task[None]] = set()
        self.failures = 0  # heartbeats that failed on the lane (then went to the API listener)

    @property
    def address(self) -> str:
        """Where the lane is, while one is open ("": none)."""
        return lane_address(self._target, self._port) if self._channel is not None else ""

    def stub_for(self, target: str) -> node_api_pb2_grpc.NodeServiceStub | None:
        if self._ready and self._target == target:
            return self._stub
        return None

    def offer(self, target: str, port: int) -> None:
        """Coordinator `target` serves heartbeats on `port` (0: it has no lane)."""
        if target == self._target and port == self._port and (self._channel is not None or port == 0):
            return  # as it is
        if self._channel is not None:
            self._drop()
        self._target, self._port = target, port
        if port and self._clock() >= self._retry_at:
            self._open()

    def failed(self, why: object, stub: node_api_pb2_grpc.NodeServiceStub | None = None) -> None:
        """A heartbeat through `stub` on the lane failed: drop the lane, try again after a backoff.
        A failure on a lane already replaced (new credentials, another port) is not this one's."""
        if stub is not None and stub is not self._stub:
            return
        self.failures += 1
        delay = self._backoff.next()
        self._retry_at = self._clock() + delay
        log.warning(
            "heartbeat lane %s failed (%s); heartbeats go to %s, lane again in %.0fs",
            self.address,
            why,
            self._target,
            delay,
        )
        self._drop()

    def answered(self) -> None:
        self._backoff.reset()

    def reopen(self) -> None:
        """New credentials (a renewed certificate): a new channel for the lane too."""
        if self._channel is not None:
            self._drop()
            self._open()

    def _open(self) -> None:
        channel = self._channel = self._open_channel(lane_address(self._target, self._port))
        self._stub = node_api_pb2_grpc.NodeServiceStub(channel)
        self._ready = False
        self._connecting = asyncio.ensure_future(self._await_ready(channel))

    async def _await_ready(self, channel: grpc.aio.Channel) -> None:
        try:
            await asyncio.wait_for(channel.channel_ready(), self._ready_timeout)
        except (TimeoutError, grpc.aio.UsageError) as exc:
            if channel is self._channel:
                self._connecting = None  # this task: done
                self.failed(f"not connected within {self._ready_timeout:.0f}s: {type(exc).__name__}")
            return
        if channel is self._channel:
            self._ready = True
            log.info("heartbeats go to the lane at %s", self.address)

    def _drop(self) -> None:
        channel, self._channel, self._stub, self._ready = self._channel, None, None, False
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        self._connecting = None
        if channel is not None:
            # Calls in flight on it finish or fail on their own; closed a moment later.
            timer = asyncio.get_running_loop().call_later(RETIRE_AFTER, self._close_retired, channel)
            self._retired[id(channel)] = (channel, timer)

    def _close_retired(self, channel: grpc.aio.Channel) -> None:
        if self._retired.pop(id(channel), None) is not None:
            task = asyncio.ensure_future(channel.close())
            self._closes.add(task)
            task.add_done_callback(self._closes.discard)

    async def close(self) -> None:
        if self._channel is not None:
            self._drop()
        retired, self._retired = self._retired, {}
        for _, timer in retired.values():
            timer.cancel()
        await asyncio.gather(*self._closes, *(c.close() for c, _ in retired.values()), return_exceptions=True)
