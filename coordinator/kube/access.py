"""Who calls the Kubernetes API and what they may do: the gRPC API's rules, applied to HTTP.

The caller is found as on gRPC (AuthInterceptor.identify): a client
certificate the TLS handshake verified against the cluster CA, else a bearer
token, else (--insecure on loopback) anonymous admin. Each REST operation is
the ClusterService call it becomes, so the permission comes from the same
table (roles.required) for the same request message, and accepted writes
and every refusal go to the same audit log under the same method name.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from atoll import callchain, errors
from atoll.limits import Limits
from coordinator.auth import roles
from coordinator.auth.interceptor import AuthInterceptor
from coordinator.auth.roles import Identity, Permission

R = TypeVar("R")

SERVICE = "/atoll.v1.ClusterService/"
_BEARER = "bearer "


@dataclass(frozen=True)
class Caller:
    identity: Identity
    peer: str


def peer_certificate(ssl_object: ssl.SSLObject | None) -> bytes | None:
    """The client certificate the handshake verified, as PEM (None without one)."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return ssl.DER_cert_to_PEM_cert(der).encode() if der else None


def bearer_of(authorization: str) -> str:
    if authorization[: len(_BEARER)].lower() == _BEARER:
        return authorization[len(_BEARER) :].strip()
    return ""


class Access:
    def __init__(self, interceptor: AuthInterceptor, limits: Limits | None = None) -> None:
        self._interceptor = interceptor
        self._limits = limits  # the gRPC server's per-client rate and stream limits, shared

    async def authenticate(self, ssl_object: ssl.SSLObject | None, authorization: str, peer: str) -> Caller:
        transport = "ssl" if ssl_object is not None else "insecure"
        try:
            identity = await self._interceptor.identify(
                peer_certificate(ssl_object), bearer_of(authorization), transport
            )
        except errors.AtollError as err:
            self._interceptor.record("kube:authenticate", (None, None, peer), err.code, str(err))
            raise
        return Caller(identity, peer)

    def _authorize(self, caller: Caller, full: str, request: Message) -> Permission:
        """The permission `full` needs, if the caller has it (a refusal is audited); the caller
        becomes the current one for the role checks and rate limits below."""
        permission = None
        try:
            permission = roles.required(full, request)
            roles.authorize(caller.identity, permission)
        except errors.AtollError as err:
            self._interceptor.record(full, (caller.identity, permission, caller.peer), err.code, str(err))
            raise
        roles.CURRENT.set(caller.identity)
        callchain.CALLER.set(caller.identity.user)
        return permission

    async def call(
        self,
        caller: Caller,
        method: str,
        request: Message,
        handler: Callable[[Any, Any], Awaitable[R]],
    ) -> R:
        """`handler(request, None)` (a ClusterServicer method) if the caller may make this call."""
        full = SERVICE + method
        permission = self._authorize(caller, full, request)
        if self._limits is not None:
            await self._limits.admit(full, request, None)  # keys on callchain.CALLER, set above
        started = time.monotonic()
        ticket = (caller.identity, permission, caller.peer)
        try:
            result = await handler(request, None)
        except errors.AtollError as err:
            if full in roles.MUTATING:
                self._interceptor.record(full, ticket, err.code, str(err), time.monotonic() - started)
            raise
        if full in roles.MUTATING:
            self._interceptor.record(full, ticket, grpc.StatusCode.OK, took=time.monotonic() - started)
        return result

    async def open_stream(self, caller: Caller, method: str, request: Message) -> object:
        """For streaming calls (Watch, GetLogs): checked once, before the stream starts; the
        ticket returned goes to `close_stream` when it ends (it holds one of the caller's streams)."""
        full = SERVICE + method
        self._authorize(caller, full, request)
        if self._limits is None:
            return None
        return await self._limits.admit(full, request, None)

    def close_stream(self, method: str, ticket: object) -> None:
        if self._limits is not None:
            self._limits.finish(SERVICE + method, ticket, grpc.StatusCode.OK)
