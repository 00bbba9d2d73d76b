"""The ResourceQuota kind, as Kubernetes writes it:

    apiVersion: v1
    kind: ResourceQuota
    metadata: {name: compute, namespace: team-a}
    spec:
      hard: {pods: "20", requests.cpu: "4", requests.memory: 8Gi, services: "10"}

Quantities may be numbers or strings. ``status`` is computed when read (the
limits in force and the namespace's usage) and dropped when read back.
"""

from __future__ import annotations

from typing import Any

from atoll import validation
from atoll.v1 import quota_pb2
from coordinator.manifests import meta
from coordinator.manifests.reader import Schema, Value
from coordinator.manifests.registry import Codec, Shape
from coordinator.objects import quota

RESOURCE_QUOTA = Schema.of(known=("apiVersion", "kind", "metadata", "spec"), ignored=("status",))
SPEC = Schema.of(known=("hard",), unsupported=("scopes", "scopeSelector"))


def decode_v1(root: Value) -> quota_pb2.ResourceQuota:
    f = root.fields(RESOURCE_QUOTA)
    rq = quota_pb2.ResourceQuota(metadata=meta.decode(f.get("metadata")))
    sf = f.child_fields("spec", SPEC)
    if v := sf.get("hard"):
        for key, raw in v.mapping().items():
            item = v.child(raw, key)
            rq.spec.hard[key] = (
                str(item.raw)
                if isinstance(item.raw, int) and not isinstance(item.raw, bool)
                else item.string()
            )
    return rq


def encode(rq: quota_pb2.ResourceQuota) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": meta.encode(rq.metadata),
        "spec": {"hard": dict(sorted(rq.spec.hard.items()))},
    }
    if rq.status.hard or rq.status.used:
        out["status"] = {
            "hard": dict(sorted(rq.status.hard.items())),
            "used": dict(sorted(rq.status.used.items())),
        }
    return out


def validate(rq: quota_pb2.ResourceQuota) -> validation.Problems:
    p = validation.Problems()
    validation.validate_meta(p, rq.metadata, namespaced=True)
    if not rq.spec.hard:
        p.add("spec.hard", "is required: at least one limit")
    for key, value in sorted(rq.spec.hard.items()):
        try:
            quota.parse_hard([f"{key}={value}"])
        except Exception as exc:
            p.add(f"spec.hard[{key}]", str(exc).split(": ", 1)[-1])
    return p


CODEC = Codec(
    kind="ResourceQuota",
    message=quota_pb2.ResourceQuota,
    shapes={"v1": Shape(decode_v1)},
    encode=encode,
    validate=validate,
)
