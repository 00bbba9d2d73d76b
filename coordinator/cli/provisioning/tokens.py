"""Join tokens as the provisioners need them: one per host, revoked when the host goes.

`TokenIssuer` is the narrow interface `provision`/`deprovision` use. Each host
gets its own token (not one shared by the whole batch) so that removing one
server revokes exactly its credential.

`ApiTokenIssuer` is the real one: the coordinator's Token objects, made the
way `coordinator token create` makes them (the secret is generated here and
only its digest is sent; revocation sets spec.revoked) and the CA pin from
GetClusterInfo. `FakeTokenIssuer` keeps tokens in memory and records calls,
for tests that do not run a coordinator.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from atoll import errors, kinds
from atoll.v1 import auth_pb2
from coordinator.auth import tokens as auth_tokens
from coordinator.client.api import Client


@dataclass(frozen=True)
class IssuedToken:
    """A freshly created token. `value` ("<id>.<secret>") is shown once and never logged."""

    id: str
    value: str = field(repr=False)


class TokenIssuer(Protocol):
    async def create(
        self,
        description: str,
        usages: Sequence[str] = ("join",),
        *,
        ttl: float | None = None,
        uses: int = 0,
        node: str = "",
    ) -> IssuedToken:
        """A new token. ``node``: the one node name it joins as (a host's own token);
        ``ttl``: seconds until it expires (None: the server's default);
        ``uses``: how many joins it allows (0: unlimited). Bare metal asks for one use
        and a TTL covering deployment, so a configdrive read later is worth nothing."""
        ...

    async def revoke(self, token_id: str) -> None:
        """Revoke a token; a token that is unknown or already revoked is not an error."""

    async def ca_hash(self) -> str:
        """The pin a joining agent checks the coordinator's CA against ("sha256:<hex>")."""


@dataclass
class FakeTokenIssuer:
    """In-memory issuer with kubeadm-shaped tokens; `revoked` lists revocations in order."""

    ca_pin: str = "sha256:" + hashlib.sha256(b"atoll fake CA").hexdigest()
    active: dict[str, str] = field(default_factory=dict)  # id -> description
    revoked: list[str] = field(default_factory=list)
    limits: dict[str, tuple[float | None, int]] = field(default_factory=dict)  # id -> (ttl, uses)

    async def create(
        self,
        description: str,
        usages: Sequence[str] = ("join",),
        *,
        ttl: float | None = None,
        uses: int = 0,
        node: str = "",
    ) -> IssuedToken:
        token_id = secrets.token_hex(3)
        self.active[token_id] = description
        self.limits[token_id] = (ttl, uses)
        return IssuedToken(token_id, f"{token_id}.{secrets.token_hex(8)}")

    async def revoke(self, token_id: str) -> None:
        if self.active.pop(token_id, None) is not None:
            self.revoked.append(token_id)

    async def ca_hash(self) -> str:
        return self.ca_pin


class ApiTokenIssuer:
    """Join tokens as Token objects through the cluster API (the caller needs the admin role)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._ca_hash = ""

    async def create(
        self,
        description: str,
        usages: Sequence[str] = ("join",),
        *,
        ttl: float | None = None,
        uses: int = 0,
        node: str = "",
    ) -> IssuedToken:
        token_id, secret = auth_tokens.generate()
        token = auth_tokens.new_token(
            token_id,
            secret,
            ttl=ttl or 0,
            uses=uses,
            description=description[:1024],
            usages=tuple(usages),
            node=node,
        )
        await self.client.create(token)
        return IssuedToken(token_id, f"{token_id}.{secret}")

    async def revoke(self, token_id: str) -> None:
        for _ in range(10):
            try:
                token = await self.client.get(kinds.by_name("Token"), "", token_id)
            except errors.NotFound:
                return
            assert isinstance(token, auth_pb2.Token)
            if token.spec.revoked:
                return
            token.spec.revoked = True
            try:
                await self.client.update(token)
                return
            except errors.Conflict:
                continue
        raise errors.Conflict(f"token {token_id} kept changing; revoke it with `coordinator token revoke`")

    async def ca_hash(self) -> str:
        if not self._ca_hash:
            info = await self.client.cluster_info()
            if not info.ca_hash:
                raise errors.FailedPrecondition("the coordinator runs --insecure: hosts cannot join it")
            self._ca_hash = info.ca_hash
        return self._ca_hash
