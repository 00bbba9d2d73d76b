"""Ceilings on what one write may ask of the cluster, checked at admission.

The object size limit lives in the registry (every write passes it); the
replicas ceiling lives here because only the API sees what a caller asks for:
a controller with `replicas: 1000000000` would otherwise create pods as fast
as the store takes them. Scaling (an update of spec.replicas) passes here too.
"""

from __future__ import annotations

from google.protobuf.message import Message

from atoll import errors
from atoll.v1 import workloads_pb2

DEFAULT_MAX_REPLICAS = 10_000


def check_replicas(obj: Message, max_replicas: int = DEFAULT_MAX_REPLICAS) -> None:
    if not isinstance(obj, workloads_pb2.ReplicationController):
        return
    if obj.spec.HasField("replicas") and obj.spec.replicas > max_replicas:
        raise errors.InvalidArgument(
            f"must be at most {max_replicas} (--max-replicas), got {obj.spec.replicas}",
            field="spec.replicas",
        )
