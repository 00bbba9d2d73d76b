"""ObjectMeta in both manifest shapes, object references, and timestamps.

Kubernetes v1 nests identity under ``metadata``; v1beta1 flattened it into
the object (``id``, ``labels``, ``namespace`` next to ``kind``). Both decode
to the same ObjectMeta. System-written fields (uid, resourceVersion,
creationTimestamp) are decoded too, so that ``get -o yaml`` output can be
edited and fed back; the server decides what to keep.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2

from atoll.v1 import meta_pb2, workloads_pb2
from coordinator.manifests.reader import Fields, Schema, Value

METADATA = Schema.of(
    known=(
        "name",
        "namespace",
        "uid",
        "labels",
        "annotations",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "ownerReferences",
    ),
    unsupported={
        "generateName": "give the object a name",
        "finalizers": "",
    },
    ignored=("selfLink", "managedFields", "deletionGracePeriodSeconds"),
)

OWNER_REFERENCE = Schema.of(
    known=("apiVersion", "kind", "name", "uid", "controller"),
    unsupported=("blockOwnerDeletion",),
)

# Kubernetes writes apiVersion, resourceVersion and fieldPath into references too; Atoll's
# references name the object only, so those are accepted (for round trips) and dropped.
OBJECT_REFERENCE = Schema.of(
    known=("kind", "namespace", "name", "uid"), ignored=("apiVersion", "resourceVersion", "fieldPath")
)

# The identity fields v1beta1 put at the top level of every object (its TypeMeta).
LEGACY_META_FIELDS = frozenset(
    {"kind", "apiVersion", "id", "uid", "namespace", "labels", "annotations", "resourceVersion"}
    | {"creationTimestamp", "deletionTimestamp"}
)
LEGACY_META_UNSUPPORTED = {"generateName": "give the object an id"}
LEGACY_META_IGNORED = frozenset({"selfLink"})

# v1 metadata paths -> v1beta1 top-level paths (registry.rules pairs).
LEGACY_META_PATHS = (
    (r"metadata\.name", "id"),
    (
        r"metadata\.(namespace|labels|annotations|uid|resourceVersion|creationTimestamp|deletionTimestamp)",
        r"\1",
    ),
)


def decode(value: Value | None) -> meta_pb2.ObjectMeta:
    """A v1 ``metadata`` mapping."""
    meta = meta_pb2.ObjectMeta()
    if value is None:
        return meta
    f = value.fields(METADATA)
    if v := f.get("name"):
        meta.name = v.string()
    if v := f.get("namespace"):
        meta.namespace = v.string()
    _common(f, meta)
    if v := f.get("generation"):
        meta.generation = v.integer()
    for ref_value in v.elements() if (v := f.get("ownerReferences")) else []:
        rf = ref_value.fields(OWNER_REFERENCE)
        ref = meta.owner_references.add()
        if v := rf.get("apiVersion"):
            v.string()
        if v := rf.get("kind"):
            ref.kind = v.string()
        if v := rf.get("name"):
            ref.name = v.string()
        if v := rf.get("uid"):
            ref.uid = v.string()
        if v := rf.get("controller"):
            ref.controller = v.boolean()
    return meta


def decode_legacy(f: Fields) -> meta_pb2.ObjectMeta:
    """The v1beta1 top-level identity fields (``id`` is the name)."""
    meta = meta_pb2.ObjectMeta()
    if v := f.get("id"):
        meta.name = v.string()
    if v := f.get("namespace"):
        meta.namespace = v.string()
    _common(f, meta)
    return meta


def _common(f: Fields, meta: meta_pb2.ObjectMeta) -> None:
    if v := f.get("uid"):
        meta.uid = v.string()
    if v := f.get("labels"):
        meta.labels.update(v.string_map())
    if v := f.get("annotations"):
        meta.annotations.update(v.string_map())
    if v := f.get("resourceVersion"):
        meta.resource_version = v.int_string()
    if v := f.get("creationTimestamp"):
        meta.creation_timestamp.CopyFrom(v.timestamp())
    if v := f.get("deletionTimestamp"):
        meta.deletion_timestamp.CopyFrom(v.timestamp())


def encode(meta: meta_pb2.ObjectMeta) -> dict[str, Any]:
    out: dict[str, Any] = {"name": meta.name}
    if meta.namespace:
        out["namespace"] = meta.namespace
    if meta.uid:
        out["uid"] = meta.uid
    if meta.resource_version:
        out["resourceVersion"] = str(meta.resource_version)
    if meta.generation:
        out["generation"] = meta.generation
    if meta.HasField("creation_timestamp"):
        out["creationTimestamp"] = encode_time(meta.creation_timestamp)
    if meta.HasField("deletion_timestamp"):
        out["deletionTimestamp"] = encode_time(meta.deletion_timestamp)
    if meta.labels:
        out["labels"] = dict(sorted(meta.labels.items()))
    if meta.annotations:
        out["annotations"] = dict(sorted(meta.annotations.items()))
    if meta.owner_references:
        out["ownerReferences"] = [
            {"apiVersion": "v1", "kind": r.kind, "name": r.name, "uid": r.uid}
            | ({"controller": True} if r.controller else {})
            for r in meta.owner_references
        ]
    return out


def encode_time(ts: timestamp_pb2.Timestamp) -> str:
    """RFC 3339 in UTC; fractional seconds only when there are some (Kubernetes prints whole seconds)."""
    return ts.ToJsonString()


def decode_reference(value: Value) -> workloads_pb2.ObjectReference:
    f = value.fields(OBJECT_REFERENCE)
    ref = workloads_pb2.ObjectReference()
    if v := f.get("kind"):
        ref.kind = v.string()
    if v := f.get("namespace"):
        ref.namespace = v.string()
    if v := f.get("name"):
        ref.name = v.string()
    if v := f.get("uid"):
        ref.uid = v.string()
    return ref


def encode_reference(ref: workloads_pb2.ObjectReference) -> dict[str, Any]:
    return {
        key: value
        for key, value in (
            ("kind", ref.kind),
            ("namespace", ref.namespace),
            ("name", ref.name),
            ("uid", ref.uid),
        )
        if value
    }
