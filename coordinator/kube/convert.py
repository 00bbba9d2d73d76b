"""Kubernetes v1 JSON <-> atoll.v1 messages, through the manifest codecs the CLI uses.

A body is decoded and validated exactly as `coordinator create -f` decodes a
file; what comes back is what `coordinator get -o json` prints. The
request's path decides the kind and the namespace; a body that says
otherwise is refused, as the Kubernetes API server refuses it.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from atoll import errors, kinds
from coordinator import manifests
from coordinator.kube.resources import Resource

# Kinds whose answers carry live facts beside the stored object (a node's last heartbeat, a
# quota's usage): the same resourceVersion may read differently, so they are never cached.
_LIVE = frozenset({"Node", "ResourceQuota"})
CACHE_SIZE = 50_000


class EncodeCache:
    """The v1 JSON of objects by kind, namespace, name and resourceVersion.

    An object at one resourceVersion never changes, so its encoding (the costly
    part of a list: about 150 us a pod) is made once, like the API server's
    serialization cache; lists and watches of the same objects reuse it. The
    dicts handed out are shared: callers must not change them (patch copies).
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._entries: dict[tuple[str, str, str, int], dict[str, Any]] = {}

    def to_json(self, message: Message) -> dict[str, Any]:
        meta = message.metadata  # type: ignore[attr-defined]
        kind = type(message).__name__
        if kind in _LIVE or not meta.resource_version:
            return manifests.to_dict(message)
        key = (kind, meta.namespace, meta.name, meta.resource_version)
        found = self._entries.get(key)
        if found is None:
            if len(self._entries) >= self._size:
                # Drop the oldest half (insertion order): cheap, and recent objects stay.
                for old in list(self._entries)[: self._size // 2]:
                    del self._entries[old]
            found = self._entries[key] = manifests.to_dict(message)
        return found


def to_json(message: Message) -> dict[str, Any]:
    return manifests.to_dict(message)


def list_json(
    resource: Resource, items: list[dict[str, Any]], revision: int, token: str = ""
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"resourceVersion": str(revision)}
    if token:
        metadata["continue"] = token
    return {"kind": f"{resource.kind}List", "apiVersion": "v1", "metadata": metadata, "items": items}


def from_json(resource: Resource, namespace: str, body: Any, *, name: str = "") -> Message:
    """The message a create or update body describes, in the path's namespace (and `name`, for PUT)."""
    if not isinstance(body, dict):
        raise errors.InvalidArgument("the body must be a JSON object", field="body")
    body = dict(body)
    kind = body.setdefault("kind", resource.kind)
    body.setdefault("apiVersion", "v1")
    if kind != resource.kind:
        raise errors.FailedPrecondition(
            f"the body is a {kind} but the request is about {resource.plural} (kind {resource.kind})"
        )
    if body.get("apiVersion") != "v1":
        raise errors.FailedPrecondition(f"expected apiVersion v1, got {body.get('apiVersion')!r}")
    meta = body.get("metadata")
    if not isinstance(meta, dict):
        raise errors.InvalidArgument("is required", field="metadata")
    meta = body["metadata"] = dict(meta)
    if resource.namespaced:
        given = meta.get("namespace") or ""
        if given and namespace and given != namespace:
            raise errors.FailedPrecondition(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        meta["namespace"] = given or namespace or "default"
    if name and meta.get("name") != name:
        raise errors.FailedPrecondition(
            f"the name of the object ({meta.get('name')!r}) does not match the name on the URL ({name!r})"
        )
    # What the server owns: never read from a body.
    for owned in ("managedFields", "selfLink"):
        meta.pop(owned, None)
    try:
        messages = manifests.load_data(body, f"{resource.plural} body")
    except manifests.ManifestError as exc:
        invalid = errors.InvalidArgument(exc.message, field=exc.field_path)
        invalid.object_name = str(meta.get("name") or "")  # type: ignore[attr-defined]  # for the Status
        raise invalid from None
    if len(messages) != 1 or kinds.of(messages[0]) != resource.info:
        raise errors.InvalidArgument(f"expected one {resource.kind}", field="kind")
    return messages[0]
