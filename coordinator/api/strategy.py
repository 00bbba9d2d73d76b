"""Per-kind rules for writes through the cluster API, like Kubernetes' REST strategies.

Create: default, reset what clients may not set (status), validate.
Update: keep what clients may not change (status, immutable spec fields),
bump metadata.generation when the spec changed, validate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from atoll import errors, validation
from atoll.v1 import (
    auth_pb2,
    machines_pb2,
    meta_pb2,
    namespace_pb2,
    network_pb2,
    node_pb2,
    pod_pb2,
    quota_pb2,
    sriov_pb2,
    workloads_pb2,
)
from coordinator.admission import podsecurity
from coordinator.auth import tokens
from coordinator.manifests import resourcequota
from coordinator.network import nodeports


@dataclass(frozen=True)
class Strategy:
    prepare_create: Callable[[Message], None]
    prepare_update: Callable[[Message, Message], None]


def _simple(
    default: Callable[[Message], None] | None, validate: Callable[[Message], validation.Problems]
) -> Strategy:
    """Default and validate on create; on update also keep status and bump generation on spec changes."""

    def create(obj: Message) -> None:
        if default is not None:
            default(obj)
        validate(obj).raise_first()
        if obj.DESCRIPTOR.fields_by_name.get("status") is not None:
            obj.ClearField("status")

    def update(new: Message, old: Message) -> None:
        if default is not None:
            default(new)
        validate(new).raise_first()
        if new.DESCRIPTOR.fields_by_name.get("status") is not None:
            new.status.CopyFrom(old.status)  # type: ignore[attr-defined]
        spec_changed = getattr(new, "spec", None) != getattr(old, "spec", None)
        new.metadata.generation = old.metadata.generation + (1 if spec_changed else 0)  # type: ignore[attr-defined]

    return Strategy(create, update)


def _default_network(obj: Message) -> None:
    assert isinstance(obj, network_pb2.Network)
    validation.default_network(obj.spec)


def _validate_network(obj: Message) -> validation.Problems:
    assert isinstance(obj, network_pb2.Network)
    return validation.validate_network_object(obj)


def _registries_update(new: Message, old: Message) -> None:
    """Passwords are write-only: an auth sent back without one keeps the stored password."""
    assert isinstance(new, network_pb2.Registries) and isinstance(old, network_pb2.Registries)
    stored = {(a.registry, a.username): a.password for a in old.spec.auths}
    for auth in new.spec.auths:
        if not auth.password and auth.password_set:
            auth.password = stored.get((auth.registry, auth.username), "")
        auth.password_set = False
    REGISTRIES_BASE.prepare_update(new, old)


def _registries_create(obj: Message) -> None:
    assert isinstance(obj, network_pb2.Registries)
    for auth in obj.spec.auths:
        auth.password_set = False
    REGISTRIES_BASE.prepare_create(obj)


REGISTRIES_BASE = _simple(None, validation.validate_registries)  # type: ignore[arg-type]


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


def _machine_create(obj: Message) -> None:
    """A machine's status is the provider's state as its provisioner last saw it (enroll and
    provision run in the operator's CLI, which holds the cloud credentials), so clients write it."""
    assert isinstance(obj, machines_pb2.Machine)
    validation.validate_machine(obj).raise_first()


def _machine_update(new: Message, old: Message) -> None:
    assert isinstance(new, machines_pb2.Machine) and isinstance(old, machines_pb2.Machine)
    validation.validate_machine(new).raise_first()
    if old.spec.provider and new.spec.provider != old.spec.provider:
        raise errors.InvalidArgument("spec.provider is immutable", field="spec.provider")
    new.metadata.generation = old.metadata.generation + (1 if new.spec != old.spec else 0)


_SERVICE = _simple(validation.default_service, validation.validate_service)  # type: ignore[arg-type]


def _service_create(obj: Message) -> None:
    assert isinstance(obj, workloads_pb2.Service)
    _SERVICE.prepare_create(obj)
    nodeports.set_status(obj)


def _service_update(new: Message, old: Message) -> None:
    assert isinstance(new, workloads_pb2.Service)
    _SERVICE.prepare_update(new, old)
    nodeports.set_status(new)


STRATEGIES: dict[type[Message], Strategy] = {
    pod_pb2.Pod: Strategy(_pod_create, _pod_update),
    node_pb2.Node: Strategy(_node_create, _node_update),
    network_pb2.Network: _simple(_default_network, _validate_network),
    network_pb2.Subnet: _simple(None, validation.validate_subnet),  # type: ignore[arg-type]
    network_pb2.Registries: Strategy(_registries_create, _registries_update),
    workloads_pb2.ReplicationController: _simple(
        validation.default_replication_controller,  # type: ignore[arg-type]
        validation.validate_replication_controller,  # type: ignore[arg-type]
    ),
    workloads_pb2.Service: Strategy(_service_create, _service_update),
    workloads_pb2.Endpoints: _simple(None, validation.validate_endpoints),  # type: ignore[arg-type]
    workloads_pb2.Event: _simple(None, validation.validate_event),  # type: ignore[arg-type]
    machines_pb2.Machine: Strategy(_machine_create, _machine_update),
    auth_pb2.Token: Strategy(tokens.prepare_create, tokens.prepare_update),
    sriov_pb2.SriovNetwork: _simple(None, validation.validate_sriov_network),  # type: ignore[arg-type]
    quota_pb2.ResourceQuota: _simple(None, resourcequota.validate),  # type: ignore[arg-type]
    namespace_pb2.Namespace: _simple(None, podsecurity.validate_namespace),  # type: ignore[arg-type]
}


def _redact_registries(obj: network_pb2.Registries) -> None:
    for auth in obj.spec.auths:
        auth.password_set = bool(auth.password)
        auth.password = ""


# What the cluster API hides of an object, by kind: never a registry password, never a token's
# secret hash.
_REDACTIONS: dict[type[Message], Callable[[Any], object]] = {
    network_pb2.Registries: _redact_registries,
    auth_pb2.Token: tokens.redact,
}


def redact(obj: Message) -> Message:
    """What the cluster API shows of an object (see _REDACTIONS)."""
    hide = _REDACTIONS.get(type(obj))
    if hide is not None:
        hide(obj)
    return obj


def redacted(message: type[Message]) -> bool:
    """Whether the API shows objects of this kind otherwise than they are stored."""
    return message in _REDACTIONS


def carry_system_metadata(new: Message, old: Message) -> None:
    """Fields the server owns survive a client's update untouched."""
    nm, om = new.metadata, old.metadata  # type: ignore[attr-defined]
    nm.uid = om.uid
    nm.creation_timestamp.CopyFrom(om.creation_timestamp)
    nm.generation = om.generation
    if not nm.owner_references:
        nm.owner_references.extend(om.owner_references)
