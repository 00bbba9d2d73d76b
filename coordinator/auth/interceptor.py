"""Authentication and authorization of every coordinator call, in one link of the call chain (atoll.callchain).

Who calls, first match wins:
  1. a client certificate the TLS handshake verified against the cluster CA
     (gRPC checked the chain; its expiry is checked again at every call,
     since a connection outlives the handshake): the CN is the user and the
     organisation the role (roles.GROUP_ROLES), nodes are "atoll:nodes";
  2. a bearer token ("authorization: Bearer <id>.<secret>"): a user's token
     with its role, or a join token that may only call Join;
  3. a unix socket peer: admin. The socket is created mode 0600, so only the
     coordinator's own user (root) can connect, as with Docker's socket;
  4. with --insecure (plain text, loopback only): anonymous admin.
Nothing matched: UNAUTHENTICATED. Then roles.authorize() decides, or
PERMISSION_DENIED. Refusals and accepted state changes go to the audit log.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import grpc

from atoll import callchain, errors, tls
from coordinator.auth import roles
from coordinator.auth.audit import AuditLog
from coordinator.auth.revocation import RevocationList
from coordinator.auth.roles import Identity, Permission
from coordinator.auth.tokens import TokenAuthenticator

_BEARER = "bearer "


class AuthInterceptor(callchain.CallInterceptor):
    def __init__(
        self,
        tokens: TokenAuthenticator,
        audit: AuditLog,
        *,
        insecure: bool = False,
        revoked: RevocationList | None = None,
    ) -> None:
        self._revoked = revoked
        self._tokens = tokens
        self._audit = audit
        self._insecure = insecure
        # A client certificate's identity, when it expires (epoch seconds) and as a date: read
        # once per certificate. A node's status stream is authenticated once per message.
        self._certificates: dict[bytes, tuple[Identity, float, datetime.datetime]] = {}

    async def authenticate(self, context: grpc.aio.ServicerContext) -> Identity:
        peer = tls.peer_of(context)
        return await self.identify(
            peer.cert_pem if peer.verified_cert else None, _bearer(context), peer.transport
        )

    async def identify(self, cert_pem: bytes | None, bearer: str, transport: str) -> Identity:
        """Who calls, from what the transport verified: also used by the Kubernetes API (coordinator.kube)."""
        if cert_pem is not None:
            known = self._certificates.get(cert_pem)
            if known is None:
                if len(self._certificates) >= _CERTIFICATES_KEPT:
                    self._certificates.clear()  # bounded memory; the ones in use are read again
                known = self._certificates[cert_pem] = _certificate_identity(cert_pem)
            identity, expires, not_after = known
            if time.time() >= expires:  # every call: a connection outlives its certificate
                raise errors.Unauthenticated(
                    f"client certificate of {identity.user} expired at {not_after:%Y-%m-%dT%H:%M:%SZ}"
                )
            if self._revoked is not None and self._revoked.is_revoked(cert_pem):
                raise errors.Unauthenticated(
                    f"the certificate of {identity.user} was revoked (its node was deleted)"
                )
            return identity
        if bearer:
            return await self._tokens.authenticate(bearer)
        if transport == "local":
            return Identity(user="unix-socket", role="admin", via="unix socket")
        if transport == "insecure" and self._insecure:
            return Identity(user="anonymous", role="admin", via="insecure")
        raise errors.Unauthenticated(
            "no credentials: present a client certificate signed by the cluster CA (mutual TLS) "
            "or a bearer token (coordinator config create-user)"
        )

    async def admit(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.monotonic()
        identity: Identity | None = None
        permission: Permission | None = None
        try:
            permission = roles.required(method, request)
            identity = await self.authenticate(context)
            roles.authorize(identity, permission)
        except errors.AtollError as err:
            self.record(method, (identity, permission, callchain.peer_address(context)), err.code, str(err))
            raise
        roles.CURRENT.set(identity)
        callchain.CALLER.set(identity.user)
        return (identity, permission, callchain.peer_address(context), started)

    def finish(self, method: str, ticket: Any, code: grpc.StatusCode) -> None:
        if method not in roles.MUTATING or ticket is None:
            return
        identity, permission, peer, started = ticket
        self.record(method, (identity, permission, peer), code, took=time.monotonic() - started)

    def record(
        self,
        method: str,
        ticket: tuple[Identity | None, Permission | None, str],
        code: grpc.StatusCode,
        reason: str = "",
        took: float | None = None,
    ) -> None:
        """One audit entry; callers outside gRPC (the Kubernetes API) write to the same log."""
        identity, permission, peer = ticket
        entry: dict[str, Any] = {
            "user": identity.user if identity else "",
            "role": identity.role if identity else "",
            "auth": identity.via if identity else "",
            "peer": peer,
            "method": method,
        }
        if permission is not None:
            entry.update(verb=permission.verb, resource=permission.resource)
            if permission.namespace:
                entry["namespace"] = permission.namespace
            if permission.name:
                entry["name"] = permission.name
        entry["result"] = code.name
        if reason:
            entry["reason"] = reason
        if took is not None:
            entry["seconds"] = round(took, 4)
        self._audit.record(**entry)


_CERTIFICATES_KEPT = 10_000


def _certificate_identity(cert_pem: bytes) -> tuple[Identity, float, datetime.datetime]:
    cn, orgs, lifetime = tls.describe_cert(cert_pem)
    role = next((roles.GROUP_ROLES[o] for o in orgs if o in roles.GROUP_ROLES), "")
    identity = Identity(user=cn, role=role, via="certificate", node=cn if role == "node" else "")
    return identity, lifetime.not_after.timestamp(), lifetime.not_after


def _bearer(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value[: len(_BEARER)].lower() == _BEARER:
            return value[len(_BEARER) :].strip()
    return ""
