"""How long a call waits before this coordinator's gRPC server hands it to a handler.

gRPC's asyncio server accepts calls one at a time, in arrival order, from one
queue for all connections. During a scheduling burst the agents' status
reports and events arrive faster than one core can take them, the queue grows,
and a heartbeat waits behind seconds of other calls before its handler sees
it (measured with bench/hollow.py's sentinel agent: a handler that answers in
under a millisecond, a round trip of 5-8 s). The event loop itself keeps
turning meanwhile (its longest pause 0.2 s), so LoopStalls does not see it.

`CallQueueProbe` calls this coordinator's own health service through a private
unix socket on the same server, one call at a time, every `interval` seconds.
A call that took longer than `threshold` marks the time from its sending to its
answer as time the coordinator could not hear its nodes; one still waiting
counts until now. The node lifecycle subtracts that time from a node's silence
before judging it, as it subtracts the loop's stalls (atoll.loopstalls.Deafness
takes the larger of the two, since a stalled loop also holds the probe).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from atoll import tls
from atoll.aio import wait_or_stop

log = logging.getLogger(__name__)


class CallQueueProbe:
    def __init__(
        self,
        socket_path: str,
        *,
        interval: float = 0.5,
        threshold: float = 0.25,
        timeout: float = 60.0,
        keep: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = f"unix://{socket_path}"
        self._interval = interval
        self._threshold = threshold
        self._timeout = timeout
        self._keep = keep
        self._clock = clock
        self._waits: collections.deque[tuple[float, float]] = collections.deque()  # (sent, answered)
        self._pending_since: float | None = None  # the probe call in flight, when it was sent
        self.slowest = 0.0  # the longest answered probe (seconds), for logs and benchmarks

    def record(self, sent: float, answered: float) -> None:
        """A call sent at `sent` was answered at `answered` (monotonic)."""
        self.slowest = max(self.slowest, answered - sent)
        if answered - sent <= self._threshold:
            return
        self._waits.append((sent, answered))
        while self._waits and self._waits[0][1] < answered - self._keep:
            self._waits.popleft()

    def within(self, seconds: float) -> float:
        now = self._clock()
        since = now - seconds
        spans = list(self._waits)
        if self._pending_since is not None and now - self._pending_since > self._threshold:
            spans.append((self._pending_since, now))
        total, covered_to = 0.0, since
        for sent, answered in sorted(spans):  # one call at a time: spans touch at most, never nest
            start = max(sent, covered_to)
            if answered > start:
                total += answered - start
                covered_to = answered
        return min(total, seconds)

    async def run(self, stop: asyncio.Event) -> None:
        async with grpc.aio.secure_channel(self.target, tls.local_channel_credentials()) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            while True:
                sent = self._pending_since = self._clock()
                try:
                    await check(health_pb2.HealthCheckRequest(), timeout=self._timeout)
                except grpc.RpcError as exc:
                    # Not serving yet, or going away: no figure, not an outage of the queue.
                    log.debug("call queue probe failed: %s", exc.code())
                else:
                    self.record(sent, self._clock())
                finally:
                    self._pending_since = None
                if await wait_or_stop(stop, self._interval):
                    return
