"""What the API knows about each kind: message class, oneof field, scope, names.

The ClusterService is generic over kinds; this table is the one place that
ties the `Kind` enum, the `Object` oneof and the CLI's resource names together.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from atoll import errors
from atoll.v1 import (
    auth_pb2,
    cluster_pb2,
    machines_pb2,
    namespace_pb2,
    network_pb2,
    node_pb2,
    pod_pb2,
    quota_pb2,
    sriov_pb2,
    workloads_pb2,
)


@dataclass(frozen=True)
class KindInfo:
    kind: cluster_pb2.Kind
    name: str
    field: str
    message: type[Message]
    namespaced: bool
    plural: str
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.plural, self.field, self.name.lower(), *self.aliases)


KINDS: tuple[KindInfo, ...] = (
    KindInfo(
        cluster_pb2.KIND_NODE, "Node", "node", node_pb2.Node, False, "nodes", ("no", "minion", "minions")
    ),
    KindInfo(cluster_pb2.KIND_POD, "Pod", "pod", pod_pb2.Pod, True, "pods", ("po",)),
    KindInfo(
        cluster_pb2.KIND_REPLICATION_CONTROLLER,
        "ReplicationController",
        "replication_controller",
        workloads_pb2.ReplicationController,
        True,
        "replicationcontrollers",
        ("rc",),
    ),
    KindInfo(
        cluster_pb2.KIND_SERVICE, "Service", "service", workloads_pb2.Service, True, "services", ("svc",)
    ),
    KindInfo(
        cluster_pb2.KIND_ENDPOINTS,
        "Endpoints",
        "endpoints",
        workloads_pb2.Endpoints,
        True,
        "endpoints",
        ("ep",),
    ),
    KindInfo(cluster_pb2.KIND_EVENT, "Event", "event", workloads_pb2.Event, True, "events", ("ev",)),
    KindInfo(
        cluster_pb2.KIND_NETWORK, "Network", "network", network_pb2.Network, False, "networks", ("net",)
    ),
    KindInfo(
        cluster_pb2.KIND_SUBNET, "Subnet", "subnet", network_pb2.Subnet, False, "subnets", ("lease", "leases")
    ),
    KindInfo(cluster_pb2.KIND_TOKEN, "Token", "token", auth_pb2.Token, False, "tokens", ()),
    KindInfo(cluster_pb2.KIND_MACHINE, "Machine", "machine", machines_pb2.Machine, False, "machines", ()),
    KindInfo(
        cluster_pb2.KIND_REGISTRIES,
        "Registries",
        "registries",
        network_pb2.Registries,
        False,
        "registries",
        ("registry",),
    ),
    KindInfo(
        cluster_pb2.KIND_SRIOV_NETWORK,
        "SriovNetwork",
        "sriov_network",
        sriov_pb2.SriovNetwork,
        False,
        "sriovnetworks",
        ("sriovnetwork", "sriovnet"),
    ),
    KindInfo(
        cluster_pb2.KIND_NAMESPACE,
        "Namespace",
        "namespace",
        namespace_pb2.Namespace,
        False,
        "namespaces",
        ("ns",),
    ),
    KindInfo(
        cluster_pb2.KIND_RESOURCE_QUOTA,
        "ResourceQuota",
        "resource_quota",
        quota_pb2.ResourceQuota,
        True,
        "resourcequotas",
        ("quota",),
    ),
)

_BY_KIND = {k.kind: k for k in KINDS}
_BY_NAME = {k.name: k for k in KINDS}
_BY_FIELD = {k.field: k for k in KINDS}
_BY_MESSAGE = {k.message: k for k in KINDS}
_BY_CLI = {alias: k for k in KINDS for alias in k.names}


def by_kind(kind: cluster_pb2.Kind) -> KindInfo:
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise errors.InvalidArgument(f"unknown kind {kind}", field="kind") from None


def by_name(name: str) -> KindInfo:
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted(_BY_NAME))
        raise errors.InvalidArgument(f"unknown kind {name!r} (known: {known})", field="kind") from None


def by_cli_name(name: str) -> KindInfo:
    try:
        return _BY_CLI[name.lower()]
    except KeyError:
        known = ", ".join(k.plural for k in KINDS)
        raise errors.InvalidArgument(
            f'the server doesn\'t have a resource type "{name}" (known: {known})'
        ) from None


def of(message: Message) -> KindInfo:
    return _BY_MESSAGE[type(message)]


def wrap(message: Message) -> cluster_pb2.Object:
    obj = cluster_pb2.Object()
    getattr(obj, of(message).field).CopyFrom(message)
    return obj


def unwrap(obj: cluster_pb2.Object) -> tuple[KindInfo, Message]:
    field = obj.WhichOneof("kind")
    if field is None:
        raise errors.InvalidArgument("object has no kind set", field="object")
    return _BY_FIELD[field], getattr(obj, field)
