"""A server's call chain: how each call to an Atoll service is parsed, admitted and answered.

`atoll.rpc.start_server` puts `ErrorInterceptor` last among a server's grpc
interceptors. It parses each request (garbage is INVALID_ARGUMENT, not
INTERNAL), runs the call links (`CallInterceptor`) in order before the
servicer, and maps what they raise: AtollError to its status (a field path as
google.rpc.BadRequest details in the grpc-status-details-bin trailer), any
other exception to INTERNAL, logged here and never sent to the client. The
coordinator's first link authenticates and authorizes (coordinator.auth); a
per-client rate limiter belongs right after it, where `caller_name()` says who
calls. With a Handoff, the links and the servicer run on the loop that owns
the state (atoll.handoff), the parsing on the server's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from atoll import errors
from atoll.handoff import CallFacts, Handoff

log = logging.getLogger(__name__)

# Only our own services are wrapped; health and reflection manage their own statuses.
_OWN_SERVICE_PREFIX = "/atoll."


def _abort_args(err: errors.AtollError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    # The field path travels as standard google.rpc.BadRequest details (errors.field_trailers).
    return err.code, str(err), errors.field_trailers(err)


Deserializer = Callable[[bytes], Any] | None


def _decode(deserialize: Deserializer, raw: Any, method: str) -> Any:
    """Requests arrive as bytes and are parsed here, so that garbage is INVALID_ARGUMENT, not INTERNAL."""
    if deserialize is None:
        return raw
    try:
        return deserialize(raw)
    except Exception as exc:  # protobuf raises DecodeError, and others for some corruptions
        raise errors.InvalidArgument(f"cannot parse the {method.rsplit('/', 1)[-1]} request: {exc}") from None


class CallInterceptor:
    """A link of the chain inside the error layer: it sees every call to an Atoll service once
    its request is parsed, before the servicer runs, and learns the call's outcome.

    `admit` raises AtollError to refuse the call with that status; what it
    returns comes back to `finish` with the call's status code. Links run in
    order; a refused call reaches neither the links after it nor the servicer.
    """

    async def admit(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return None

    def finish(self, method: str, ticket: Any, code: grpc.StatusCode) -> None:
        return None

    def open_stream(self, method: str, context: grpc.aio.ServicerContext) -> Any:
        """A stream of calls (calls_on_stream) is open: its first request passed every link's
        `admit`, and this runs right after, where that ran (who calls is known). Raises
        AtollError to end the stream with that status; what it returns comes back to
        `close_stream` when the stream ends."""
        return None

    def close_stream(self, method: str, ticket: Any) -> None:
        return None


def _code_of(context: grpc.aio.ServicerContext) -> grpc.StatusCode | None:
    try:
        code = context.code()
    except Exception:  # not every grpc version keeps it readable
        return None
    return code if isinstance(code, grpc.StatusCode) else None


class _Call:
    """One call's passage through the links: admitted ones are told how it ended."""

    def __init__(self, method: str, links: Sequence[CallInterceptor]) -> None:
        self.method = method
        self.links = links
        self.admitted: list[tuple[CallInterceptor, Any]] = []
        self.code = grpc.StatusCode.OK

    async def admit(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        for link in self.links:
            self.admitted.append((link, await link.admit(self.method, request, context)))

    def failed(self, exc: BaseException, context: grpc.aio.ServicerContext) -> None:
        if isinstance(exc, errors.AtollError):
            self.code = exc.code
        elif isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            self.code = grpc.StatusCode.CANCELLED
        elif isinstance(exc, grpc.aio.AbortError):
            self.code = _code_of(context) or grpc.StatusCode.UNKNOWN
        else:
            self.code = grpc.StatusCode.INTERNAL

    def finish(self) -> None:
        for link, ticket in self.admitted:
            try:
                link.finish(self.method, ticket, self.code)
            except Exception:
                log.exception("%s failed after %s", type(link).__name__, self.method)


PeerResolver = Callable[[str], str]


def _same_peer(peer: str) -> str:
    return peer


def _internal(method: str) -> str:
    return f"internal error in {method}; see the server log"


def _unexpected(call: _Call, exc: Exception, context: Any) -> errors.Internal:
    """A servicer's bug: logged here with its traceback, answered INTERNAL without its text."""
    call.failed(exc, context)
    log.error("unexpected error in %s", call.method, exc_info=exc)
    return errors.Internal(_internal(call.method))


async def _serve_unary(
    fn: Callable[..., Awaitable[Any]],
    method: str,
    parsed: Any,
    context: Any,
    *,
    links: Sequence[CallInterceptor],
    peer: str,
    admitted: Callable[[], None] | None = None,
) -> Any:
    """The call links and the servicer, where handlers run (this loop, or a Handoff's);
    `admitted` runs once the links let the call through, before the servicer."""
    call = _Call(method, links)
    PEER.set(peer)
    try:
        await call.admit(parsed, context)
        if admitted is not None:
            admitted()
        return await fn(parsed, context)
    except (errors.AtollError, asyncio.CancelledError, grpc.aio.AbortError) as exc:
        call.failed(exc, context)
        raise
    except Exception as exc:
        raise _unexpected(call, exc, context) from None
    finally:
        call.finish()


async def _serve_stream(
    fn: Callable[..., AsyncIterator[Any]],
    method: str,
    parsed: Any,
    context: Any,
    *,
    links: Sequence[CallInterceptor],
    peer: str,
) -> AsyncGenerator[Any, None]:
    call = _Call(method, links)
    PEER.set(peer)
    try:
        await call.admit(parsed, context)
        async for item in fn(parsed, context):
            yield item
    except (errors.AtollError, asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit) as exc:
        call.failed(exc, context)
        raise
    except Exception as exc:
        raise _unexpected(call, exc, context) from None
    finally:
        call.finish()


def _wrap_unary(
    fn: Callable[..., Awaitable[Any]],
    method: str,
    deserialize: Deserializer = None,
    links: Sequence[CallInterceptor] = (),
    resolve_peer: PeerResolver = _same_peer,
    *,
    handoff: Handoff | None = None,
) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            parsed = _decode(deserialize, request, method)
            peer = resolve_peer(context.peer() or "")
            if handoff is None:
                return await _serve_unary(fn, method, parsed, context, links=links, peer=peer)
            return await handoff.run(
                _serve_unary(fn, method, parsed, CallFacts(context), links=links, peer=peer)
            )
        except errors.AtollError as err:
            await context.abort(*_abort_args(err))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            log.exception("unexpected error in %s", method)  # around the handler, not in it
            await context.abort(grpc.StatusCode.INTERNAL, _internal(method))

    return wrapper


def _wrap_stream(
    fn: Callable[..., AsyncIterator[Any]],
    method: str,
    deserialize: Deserializer = None,
    links: Sequence[CallInterceptor] = (),
    resolve_peer: PeerResolver = _same_peer,
    *,
    handoff: Handoff | None = None,
) -> Callable[..., AsyncIterator[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            parsed = _decode(deserialize, request, method)
            peer = resolve_peer(context.peer() or "")
            if handoff is None:
                source = _serve_stream(fn, method, parsed, context, links=links, peer=peer)
            else:
                source = handoff.stream(
                    _serve_stream(fn, method, parsed, CallFacts(context), links=links, peer=peer)
                )
            async with contextlib.aclosing(source) as items:
                async for item in items:
                    yield item
        except errors.AtollError as err:
            await context.abort(*_abort_args(err))
        except (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit):
            raise
        except Exception:
            log.exception("unexpected error in %s", method)  # around the handler, not in it
            await context.abort(grpc.StatusCode.INTERNAL, _internal(method))

    return wrapper


Answer = Callable[[Any], Any]
Refuse = Callable[[errors.AtollError], Any]
_EACH_CALL = "__atoll_each_call__"


def calls_on_stream(answer: Answer, refuse: Refuse) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
    """Serves a bidirectional stream as a sequence of unary calls: the decorated servicer method
    takes one request message and returns its result, as a unary handler does; `answer(result)`
    or `refuse(error)` becomes the stream's reply to that request, in order, one per request.

    Behind `ErrorInterceptor` each request goes through the call links on its own, as a call
    would (a connection outlives the handshake: expiry, revocation and authorization are
    checked again for every message; a per-caller limit counts messages), then through the
    servicer on the Handoff's loop. The stream as a whole is opened with the links
    (`open_stream`: the stream caps count it) by the first request they admit, and closed
    with them when it ends. A request refused, garbage included, is answered and the stream
    goes on; UNAUTHENTICATED and PERMISSION_DENIED (who calls does not change within a
    stream) and a link's refusal to hold the stream open end it with that status.

    What this saves against a unary call each is gRPC's own work per call: a message on an
    open stream cost a bare grpc.aio server 0.04 ms of CPU, a unary call 0.13-0.14 ms (10,000
    of each, 2-core machine)."""

    def mark(fn: Callable[..., Awaitable[Any]]) -> Any:
        async def serve(self: Any, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            # Without our interceptor (a bare grpc server in a test): the same replies, no links.
            async for request in requests:
                try:
                    result = await fn(self, request, context)
                except errors.AtollError as err:
                    yield refuse(err)
                    continue
                yield answer(result)

        setattr(serve, _EACH_CALL, (fn, answer, refuse))
        serve.__name__ = fn.__name__
        serve.__doc__ = fn.__doc__
        return serve

    return mark


def _calls_of(handler_fn: Any) -> tuple[Callable[..., Awaitable[Any]], Answer, Refuse] | None:
    """(the per-request method bound to its servicer, answer, refuse) of a handler marked by
    calls_on_stream, else None."""
    marked = getattr(handler_fn, _EACH_CALL, None)
    if marked is None:
        return None
    fn, answer, refuse = marked
    owner = getattr(handler_fn, "__self__", None)
    bound = fn if owner is None else functools.partial(fn, owner)
    return bound, answer, refuse


def _wrap_calls(
    fn: Callable[..., Awaitable[Any]],
    method: str,
    deserialize: Deserializer = None,
    links: Sequence[CallInterceptor] = (),
    resolve_peer: PeerResolver = _same_peer,
    *,
    answer: Answer,
    refuse: Refuse,
    handoff: Handoff | None = None,
) -> Callable[..., AsyncIterator[Any]]:
    async def wrapper(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        peer = resolve_peer(context.peer() or "")
        facts: Any = context if handoff is None else CallFacts(context)
        stream = _OpenStream(method, links, facts)
        try:
            async for raw in requests:
                try:
                    parsed = _decode(deserialize, raw, method)
                    serve = _serve_unary(
                        fn, method, parsed, facts, links=links, peer=peer, admitted=stream.admitted
                    )
                    result = await (serve if handoff is None else handoff.run(serve))
                except (errors.Unauthenticated, errors.PermissionDenied) as err:
                    # Who calls does not change within a stream (a certificate that expired or was
                    # revoked meanwhile included): the stream ends as a refused call would.
                    await context.abort(*_abort_args(err))
                except errors.AtollError as err:
                    if stream.refused is not None:  # a link would not hold the stream open
                        await context.abort(*_abort_args(stream.refused))
                    reply = refuse(err)
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception:
                    log.exception("unexpected error in %s", method)  # around the handler, not in it
                    await context.abort(grpc.StatusCode.INTERNAL, _internal(method))
                else:
                    reply = answer(result)
                yield reply
        finally:
            # Where the links run: after any request of this stream still on its way there.
            if handoff is None:
                stream.close()
            else:
                handoff.post(stream.close)

    return wrapper


class _OpenStream:
    """The links' view of a stream of calls as a whole: opened (`open_stream`) by the first
    request they admit, closed once when the stream ends. Used where the links run."""

    def __init__(self, method: str, links: Sequence[CallInterceptor], context: Any) -> None:
        self.method = method
        self.links = links
        self.context = context
        self.opened: list[tuple[CallInterceptor, Any]] | None = None
        self.refused: errors.AtollError | None = None
        self.closed = False

    def admitted(self) -> None:
        if self.opened is not None or self.closed:
            return
        self.opened = []
        for link in self.links:
            try:
                self.opened.append((link, link.open_stream(self.method, self.context)))
            except errors.AtollError as err:
                self.refused = err
                raise

    def close(self) -> None:
        self.closed = True
        for link, ticket in self.opened or ():
            try:
                link.close_stream(self.method, ticket)
            except Exception:
                log.exception("%s failed closing a %s stream", type(link).__name__, self.method)
        self.opened = []


# Who the current call is from, as the authenticating link established it.
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("atoll_caller", default="")
# The current call's client address, seen through a connection front (atoll.connlimit).
PEER: contextvars.ContextVar[str] = contextvars.ContextVar("atoll_peer", default="")


def peer_address(context: grpc.aio.ServicerContext) -> str:
    """The current call's client address in gRPC's spelling (ipv4:HOST:PORT), also when it came
    through a connection front, where gRPC itself sees the front's loopback address."""
    return PEER.get() or context.peer() or ""


def caller_name(context: grpc.aio.ServicerContext) -> str:
    """The authenticated caller of the current call, else its peer address without the port.
    (For links after authentication, such as a per-client rate limiter.)"""
    who = CALLER.get()
    if who:
        return who
    peer = peer_address(context) or "unknown"
    return peer.rsplit(":", 1)[0] if peer.startswith(("ipv4:", "ipv6:")) else peer


@dataclass(frozen=True, slots=True)
class Encoded:
    """A response already serialised, sent as these bytes: a streamed one built once for every
    stream that needs it (the same service state to every node), or a reply joined from bytes
    already at hand (a list of objects' kept encodings)."""

    data: bytes


def _passing_encoded(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    if serializer is None:
        return None

    def serialize(message: Any) -> bytes:
        return message.data if isinstance(message, Encoded) else serializer(message)

    return serialize


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Parses requests, runs the call links, maps AtollError to statuses for every Atoll service."""

    def __init__(
        self,
        links: Sequence[CallInterceptor] = (),
        resolve_peer: PeerResolver = _same_peer,
        handoff: Handoff | None = None,
    ) -> None:
        self.links = tuple(links)
        self.resolve_peer = resolve_peer
        self.handoff = handoff  # None: handlers run on the server's own loop

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
                _wrap_unary(
                    handler.unary_unary,
                    method,
                    handler.request_deserializer,
                    self.links,
                    self.resolve_peer,
                    handoff=self.handoff,
                ),
                request_deserializer=None,
                response_serializer=_passing_encoded(handler.response_serializer),
            )
        calls = _calls_of(handler.stream_stream) if handler.stream_stream is not None else None
        if calls is not None:
            each, answer, refuse = calls
            return grpc.stream_stream_rpc_method_handler(
                _wrap_calls(
                    each,
                    method,
                    handler.request_deserializer,
                    self.links,
                    self.resolve_peer,
                    answer=answer,
                    refuse=refuse,
                    handoff=self.handoff,
                ),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(
                    handler.unary_stream,
                    method,
                    handler.request_deserializer,
                    self.links,
                    self.resolve_peer,
                    handoff=self.handoff,
                ),
                request_deserializer=None,
                response_serializer=_passing_encoded(handler.response_serializer),
            )
        return handler
