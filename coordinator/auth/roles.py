"""Who may call what: identities, roles and the method -> permission table.

Every RPC of ClusterService and NodeService has an entry in `PERMISSIONS`,
which derives from the request what the call needs: a verb on a resource
(kinds by their plural, plus "pods/log", "clusterinfo" and "certificates"),
or the right to act as a node. A method missing from the table is refused,
so a new RPC stays closed until someone decides who may call it.

Roles:
  admin     everything;
  operator  workloads (pods, replicationcontrollers, services, endpoints,
            events, pod logs) and namespaces read and write (only admins may
            loosen a namespace's pod security level); every other kind but tokens
            read-only: nodes, networks, subnets, registries, machines,
            sriovnetworks are
            managed by admins;
  viewer    get, list and watch on every kind but tokens, and pod logs;
            registry passwords and token secrets are never returned to anyone;
  node      the NodeService, only as the node its certificate names: it
            cannot report another node's status or pods, hold its lease,
            or read its assignment (the pods bound to it, env values
            included). What every node needs is shared with every node: the
            overlay (all leases) and the registry settings, credentials
            included, which reach nodes only, never API users;
  bootstrap a join token's bearer: `Join` only.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from atoll import errors, kinds
from atoll.v1 import cluster_pb2

USER_ROLES = ("admin", "operator", "viewer")
ROLES = (*USER_ROLES, "node", "bootstrap")

READ = frozenset({"get", "list", "watch"})
WRITE = frozenset({"create", "update", "delete"})
WORKLOADS = frozenset({"pods", "replicationcontrollers", "services", "endpoints", "events"})
SECRET_KINDS = frozenset({"tokens"})
# Namespaces too: the cluster API lets only admins loosen one's pod security level.
OPERATOR_WRITES = WORKLOADS | {"namespaces"}

# Certificate subject organisations (O) and the roles they carry. A certificate's
# role is fixed when it is signed: revoke by letting it expire (or use tokens).
GROUP_ROLES = {
    "atoll:admins": "admin",
    "atoll:operators": "operator",
    "atoll:viewers": "viewer",
    "atoll:nodes": "node",
}
ROLE_GROUPS = {role: group for group, role in GROUP_ROLES.items()}


@dataclass(frozen=True)
class Identity:
    user: str
    role: str
    via: str  # how it was established: "certificate", "token abc123", "unix socket", "insecure"
    node: str = ""  # for role node: the node it may act as
    token: str = ""  # the token id, when a token authenticated the call


# The identity of the current call, set by the auth interceptor for the servicers.
CURRENT: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("atoll_identity", default=None)


def current() -> Identity:
    identity = CURRENT.get()
    if identity is None:
        raise errors.Unauthenticated("no authenticated caller")
    return identity


@dataclass(frozen=True)
class Permission:
    verb: str  # get list watch create update delete, "node" (act as a node) or "join"
    resource: str = ""
    node: str = ""  # for verb "node": the node the request speaks for
    namespace: str = ""
    name: str = ""

    @property
    def text(self) -> str:
        if self.verb == "node":
            return f"act as node {self.node or '(none)'}"
        if self.verb == "join":
            return "join the cluster"
        return f"{self.verb} {self.resource}"


def _kind_resource(kind: int) -> str:
    try:
        return kinds.by_kind(kind).plural  # type: ignore[arg-type]
    except errors.InvalidArgument:
        return "(unknown kind)"


def _object(verb: str) -> Callable[[Any], Permission]:
    def need(request: Any) -> Permission:
        field = request.object.WhichOneof("kind")
        if field is None:
            return Permission(verb, "(no object)")
        obj = getattr(request.object, field)
        resource = next((k.plural for k in kinds.KINDS if k.field == field), "(unknown kind)")
        return Permission(verb, resource, namespace=obj.metadata.namespace, name=obj.metadata.name)

    return need


def _by_kind(verb: str) -> Callable[[Any], Permission]:
    def need(request: Any) -> Permission:
        return Permission(
            verb,
            _kind_resource(request.kind),
            namespace=request.namespace,
            name=getattr(request, "name", ""),
        )

    return need


def _as_node(request: Any) -> Permission:
    return Permission("node", "nodes", node=request.node_name, name=request.node_name)


_CLUSTER = "/atoll.v1.ClusterService/"
_NODE = "/atoll.v1.NodeService/"

PERMISSIONS: dict[str, Callable[[Any], Permission]] = {
    _CLUSTER + "Create": _object("create"),
    _CLUSTER + "Update": _object("update"),
    _CLUSTER + "Get": _by_kind("get"),
    _CLUSTER + "List": _by_kind("list"),
    _CLUSTER + "Watch": _by_kind("watch"),
    _CLUSTER + "Delete": _by_kind("delete"),
    _CLUSTER + "GetLogs": lambda r: Permission("get", "pods/log", namespace=r.namespace, name=r.pod),
    _CLUSTER + "GetClusterInfo": lambda r: Permission("get", "clusterinfo"),
    _CLUSTER + "SignUserCertificate": lambda r: Permission("create", "certificates", name=r.user),
    _CLUSTER + "ListCoordinators": lambda r: Permission("list", "coordinators"),
    _CLUSTER + "GetVersion": lambda r: Permission("get", "version"),
    _NODE + "Register": lambda r: Permission(
        "node", "nodes", node=r.node.metadata.name, name=r.node.metadata.name
    ),
    _NODE + "Heartbeat": _as_node,
    _NODE + "GetAssignment": _as_node,
    _NODE + "WatchAssignment": _as_node,
    _NODE + "ReportPodStatus": _as_node,
    _NODE + "StreamPodStatus": lambda r: _as_node(r.report),  # per message (callchain.calls_on_stream)
    _NODE + "AcquireLease": _as_node,
    _NODE + "WatchNodeConfig": _as_node,
    _NODE + "WatchServices": _as_node,
    _NODE + "WatchNode": _as_node,
    _NODE + "ReportEvents": _as_node,
    _NODE + "RenewCertificate": _as_node,
    _NODE + "Join": lambda r: Permission("join", "nodes", node=r.node_name, name=r.node_name),
}

# Calls that change state and are written to the audit log when accepted (denied calls
# always are). Frequent node reports (heartbeats, pod status, events) are left out, as
# Kubernetes' audit policies leave out node status updates.
MUTATING = frozenset(
    {
        _CLUSTER + "Create",
        _CLUSTER + "Update",
        _CLUSTER + "Delete",
        _CLUSTER + "SignUserCertificate",
        _NODE + "Register",
        _NODE + "AcquireLease",
        _NODE + "Join",
        _NODE + "RenewCertificate",
    }
)


def required(method: str, request: Any) -> Permission:
    need = PERMISSIONS.get(method)
    if need is None:
        raise errors.PermissionDenied(f"{method} is not open to any caller")
    return need(request)


def _role_allows(role: str, permission: Permission) -> bool:
    verb, resource = permission.verb, permission.resource
    if role == "admin":
        return verb != "join"
    if role in ("operator", "viewer"):
        if verb in ("node", "join") or resource in SECRET_KINDS or resource == "certificates":
            return False
        if verb in READ:
            return True
        return role == "operator" and verb in WRITE and resource in OPERATOR_WRITES
    if role == "node":
        return verb == "node"
    if role == "bootstrap":
        return verb == "join"
    return False


def authorize(identity: Identity, permission: Permission) -> None:
    """Raise PermissionDenied naming who, what and why, unless `identity` may do it."""
    if not _role_allows(identity.role, permission):
        role = identity.role or "no role"
        raise errors.PermissionDenied(f"{identity.user} ({role}) may not {permission.text}")
    if identity.role == "node" and permission.node != identity.node:
        raise errors.PermissionDenied(
            f"node {identity.node} may only act as itself, not as node {permission.node or '(none)'}"
        )


def covered_methods() -> set[str]:
    """Every RPC of the services the coordinator serves (for tests: the table must cover them)."""
    names = set()
    for service in ("ClusterService",):
        for method in cluster_pb2.DESCRIPTOR.services_by_name[service].methods:
            names.add(f"/atoll.v1.{service}/{method.name}")
    from atoll.v1 import node_api_pb2

    for method in node_api_pb2.DESCRIPTOR.services_by_name["NodeService"].methods:
        names.add(f"/atoll.v1.NodeService/{method.name}")
    return names
