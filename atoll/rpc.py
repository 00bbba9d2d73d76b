"""The one place where gRPC servers and channels are built.

Both daemons and the CLI go through here, so transport security, message
limits, keepalives and error mapping change in this module only.

Errors: servicers raise `atoll.errors.AtollError`; `ErrorInterceptor` turns
them into statuses (field path in trailing metadata) and turns any other
exception into INTERNAL without leaking a traceback to the client. Clients
wrap calls in `unary()` / `stream()` to get AtollError back.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from atoll import errors

log = logging.getLogger(__name__)

T = TypeVar("T")

# Requests are small; responses (lists, assignments) can be large.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_RESPONSE_BYTES = 256 * 1024 * 1024

_KEEPALIVE = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]

_SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.so_reuseport", 0),
    *_KEEPALIVE,
]

_CHANNEL_OPTIONS = [
    # Reconnect quickly after a coordinator restart instead of gRPC's default of up to 2 minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 3_000),
    ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
    ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
    ("grpc.enable_retries", 1),
    *_KEEPALIVE,
]

# Only our own services are wrapped; health and reflection manage their own statuses.
_OWN_SERVICE_PREFIX = "/atoll."


def _abort_args(err: errors.AtollError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    trailing = ((errors.FIELD_METADATA_KEY, err.field),) if err.field else ()
    return err.code, str(err), trailing


def _wrap_unary(fn: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(request, context)
        except errors.AtollError as err:
            await context.abort(*_abort_args(err))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            log.exception("unexpected error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the server log")

    return wrapper


def _wrap_stream(fn: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., AsyncIterator[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in fn(request, context):
                yield item
        except errors.AtollError as err:
            await context.abort(*_abort_args(err))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            log.exception("unexpected error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the server log")

    return wrapper


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Maps AtollError to gRPC statuses for every Atoll service."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(_OWN_SERVICE_PREFIX):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


@dataclass
class ServiceBinding:
    """A servicer plus the generated function that adds it to a server."""

    servicer: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    full_name: str


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: list[str] = field(default_factory=list)

    async def stop(self, grace: float = 1.0) -> None:
        for name in self.service_names:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)


def split_listen(listen: str) -> list[str]:
    """`HOST:PORT[,unix:///path.sock,...]`: one server may listen on several addresses."""
    return [part.strip() for part in listen.split(",") if part.strip()]


async def start_server(
    listen: str,
    bindings: Sequence[ServiceBinding],
    *,
    credentials: grpc.ServerCredentials | None = None,
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
) -> RunningServer:
    """Start a grpc.aio server with health and reflection; port 0 picks a free port.

    The returned port is the first TCP address's; unix sockets report none.
    """
    server = grpc.aio.server(
        interceptors=[*interceptors, ErrorInterceptor()],
        options=_SERVER_OPTIONS,
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = []
    for binding in bindings:
        binding.add_to_server(binding.servicer, server)
        names.append(binding.full_name)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = 0
    for address in split_listen(listen):
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
        if bound == 0:
            raise errors.Unavailable(f"cannot listen on {address}")
        if not address.startswith("unix:"):
            port = port or bound
    await server.start()
    for name in names:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server=server, port=port, health=health_servicer, service_names=names)


def open_channel(target: str, *, credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
    """An asyncio channel to `target` (HOST:PORT)."""
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)


def error_from_rpc(err: grpc.aio.AioRpcError) -> errors.AtollError:
    field_path = ""
    for key, value in err.trailing_metadata() or ():
        if key == errors.FIELD_METADATA_KEY:
            field_path = str(value)
    return errors.from_status(err.code(), err.details() or "", field_path)


async def unary(call: Awaitable[T]) -> T:
    """Await a unary call, raising AtollError instead of AioRpcError."""
    try:
        return await call
    except grpc.aio.AioRpcError as err:
        raise error_from_rpc(err) from None


async def stream(call: AsyncIterator[T]) -> AsyncIterator[T]:
    """Iterate a server stream, raising AtollError instead of AioRpcError."""
    try:
        async for item in call:
            yield item
    except grpc.aio.AioRpcError as err:
        raise error_from_rpc(err) from None
