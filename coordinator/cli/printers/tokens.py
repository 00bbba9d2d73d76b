"""The Token table: never a secret (the API does not return even its digest)."""

from __future__ import annotations

import time

from atoll.v1 import auth_pb2
from coordinator.cli.printers.common import timestamp

TOKEN_HEADERS = ["ID", "USAGES", "FOR", "USES", "EXPIRES", "STATE"]
TOKEN_WIDE = ["JOINED NODES", "DESCRIPTION"]


def token_state(t: auth_pb2.Token, now: float | None = None) -> str:
    if t.spec.revoked:
        return "revoked"
    if t.spec.HasField("expiration") and t.spec.expiration.seconds <= (now or time.time()):
        return "expired"
    if "join" in t.spec.usages and t.spec.max_uses and t.status.uses >= t.spec.max_uses:
        return "used up"
    return "valid"


def token_row(t: auth_pb2.Token, wide: bool) -> list[str]:
    spec = t.spec
    who = f"{spec.user} ({spec.role})" if spec.user else "<join>"
    uses = f"{t.status.uses}/{spec.max_uses}" if spec.max_uses else str(t.status.uses)
    expires = timestamp(spec.expiration) if spec.HasField("expiration") else "<never>"
    row = [t.metadata.name, ",".join(spec.usages), who, uses, expires, token_state(t)]
    if wide:
        row += [",".join(t.status.joined_nodes) or "<none>", spec.description]
    return row
