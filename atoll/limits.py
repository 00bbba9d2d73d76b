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

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

_OWN_SERVICE_PREFIX = "/atoll."


@dataclass(frozen=True)
class LimitConfig:
    rate: float = 200.0  # calls per second per client
    burst: int = 400
    max_watches: int = 100  # open streams per client
    max_total_watches: int = 10_000


class TokenBucket:
    __slots__ = ("_burst", "_clock", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._stamp = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def peer_identity(context: grpc.aio.ServicerContext) -> str:
    """Without authentication, the peer's address (without its port) names the client."""
    peer = context.peer() or "unknown"
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer


class Limits:
    def __init__(
        self,
        config: LimitConfig,
        *,
        identity: Callable[[grpc.aio.ServicerContext], str] = peer_identity,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._identity = identity
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._watches: dict[str, int] = {}
        self.total_watches = 0

    def _bucket(self, who: str) -> TokenBucket:
        bucket = self._buckets.get(who)
        if bucket is None:
            if len(self._buckets) > 100_000:
                self._buckets.clear()  # bounded memory; a cleared bucket starts full
            bucket = self._buckets[who] = TokenBucket(self.config.rate, self.config.burst, self._clock)
        return bucket

    async def admit_call(self, context: grpc.aio.ServicerContext, method: str) -> str:
        who = self._identity(context)
        if not self._bucket(who).take():
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limit: {who} exceeds {self.config.rate:g} calls/s (burst {self.config.burst}); slow down",
            )
        return who

    async def open_stream(self, context: grpc.aio.ServicerContext, method: str) -> str:
        who = await self.admit_call(context, method)
        if self.total_watches >= self.config.max_total_watches:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server has {self.total_watches} open streams, its limit; try again later",
            )
        if self._watches.get(who, 0) >= self.config.max_watches:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{who} has {self.config.max_watches} open streams, the limit per client; close some first",
            )
        self._watches[who] = self._watches.get(who, 0) + 1
        self.total_watches += 1
        return who

    def close_stream(self, who: str) -> None:
        left = self._watches.get(who, 0) - 1
        if left > 0:
            self._watches[who] = left
        else:
            self._watches.pop(who, None)
        self.total_watches -= 1


class LimitInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or not method.startswith(_OWN_SERVICE_PREFIX):
            return handler
        limits = self.limits
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await limits.admit_call(context, method)
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                who = await limits.open_stream(context, method)
                try:
                    async for item in inner_stream(request, context):
                        yield item
                finally:
                    limits.close_stream(who)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
