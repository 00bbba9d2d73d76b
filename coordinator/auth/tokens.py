"""Bearer tokens, kubeadm's bootstrap-token style: "<id>.<secret>", 6 and 16 of [a-z0-9].

A token is a Token object named by its id. Its secret is stored only as a
SHA-256 digest: the secret has about 82 bits of entropy, so a plain digest is
as good as a slow hash, and checking it costs a microsecond. The CLI makes the
secret and sends only the digest; the API never returns even that.

Usages: "join" tokens let a host exchange them for a node certificate
(`Join`), a limited number of times; "authentication" tokens are a user's
credential with a role. A refused token gets a reason that names what is
wrong (unknown or wrong secret, expired, revoked, used up), but only once the
secret has matched: a guesser learns nothing about tokens it does not hold.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import string
import time
from collections.abc import Callable

from google.protobuf.message import Message

from atoll import errors, kinds
from atoll.v1 import auth_pb2
from coordinator.auth.roles import USER_ROLES, Identity
from coordinator.objects.registry import Registry

TOKEN = kinds.by_name("Token")
TOKEN_RE = re.compile(r"([a-z0-9]{6})\.([a-z0-9]{16})\Z")
ID_RE = re.compile(r"[a-z0-9]{6}\Z")
HASH_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")
NODE_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
USAGE_JOIN = "join"
USAGE_AUTH = "authentication"
USAGES = (USAGE_JOIN, USAGE_AUTH)
_ALPHABET = string.ascii_lowercase + string.digits


def generate() -> tuple[str, str]:
    """A new (id, secret)."""
    return (
        "".join(secrets.choice(_ALPHABET) for _ in range(6)),
        "".join(secrets.choice(_ALPHABET) for _ in range(16)),
    )


def hash_secret(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def split(token: str) -> tuple[str, str]:
    match = TOKEN_RE.fullmatch(token.strip())
    if match is None:
        raise errors.Unauthenticated("malformed token: expected <6 of [a-z0-9]>.<16 of [a-z0-9]>")
    return match.group(1), match.group(2)


def new_token(
    token_id: str,
    secret: str,
    *,
    ttl: float,
    uses: int = 0,
    description: str = "",
    usages: tuple[str, ...] = (USAGE_JOIN,),
    user: str = "",
    role: str = "",
    node: str = "",
    clock: Callable[[], float] = time.time,
) -> auth_pb2.Token:
    """The object to create for a token; ttl 0 never expires."""
    token = auth_pb2.Token()
    token.metadata.name = token_id
    token.spec.secret_hash = hash_secret(secret)
    token.spec.description = description
    token.spec.max_uses = uses
    token.spec.usages.extend(usages)
    token.spec.user = user
    token.spec.role = role
    token.spec.node_name = node
    if ttl:
        token.spec.expiration.FromNanoseconds(int((clock() + ttl) * 1e9))
    return token


def validate(token: auth_pb2.Token) -> None:
    spec = token.spec
    if not ID_RE.fullmatch(token.metadata.name):
        raise errors.InvalidArgument("token ids are 6 of [a-z0-9]", field="metadata.name")
    if not HASH_RE.fullmatch(spec.secret_hash):
        raise errors.InvalidArgument("expected sha256:<64 hex digits>", field="spec.secretHash")
    if not spec.usages or any(u not in USAGES for u in spec.usages):
        raise errors.InvalidArgument(f"usages must be some of {', '.join(USAGES)}", field="spec.usages")
    if spec.max_uses < 0:
        raise errors.InvalidArgument("must not be negative", field="spec.maxUses")
    if USAGE_AUTH in spec.usages:
        if spec.role not in USER_ROLES:
            raise errors.InvalidArgument(f"role must be one of {', '.join(USER_ROLES)}", field="spec.role")
        if not spec.user:
            raise errors.InvalidArgument("an authentication token names its user", field="spec.user")
    elif spec.role or spec.user:
        raise errors.InvalidArgument("only authentication tokens carry a user and a role", field="spec.role")
    if spec.node_name:
        if USAGE_JOIN not in spec.usages:
            raise errors.InvalidArgument("only join tokens are bound to a node", field="spec.nodeName")
        if not NODE_NAME_RE.fullmatch(spec.node_name):
            raise errors.InvalidArgument(f"{spec.node_name!r} is not a node name", field="spec.nodeName")
    if len(spec.description) > 1024:
        raise errors.InvalidArgument("at most 1024 characters", field="spec.description")


def prepare_create(obj: Message) -> None:
    assert isinstance(obj, auth_pb2.Token)
    validate(obj)
    obj.ClearField("status")


def prepare_update(new: Message, old: Message) -> None:
    """The secret hash is write-only and fixed: an update may change the description, expiry,
    uses and revocation, never the secret nor the status."""
    assert isinstance(new, auth_pb2.Token) and isinstance(old, auth_pb2.Token)
    new.spec.secret_hash = old.spec.secret_hash
    validate(new)
    new.status.CopyFrom(old.status)
    new.metadata.generation = old.metadata.generation + (1 if new.spec != old.spec else 0)


def redact(token: auth_pb2.Token) -> None:
    token.spec.secret_hash = ""


def refusal(token: auth_pb2.Token, now: float, *, consuming: bool = False) -> errors.AtollError | None:
    """Why a token whose secret matched may not be used now, or None."""
    spec, name = token.spec, token.metadata.name
    if spec.revoked:
        return errors.Unauthenticated(f"token {name} has been revoked")
    if spec.HasField("expiration") and spec.expiration.ToNanoseconds() <= now * 1e9:
        when = spec.expiration.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")
        return errors.Unauthenticated(f"token {name} expired at {when}")
    if consuming and spec.max_uses and token.status.uses >= spec.max_uses:
        return errors.PermissionDenied(
            f"token {name} has been used up ({token.status.uses} of {spec.max_uses} uses)"
        )
    return None


class TokenAuthenticator:
    def __init__(self, registry: Registry, *, clock: Callable[[], float] = time.time) -> None:
        self._registry = registry
        self._clock = clock
        # Spending uses is a compare-and-swap on the token; a fleet joining with one token at
        # once would fight over it until the retries ran out. Joins are rare and each is one
        # write, so this coordinator spends them one at a time (the CAS still guards HA peers).
        self._consuming = asyncio.Lock()

    async def authenticate(self, bearer: str) -> Identity:
        token_id, secret = split(bearer)
        wrong = errors.Unauthenticated(f"unknown token {token_id} or wrong secret")
        try:
            token = await self._registry.get(TOKEN, "", token_id)
        except errors.NotFound:
            raise wrong from None
        assert isinstance(token, auth_pb2.Token)
        if not hmac.compare_digest(token.spec.secret_hash, hash_secret(secret)):
            raise wrong
        join = USAGE_JOIN in token.spec.usages
        problem = refusal(token, self._clock(), consuming=join)
        if problem is not None:
            raise problem
        if USAGE_AUTH in token.spec.usages:
            return Identity(
                user=token.spec.user, role=token.spec.role, via=f"token {token_id}", token=token_id
            )
        return Identity(
            user=f"bootstrap:{token_id}", role="bootstrap", via=f"token {token_id}", token=token_id
        )

    async def consume(self, token_id: str, node: str, *, node_exists: bool = False) -> None:
        """Count one use of a join token for `node`, atomically; refuses when it cannot be used.

        A token bound to a node joins only as that node; a node that already has a Node
        object joins only with a token bound to it (its host was reinstalled), never with a
        general one: a join token is no way to take over a live node's name and its pods.
        """

        def use(obj: Message) -> bool:
            assert isinstance(obj, auth_pb2.Token)
            problem = refusal(obj, self._clock(), consuming=True)
            if problem is not None:
                raise problem
            bound = obj.spec.node_name
            if bound and bound != node:
                raise errors.PermissionDenied(f"token {token_id} is bound to node {bound}, not {node}")
            if node_exists and bound != node:
                raise errors.AlreadyExists(
                    f"node {node} exists: a host joins under its name only with a token bound to it "
                    f"(coordinator token create --node {node}), or after an admin deleted the node"
                )
            obj.status.uses += 1
            if node not in obj.status.joined_nodes:
                obj.status.joined_nodes.append(node)
            return True

        try:
            async with self._consuming:
                await self._registry.guaranteed_update(TOKEN, "", token_id, use)
        except errors.NotFound:
            raise errors.Unauthenticated(f"token {token_id} no longer exists") from None
