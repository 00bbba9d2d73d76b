"""The Namespace kind, as Kubernetes writes it; its labels carry the pod security level.

    apiVersion: v1
    kind: Namespace
    metadata:
      name: team-a
      labels: {pod-security.atoll.io/enforce: restricted}

Kubernetes' ``pod-security.kubernetes.io/enforce`` label is read as a plain
label: Atoll enforces its own (see coordinator/admission/podsecurity.py).
``spec.finalizers`` and ``status.phase`` are accepted and dropped (round trips
of kubectl output): Atoll namespaces have no lifecycle.
"""

from __future__ import annotations

from typing import Any

from atoll.v1 import namespace_pb2
from coordinator.admission import podsecurity
from coordinator.manifests import meta
from coordinator.manifests.reader import Schema, Value
from coordinator.manifests.registry import Codec, Shape

NAMESPACE = Schema.of(known=("apiVersion", "kind", "metadata"), ignored=("spec", "status"))


def decode_v1(root: Value) -> namespace_pb2.Namespace:
    f = root.fields(NAMESPACE)
    return namespace_pb2.Namespace(metadata=meta.decode(f.get("metadata")))


def encode(ns: namespace_pb2.Namespace) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta.encode(ns.metadata)}


CODEC = Codec(
    kind="Namespace",
    message=namespace_pb2.Namespace,
    shapes={"v1": Shape(decode_v1)},
    encode=encode,
    validate=podsecurity.validate_namespace,
)
