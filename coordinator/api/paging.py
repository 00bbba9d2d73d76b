"""Paged lists, like Kubernetes' `limit` and `continue`.

A page holds at most `limit` items and never more than about PAGE_BYTES of
objects, so that no list fails for its size in any client: gRPC clients in Go,
Java, C++ and Node refuse messages over 4 MiB unless told otherwise, and with
objects capped at --max-object-bytes (at most 2 MiB) a page of PAGE_BYTES stays
under it. A list without a limit that fits comes back whole, as before; one
that does not fit is cut and carries a continue token (clients that ignore it
saw a failure before, now a first page).

The token is opaque to clients: base64 of the snapshot revision and the last
key sent. Later pages read the same snapshot (the store rolls its history back
to that revision), so the pages of one list are consistent; once the revision
is compacted the token expires with OUT_OF_RANGE and the client lists again.
"""

from __future__ import annotations

import base64
import binascii
import json

from atoll import errors, labels, rpc
from atoll.kinds import KindInfo
from coordinator.objects.registry import Page, Registry, prefix_for

# The message size every gRPC client accepts by default (grpc-go, grpc-java, grpc-js).
CLIENT_DEFAULT_MAX_BYTES = 4 * 1024 * 1024
# Objects per page by size: 3/4 of it leaves room for the wrapping of each item.
PAGE_BYTES = CLIENT_DEFAULT_MAX_BYTES * 3 // 4
# For callers in the coordinator's process (the Kubernetes API, which encodes JSON itself):
# a list without a limit comes whole there, as Kubernetes' does, up to what a reply may hold.
IN_PROCESS_PAGE_BYTES = rpc.MAX_RESPONSE_BYTES // 2


def encode_token(page: Page) -> str:
    if not page.last_key:
        return ""
    raw = json.dumps({"rv": page.revision, "start": page.last_key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_token(token: str, prefix: str) -> tuple[int, str]:
    """The snapshot revision and the key to continue after; INVALID_ARGUMENT for anything else."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        revision, key = data["rv"], data["start"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise errors.InvalidArgument("not a continue token of this API", field="continue_token") from None
    if (
        not isinstance(revision, int)
        or isinstance(revision, bool)
        or revision < 1
        or not isinstance(key, str)
        or not key.startswith(prefix)
    ):
        raise errors.InvalidArgument(
            "the continue token belongs to another list (kind or namespace)", field="continue_token"
        )
    try:
        key.encode()  # the store takes it as the start of its read (etcd: as bytes)
    except UnicodeEncodeError:
        raise errors.InvalidArgument("not a continue token of this API", field="continue_token") from None
    return revision, key


async def list_page(
    registry: Registry,
    info: KindInfo,
    namespace: str,
    selector: labels.Selector | None,
    *,
    limit: int = 0,
    token: str = "",
    max_bytes: int = 0,
) -> Page:
    if limit < 0:
        raise errors.InvalidArgument(f"must not be negative, got {limit}", field="limit")
    revision, after = decode_token(token, prefix_for(info, namespace)) if token else (0, "")
    try:
        return await registry.list_page(
            info,
            namespace,
            selector,
            revision=revision,
            after=after,
            limit=limit,
            max_bytes=max_bytes or PAGE_BYTES,
        )
    except errors.Gone:
        if not token:
            raise
        raise errors.Gone(
            f"the continue token expired (revision {revision} was compacted); list again from the start"
        ) from None
