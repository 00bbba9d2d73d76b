"""The Token kind: join tokens and users' bearer tokens, as `coordinator token list` shows them.

    apiVersion: v1
    kind: Token
    metadata: {name: abcdef}            # the token id
    spec:
      description: rack 12
      expiration: "2026-11-26T10:00:00Z"
      maxUses: 3
      usages: [join]                    # or [authentication], with user and role
      revoked: false
    status: {uses: 1, joinedNodes: [node-7]}

The secret's digest (spec.secretHash) is never shown: the API redacts it, and a
manifest may carry one only to create a token whose secret was made elsewhere.
"""

from __future__ import annotations

from typing import Any

from atoll import errors, validation
from atoll.v1 import auth_pb2
from coordinator.manifests import meta
from coordinator.manifests.reader import Schema, Value
from coordinator.manifests.registry import Codec, Shape

TOKEN = Schema.of(known=("apiVersion", "kind", "metadata", "spec", "status"))
TOKEN_SPEC = Schema.of(
    known=("description", "expiration", "maxUses", "secretHash", "revoked", "usages", "user", "role")
)
TOKEN_STATUS = Schema.of(known=("uses", "joinedNodes"))


def decode_v1(root: Value) -> auth_pb2.Token:
    f = root.fields(TOKEN)
    token = auth_pb2.Token(metadata=meta.decode(f.get("metadata")), spec=auth_pb2.TokenSpec())
    sf = f.child_fields("spec", TOKEN_SPEC)
    spec = token.spec
    for key, attr in (
        ("description", "description"),
        ("secretHash", "secret_hash"),
        ("user", "user"),
        ("role", "role"),
    ):
        if v := sf.get(key):
            setattr(spec, attr, v.string())
    if v := sf.get("expiration"):
        spec.expiration.CopyFrom(v.timestamp())
    if v := sf.get("maxUses"):
        spec.max_uses = v.integer()
    if v := sf.get("revoked"):
        spec.revoked = v.boolean()
    if v := sf.get("usages"):
        spec.usages.extend(v.strings())
    st = f.child_fields("status", TOKEN_STATUS)
    if v := st.get("uses"):
        token.status.uses = v.integer()
    if v := st.get("joinedNodes"):
        token.status.joined_nodes.extend(v.strings())
    return token


def encode(token: auth_pb2.Token) -> dict[str, Any]:
    s = token.spec
    spec: dict[str, Any] = {}
    if s.description:
        spec["description"] = s.description
    if s.HasField("expiration"):
        spec["expiration"] = meta.encode_time(s.expiration)
    if s.max_uses:
        spec["maxUses"] = s.max_uses
    spec["usages"] = list(s.usages)
    if s.user:
        spec["user"], spec["role"] = s.user, s.role
    if s.revoked:
        spec["revoked"] = True
    out: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Token",
        "metadata": meta.encode(token.metadata),
        "spec": spec,
    }
    if token.status.uses or token.status.joined_nodes:
        out["status"] = {"uses": token.status.uses, "joinedNodes": list(token.status.joined_nodes)}
    return out


def validate(token: auth_pb2.Token) -> validation.Problems:
    from coordinator.auth import tokens

    problems = validation.Problems()
    try:
        tokens.validate(token)
    except errors.InvalidArgument as exc:
        problems.add(exc.field, exc.message)
    return problems


CODEC = Codec(
    kind="Token",
    message=auth_pb2.Token,
    shapes={"v1": Shape(decode_v1)},
    encode=encode,
    validate=validate,
)
