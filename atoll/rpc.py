"""The one place where gRPC servers and channels are built.

Both daemons and the CLI go through here, so transport security, message
limits, keepalives and error mapping change in this module only.

Errors: servicers raise `atoll.errors.AtollError`; the call chain
(atoll.callchain) turns them into statuses (a field path as
google.rpc.BadRequest details in the standard grpc-status-details-bin trailer,
which clients in any language decode) and any other exception into INTERNAL
without leaking a traceback to the client. Clients wrap calls in `unary()` /
`stream()` to get AtollError back.

The chain of a server, outermost first: the caller's grpc interceptors (which
see raw requests), reflection's gate, then atoll.callchain's
`ErrorInterceptor`, which parses each request and runs the call links
(`CallInterceptor`) in order before the servicer, all inside its error mapping.

Transport: every TCP listener is TLS (`Listener.credentials`) unless it is on
loopback; plain text anywhere else is refused here, whatever the caller
asked. Unix sockets use gRPC's local credentials and are created mode 0600.

Exposure: a TLS handshake must finish within `handshake_timeout` (5 s) or
gRPC drops the connection; a listener with `Listener.limits` is served through
atoll.connlimit's front, which caps its connections per source and in total
(for ports anyone may reach without credentials). Health answers everybody
(probes); reflection, which lists every service, answers only callers the
transport authenticated (a verified client certificate, a unix socket, plain
text on loopback), never a token-port caller.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from atoll import connlimit, errors, tls
from atoll.callchain import CallInterceptor, ErrorInterceptor, PeerResolver
from atoll.handoff import Handoff
from atoll.healthservice import HealthServicer

log = logging.getLogger(__name__)

T = TypeVar("T")

# Requests are small; responses (lists, assignments) can be large.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_RESPONSE_BYTES = 256 * 1024 * 1024
# Seconds a client may take to finish its TLS handshake (gRPC's default is 120 s).
HANDSHAKE_TIMEOUT = 5.0

# HTTP/2 pings on idle connections, to find a peer that went silent. Every agent holds two idle
# connections to its coordinator, so the pings are most of what an idle fleet sends: at 10 s each
# way, 2,000 idle mutual-TLS connections cost the server 4.5-4.7 % of a core and their clients
# 4.7-5.0 %; at the intervals below, 1.1-1.3 % and 1.7-1.9 % (bench/idle_connections.py). A client
# pings every 30 s, as the Kubernetes client checks an idle HTTP/2 connection (an agent's API
# channel: 10 s, agent.bootstrap.API_KEEPALIVE_MS); a server every 60 s, to let go of a client
# that vanished. A hung or unreachable peer is found sooner by the next call's deadline (an agent's
# heartbeat: 10 s); a peer that exits resets its connections at once.
CLIENT_KEEPALIVE_MS = 30_000
SERVER_KEEPALIVE_MS = 60_000


def _keepalive(every_ms: int) -> list[tuple[str, int]]:
    return [
        ("grpc.keepalive_time_ms", every_ms),
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
    *_keepalive(SERVER_KEEPALIVE_MS),
]

_CHANNEL_OPTIONS = [
    # Reconnect quickly after a coordinator restart instead of gRPC's default of up to 2 minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    # gRPC core also takes this as the deadline of one connection attempt (its
    # MIN_CONNECT_TIMEOUT). At 200 ms, TLS handshakes with a busy coordinator (a
    # fleet reconnecting after a restart) timed out before the SETTINGS frame and
    # were retried for ever; 5 s lets them finish. A refused connect still fails at
    # once and is retried after the initial backoff above.
    ("grpc.min_reconnect_backoff_ms", 5_000),
    ("grpc.max_reconnect_backoff_ms", 3_000),
    ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
    ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
    ("grpc.enable_retries", 1),
]


def channel_options(keepalive_ms: int = CLIENT_KEEPALIVE_MS) -> list[tuple[str, str | int]]:
    """The options of every channel built here, pinging an idle connection every `keepalive_ms`."""
    return [*_CHANNEL_OPTIONS, *_keepalive(keepalive_ms)]


# Reflection's own service; its gate is an interceptor of its own.
_REFLECTION_PREFIX = "/grpc.reflection."


def transport_authenticated(context: grpc.aio.ServicerContext) -> bool:
    """Whether the connection itself proves who calls: a verified client certificate, a unix
    socket (mode 0600), or plain text (refused anywhere but loopback)."""
    peer = tls.peer_of(context)
    return peer.verified_cert or peer.transport in ("local", "insecure")


class ReflectionGate(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Reflection lists every service and method: only for transport-authenticated callers, so
    not on a port without client certificates (the coordinator's token port)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if (
            handler is None
            or handler.stream_stream is None
            or not handler_call_details.method.startswith(_REFLECTION_PREFIX)
        ):
            return handler
        inner = handler.stream_stream

        async def gated(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            if not transport_authenticated(context):
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "server reflection needs a client certificate (the API port), not the token port",
                )
            async for response in inner(requests, context):
                yield response

        return grpc.stream_stream_rpc_method_handler(
            gated,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@dataclass
class ServiceBinding:
    """A servicer plus the generated function that adds it to a server."""

    servicer: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    full_name: str


class _HandlerCapture:
    """Stands in for a server while a generated add_*_to_server function registers a service."""

    def __init__(self) -> None:
        self.handlers: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # the same handlers come again, by name, below

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.handlers[service] = dict(handlers)


class _Partial:
    """A servicer with only some of its service's methods, as the generated add function sees it."""

    def __init__(self, servicer: Any) -> None:
        self._servicer = servicer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._servicer, name, None)


def only_methods(
    add_to_server: Callable[[Any, grpc.aio.Server], None], methods: Iterable[str]
) -> Callable[[Any, grpc.aio.Server], None]:
    """A generated add_*_to_server function that registers only `methods` of its service (a
    listener serving one part of an API: the others answer UNIMPLEMENTED there)."""
    wanted = set(methods)

    def add(servicer: Any, server: grpc.aio.Server) -> None:
        lacking = sorted(m for m in wanted if not callable(getattr(servicer, m, None)))
        if lacking:
            raise ValueError(f"{type(servicer).__name__} has no method {lacking}")
        capture = _HandlerCapture()
        # The generated function reads every method of the service; the servicer needs only ours.
        add_to_server(_Partial(servicer), capture)
        for service, handlers in capture.handlers.items():
            missing = wanted - handlers.keys()
            if missing:
                raise ValueError(f"{service} has no method {sorted(missing)}")
            kept = {name: h for name, h in handlers.items() if name in wanted}
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, kept),))
            server.add_registered_method_handlers(service, kept)

    return add


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: HealthServicer
    service_names: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    gates: list[connlimit.ConnectionGate] = field(default_factory=list)

    async def stop(self, grace: float = 1.0) -> None:
        for name in self.service_names:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)
        for gate in self.gates:
            await gate.close()


def split_listen(listen: str) -> list[str]:
    """`HOST:PORT[,unix:///path.sock,...]`: one server may listen on several addresses."""
    return [part.strip() for part in listen.split(",") if part.strip()]


@dataclass(frozen=True)
class Listener:
    """One address a server listens on. `credentials` None is plain text (loopback only);
    unix sockets always get local credentials. `limits` puts a TCP listener behind a
    connection front (atoll.connlimit) that caps connections per source and in total."""

    address: str
    credentials: grpc.ServerCredentials | None = None
    limits: connlimit.ConnLimits | None = None


def listeners(
    listen: str, credentials: grpc.ServerCredentials | None, limits: connlimit.ConnLimits | None = None
) -> list[Listener]:
    return [Listener(address, credentials, limits) for address in split_listen(listen)]


def _resolver(gates: Sequence[connlimit.ConnectionGate]) -> PeerResolver:
    """Maps the peers of calls that came through one of `gates` (filled in later) back."""

    def resolve(peer: str) -> str:
        for gate in gates:
            found = gate.original_peer(peer)
            if found:
                return found
        return peer

    return resolve


def _bind(server: grpc.aio.Server, listener: Listener) -> int:
    address = listener.address
    if address.startswith("unix:"):
        # Only the owner may connect: the socket's mode is its access control.
        with tls.private_files():
            return int(server.add_secure_port(address, tls.local_server_credentials()))
    if listener.credentials is None:
        tls.check_plaintext(address)
        return int(server.add_insecure_port(address))
    return int(server.add_secure_port(address, listener.credentials))


async def start_server(
    listen: str | Sequence[Listener],
    bindings: Sequence[ServiceBinding],
    *,
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
    links: Sequence[CallInterceptor] = (),
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    reuse_port: bool = False,
    handoff: Handoff | None = None,
    options: Sequence[tuple[str, str | int]] = (),
) -> RunningServer:
    """Start a grpc.aio server with health and reflection; port 0 picks a free port.

    `listen` is a list of listeners, or addresses served in plain text (which
    must be loopback). The returned port is the first TCP listener's; `ports`
    has every TCP listener's, in order (a gated one's public port); unix
    sockets report none. A TLS handshake not done in `handshake_timeout` s is dropped.
    `reuse_port`: several servers of this process share the ports (SO_REUSEPORT; the kernel
    spreads connections over them); off, a port in use is an error.
    `handoff`: the server runs on this loop (a LoopThread's), our services' handlers on the
    handoff's loop (atoll.handoff); health and reflection answer here.
    `options`: gRPC server options added to ours (names ours do not set).
    """
    targets = listeners(listen, None) if isinstance(listen, str) else list(listen)
    for target in targets:
        if target.credentials is None and not target.address.startswith("unix:"):
            tls.check_plaintext(target.address)
    gates: list[connlimit.ConnectionGate] = []
    server = grpc.aio.server(
        interceptors=[*interceptors, ReflectionGate(), ErrorInterceptor(links, _resolver(gates), handoff)],
        options=[
            *(o for o in _SERVER_OPTIONS if not (reuse_port and o[0] == "grpc.so_reuseport")),
            *([("grpc.so_reuseport", 1)] if reuse_port else []),
            ("grpc.server_handshake_timeout_ms", int(handshake_timeout * 1000)),
            *options,
        ],
    )
    health_servicer = HealthServicer()  # with List, which the library's lacks
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = []
    for binding in bindings:
        binding.add_to_server(binding.servicer, server)
        names.append(binding.full_name)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    ports = []
    for target in targets:
        gated = target.limits is not None and not target.address.startswith("unix:")
        # A gated listener's gRPC side is private, on loopback; its front takes the address.
        bound = _bind(server, Listener("127.0.0.1:0", target.credentials) if gated else target)
        if bound == 0:
            raise errors.Unavailable(f"cannot listen on {target.address}")
        if gated:
            assert target.limits is not None
            gates.append(connlimit.ConnectionGate(target.address, bound, target.limits))
        if not target.address.startswith("unix:"):
            ports.append(-len(gates) if gated else bound)
    await server.start()
    try:
        fronts = [await gate.start() for gate in gates]
    except OSError as exc:
        await server.stop(0)
        for gate in gates:
            await gate.close()
        raise errors.Unavailable(f"cannot listen: {exc}") from None
    ports = [fronts[-p - 1] if p < 0 else p for p in ports]
    for name in names:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(
        server=server,
        port=ports[0] if ports else 0,
        health=health_servicer,
        service_names=names,
        ports=ports,
        gates=gates,
    )


#: A DNS name in every coordinator's serving certificate: a channel to several coordinators
#: verifies against it (each certificate also carries its own host's names and addresses).
COORDINATOR_NAME = "atoll-coordinator"


def servers(value: str) -> list[str]:
    """`a:6443,b:6443` as its addresses (one or more)."""
    return [s.strip() for s in value.split(",") if s.strip()]


def multi_address_target(value: str, what: str) -> str:
    """``h1:p1,h2:p2`` as one gRPC target with every address (``ipv4:A:P,B:P``), names resolved now."""
    addresses = []
    for address in servers(value):
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise errors.InvalidArgument(f"{what} {address!r}: expected HOST:PORT")
        try:
            ipaddress.ip_address(host)
            found = [host]
        except ValueError:
            found = sorted(
                {str(i[4][0]) for i in socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP)}
            )
        addresses += [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in found]
    scheme = "ipv6" if any(a.startswith("[") for a in addresses) else "ipv4"
    return f"{scheme}:{','.join(addresses)}"


def coordinator_channel(
    value: str, *, credentials: grpc.ChannelCredentials | None = None, keepalive_ms: int = CLIENT_KEEPALIVE_MS
) -> grpc.aio.Channel:
    """A channel to one coordinator, or to the first live one of several (`a:6443,b:6443,c:6443`).

    Several addresses become one gRPC target (`ipv4:A:P,B:P`, names resolved
    now) under pick_first: the channel uses the first that connects and moves
    on when it breaks, so a dead coordinator costs a caller one reconnect.
    The certificates are checked against COORDINATOR_NAME, which each
    coordinator's carries beside its own names.
    """
    if len(servers(value)) <= 1:
        return open_channel(value, credentials=credentials, keepalive_ms=keepalive_ms)
    return open_channel(
        multi_address_target(value, "coordinator address"),
        credentials=credentials,
        server_name=COORDINATOR_NAME if credentials is not None else "",
        keepalive_ms=keepalive_ms,
    )


def open_channel(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str = "",
    keepalive_ms: int = CLIENT_KEEPALIVE_MS,
) -> grpc.aio.Channel:
    """An asyncio channel to `target` (HOST:PORT or unix:///path.sock).

    Without credentials a TCP channel is plain text (for --insecure servers on
    loopback) and a unix socket channel uses local credentials. `server_name`
    is the name the server's certificate must carry when it differs from the
    target's host (agents are reached by IP and named by node name).
    `keepalive_ms`: how often an idle connection is pinged (see CLIENT_KEEPALIVE_MS).
    """
    options = channel_options(keepalive_ms)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    if credentials is None and target.startswith("unix:"):
        credentials = tls.local_channel_credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)


def error_from_rpc(err: grpc.aio.AioRpcError) -> errors.AtollError:
    field_path = errors.field_of_trailers(err.trailing_metadata() or ())
    return errors.from_status(err.code(), err.details() or "", field_path)


def _task_cancelled() -> bool:
    """Whether the running task is being cancelled. grpc.aio also raises CancelledError from a call
    whose channel was closed under it; that one becomes UNAVAILABLE, an ordinary error, so that the
    caller's loop survives (the agent closes the channel to a coordinator it left, streams on it)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


_CLOSED = "the call's channel was closed under it"


async def unary(call: Awaitable[T]) -> T:
    """Await a unary call, raising AtollError instead of AioRpcError."""
    try:
        return await call
    except grpc.aio.AioRpcError as err:
        raise error_from_rpc(err) from None
    except asyncio.CancelledError:
        if _task_cancelled():
            raise
        raise errors.Unavailable(_CLOSED) from None


async def stream(call: AsyncIterator[T]) -> AsyncIterator[T]:
    """Iterate a server stream, raising AtollError instead of AioRpcError."""
    try:
        async for item in call:
            yield item
    except grpc.aio.AioRpcError as err:
        raise error_from_rpc(err) from None
    except asyncio.CancelledError:
        if _task_cancelled():
            raise
        raise errors.Unavailable(_CLOSED) from None
