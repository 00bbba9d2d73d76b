"""Per-kind rules for writes through the cluster API, like Kubernetes' REST strategies.

Create: default, reset what clients may not set (status), validate.
Update: keep what clients may not change (status, immutable spec fields),
bump metadata.generation when the spec changed, validate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import Message

from atoll import errors, validation
from atoll.v1 import meta_pb2, node_pb2, pod_pb2


@dataclass(frozen=True)
class Strategy:
    prepare_create: Callable[[Message], None]
    prepare_update: Callable[[Message, Message], None]


def _pod_create(obj: Message) -> None:
    assert isinstance(obj, pod_pb2.Pod)
    validation.default_pod(obj)
    validation.validate_pod(obj).raise_first()
    obj.ClearField("status")
    obj.status.phase = pod_pb2.POD_PHASE_PENDING
    if obj.spec.node_name:
        obj.status.conditions.add(
            type="PodScheduled",
            status=meta_pb2.CONDITION_STATUS_TRUE,
            message=f"pinned to {obj.spec.node_name}",
        )


def _pod_update(new: Message, old: Message) -> None:
    assert isinstance(new, pod_pb2.Pod) and isinstance(old, pod_pb2.Pod)
    validation.default_pod(new)
    # As in Kubernetes, a pod's spec is immutable except for container images.
    candidate = pod_pb2.PodSpec()
    candidate.CopyFrom(new.spec)
    for mine, theirs in zip(candidate.containers, old.spec.containers, strict=False):
        mine.image = theirs.image
    if not new.spec.node_name:
        candidate.node_name = old.spec.node_name
        new.spec.node_name = old.spec.node_name
    if candidate != old.spec:
        raise errors.InvalidArgument(
            "pod updates may not change fields other than spec.containers[*].image", field="spec"
        )
    validation.validate_pod(new).raise_first()
    new.status.CopyFrom(old.status)
    new.metadata.generation = old.metadata.generation + (1 if new.spec != old.spec else 0)


def _node_create(obj: Message) -> None:
    assert isinstance(obj, node_pb2.Node)
    validation.validate_node(obj).raise_first()


def _node_update(new: Message, old: Message) -> None:
    assert isinstance(new, node_pb2.Node) and isinstance(old, node_pb2.Node)
    validation.validate_node(new).raise_first()
    new.status.CopyFrom(old.status)
    new.metadata.generation = old.metadata.generation + (1 if new.spec != old.spec else 0)


STRATEGIES: dict[type[Message], Strategy] = {
    pod_pb2.Pod: Strategy(_pod_create, _pod_update),
    node_pb2.Node: Strategy(_node_create, _node_update),
}


def carry_system_metadata(new: Message, old: Message) -> None:
    """Fields the server owns survive a client's update untouched."""
    nm, om = new.metadata, old.metadata  # type: ignore[attr-defined]
    nm.uid = om.uid
    nm.creation_timestamp.CopyFrom(om.creation_timestamp)
    nm.generation = om.generation
    if not nm.owner_references:
        nm.owner_references.extend(om.owner_references)
