"""Per-client limits on the API: a request rate and a number of open watch streams.

A client is whoever the auth layer says it is (its certificate's or token's
identity), else its peer address. Each client gets a token bucket (`rate`
calls per second, bursts up to `burst`) and at most `max_watches` open server
streams; the server as a whole at most `max_total_watches`. Going over answers
RESOURCE_EXHAUSTED with a message saying which limit, so automation can back
off; nothing is queued. Agents' NodeService calls are limited like any other
client's, with their own (generous) budget: a node heartbeats and reports in
small bursts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from atoll import callchain, errors


@dataclass(frozen=True)
class LimitConfig:
    rate: float = 200.0  # calls per second per client
    burst: int = 400
    max_watches: int = 100  # open streams per client
    max_total_watches: int = 10_000


class TokenBucket:
    __slots__ = ("_burst", "_clock", "_lock", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._stamp = clock()
        # A node's heartbeats (the coordinator's heartbeat lane, a thread of its own) and its other
        # calls take from one bucket.
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            return self._take()

    def _take(self) -> bool:
        now = self._clock()
        # A clock that steps back (it should not: monotonic) neither refills nor drains the bucket.
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._stamp = max(self._stamp, now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


# Server-streaming methods: they hold a stream open, and count against the stream caps (as does
# a stream of calls, callchain.calls_on_stream, through open_stream).
STREAMING_METHODS = frozenset(
    {
        "/atoll.v1.ClusterService/Watch",
        "/atoll.v1.ClusterService/GetLogs",
        "/atoll.v1.NodeService/WatchAssignment",
        "/atoll.v1.NodeService/WatchNodeConfig",
        "/atoll.v1.NodeService/WatchServices",
        "/atoll.v1.NodeService/WatchNode",
    }
)


class Limits(callchain.CallInterceptor):
    """A link of the server's call chain, after authentication (it keys on `callchain.caller_name`)."""

    def __init__(self, config: LimitConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._streams: dict[str, int] = {}
        self.total_streams = 0

    def _bucket(self, who: str) -> TokenBucket:
        bucket = self._buckets.get(who)
        if bucket is None:
            if len(self._buckets) > 100_000:
                self._buckets.clear()  # bounded memory; a cleared bucket starts full
            bucket = self._buckets[who] = TokenBucket(self.config.rate, self.config.burst, self._clock)
        return bucket

    async def admit(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        who = callchain.caller_name(context)
        if not self._bucket(who).take():
            raise errors.ResourceExhausted(
                f"rate limit: {who} exceeds {self.config.rate:g} calls/s (burst {self.config.burst}); slow down"
            )
        if method not in STREAMING_METHODS:
            return None
        return self._open(who)

    def open_stream(self, method: str, context: grpc.aio.ServicerContext) -> Any:
        """A stream of calls (StreamPodStatus) counts against the caps as one server stream."""
        return self._open(callchain.caller_name(context))

    def close_stream(self, method: str, ticket: Any) -> None:
        self.finish(method, ticket, grpc.StatusCode.OK)

    def _open(self, who: str) -> str:
        if self.total_streams >= self.config.max_total_watches:
            raise errors.ResourceExhausted(
                f"the server holds {self.total_streams} open streams, its limit; try again later"
            )
        if self._streams.get(who, 0) >= self.config.max_watches:
            raise errors.ResourceExhausted(
                f"{who} holds {self.config.max_watches} open streams, the limit per client; close some first"
            )
        self._streams[who] = self._streams.get(who, 0) + 1
        self.total_streams += 1
        return who

    def finish(self, method: str, ticket: Any, code: grpc.StatusCode) -> None:
        if ticket is None:
            return
        left = self._streams.get(ticket, 0) - 1
        if left > 0:
            self._streams[ticket] = left
        else:
            self._streams.pop(ticket, None)
        self.total_streams -= 1
