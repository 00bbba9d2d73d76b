"""Human output: kubectl-style tables and `describe` text, one module per group of kinds.

``render_table(type, items, wide)`` prints any kind listed in ROWS;
``describe(obj, ...)`` describes any kind, with the kind's own layout where
there is one (pods, nodes, replication controllers, services) and a generic
one built from the manifest encoding otherwise (which never carries a
registry password). `describe_events` renders the "Events:" section the
describe functions append when given the object's events.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from atoll.v1 import (
    auth_pb2,
    machines_pb2,
    namespace_pb2,
    network_pb2,
    node_pb2,
    pod_pb2,
    quota_pb2,
    sriov_pb2,
    workloads_pb2,
)
from coordinator.cli.printers import machines, network, pods, tokens, workloads
from coordinator.cli.printers.common import age, fields, labels_text, table, timestamp
from coordinator.cli.printers.pods import (
    CONDITION,
    PHASES,
    describe_node,
    describe_pod,
    node_status_text,
    pod_host,
    pod_status_text,
    restarts,
)
from coordinator.cli.printers.workloads import (
    describe_events,
    describe_replication_controller,
    describe_service,
    endpoints_text,
)

__all__ = [
    "CONDITION",
    "PHASES",
    "ROWS",
    "TableOptions",
    "age",
    "describe",
    "describe_events",
    "describe_node",
    "describe_object",
    "describe_pod",
    "describe_replication_controller",
    "describe_service",
    "endpoints_text",
    "labels_text",
    "node_status_text",
    "pod_host",
    "pod_status_text",
    "render_table",
    "restarts",
    "table",
]

Row = Callable[[Message, bool], list[str]]

# Message type -> (headers, extra headers with -o wide, row function).
ROWS: dict[type[Message], tuple[list[str], list[str], Row]] = {
    node_pb2.Node: (pods.NODE_HEADERS, pods.NODE_WIDE, pods.node_row),  # type: ignore[dict-item]
    pod_pb2.Pod: (pods.POD_HEADERS, pods.POD_WIDE, pods.pod_row),  # type: ignore[dict-item]
    workloads_pb2.ReplicationController: (
        workloads.RC_HEADERS,
        workloads.RC_WIDE,
        workloads.rc_row,  # type: ignore[dict-item]
    ),
    workloads_pb2.Service: (
        workloads.SERVICE_HEADERS,
        workloads.SERVICE_WIDE,
        workloads.service_row,  # type: ignore[dict-item]
    ),
    workloads_pb2.Endpoints: (
        workloads.ENDPOINTS_HEADERS,
        workloads.ENDPOINTS_WIDE,
        workloads.endpoints_row,  # type: ignore[dict-item]
    ),
    workloads_pb2.Event: (workloads.EVENT_HEADERS, workloads.EVENT_WIDE, workloads.event_row),  # type: ignore[dict-item]
    network_pb2.Subnet: (network.SUBNET_HEADERS, network.SUBNET_WIDE, network.subnet_row),  # type: ignore[dict-item]
    network_pb2.Network: (network.NETWORK_HEADERS, network.NETWORK_WIDE, network.network_row),  # type: ignore[dict-item]
    network_pb2.Registries: (
        network.REGISTRIES_HEADERS,
        network.REGISTRIES_WIDE,
        network.registries_row,  # type: ignore[dict-item]
    ),
    machines_pb2.Machine: (machines.MACHINE_HEADERS, machines.MACHINE_WIDE, machines.machine_row),  # type: ignore[dict-item]
    auth_pb2.Token: (tokens.TOKEN_HEADERS, tokens.TOKEN_WIDE, tokens.token_row),  # type: ignore[dict-item]
    quota_pb2.ResourceQuota: (
        workloads.RESOURCE_QUOTA_HEADERS,
        workloads.RESOURCE_QUOTA_WIDE,
        workloads.resource_quota_row,  # type: ignore[dict-item]
    ),
    sriov_pb2.SriovNetwork: (
        network.SRIOV_NETWORK_HEADERS,
        network.SRIOV_NETWORK_WIDE,
        network.sriov_network_row,  # type: ignore[dict-item]
    ),
    namespace_pb2.Namespace: (network.NAMESPACE_HEADERS, network.NAMESPACE_WIDE, network.namespace_row),  # type: ignore[dict-item]
}


@dataclass(frozen=True)
class TableOptions:
    """kubectl's additions to any table: NAMESPACE first (``-A``), LABELS last (``--show-labels``),
    and names as ``pod/apache`` when several kinds are listed together (``kind_prefix``)."""

    namespace: bool = False
    labels: bool = False
    kind_prefix: str = ""


def render_table(
    message_type: type[Message],
    items: Sequence[Message],
    wide: bool,
    headers: bool = True,
    *,
    nodes: Sequence[node_pb2.Node] | None = None,
    options: TableOptions | None = None,
) -> str:
    """``nodes``: the cluster's nodes, for kinds shown beside them (machines); others ignore it."""
    head, extra, row = ROWS[message_type]
    if message_type is machines_pb2.Machine and nodes is not None:
        row = functools.partial(machines.machine_row, nodes={n.metadata.name: n for n in nodes})
    rows = [row(item, wide) for item in items]
    columns = head + (extra if wide else [])
    if options is not None:
        columns, rows = _with_options(options, columns, rows, items)
    if not headers:
        return table(columns, rows).split("\n", 1)[1] if rows else ""
    return table(columns, rows)


def _with_options(
    options: TableOptions, columns: list[str], rows: list[list[str]], items: Sequence[Message]
) -> tuple[list[str], list[list[str]]]:
    metas = [item.metadata for item in items]  # type: ignore[attr-defined]
    if options.kind_prefix and columns[0] in ("NAME", "CONTROLLER"):
        rows = [[f"{options.kind_prefix}/{row[0]}", *row[1:]] for row in rows]
    if options.labels and "LABELS" not in columns:
        columns = [*columns, "LABELS"]
        rows = [[*row, labels_text(meta.labels)] for row, meta in zip(rows, metas, strict=True)]
    if options.namespace:
        if "NAMESPACE" in columns:  # pods' -o wide has it last: kubectl's -A shows it first
            at = columns.index("NAMESPACE")
            columns = [columns[at], *columns[:at], *columns[at + 1 :]]
            rows = [[row[at], *row[:at], *row[at + 1 :]] for row in rows]
        else:
            columns = ["NAMESPACE", *columns]
            rows = [[meta.namespace, *row] for row, meta in zip(rows, metas, strict=True)]
    return columns, rows


def describe(
    obj: Message,
    *,
    pods: Sequence[pod_pb2.Pod] | None = None,
    endpoints: workloads_pb2.Endpoints | None = None,
    events: Sequence[workloads_pb2.Event] | None = None,
) -> str:
    """Any object. ``pods``: a node's pods, or the pods a controller's selector may match;
    ``endpoints``: a service's; ``events``: the object's, for the "Events:" section."""
    if isinstance(obj, pod_pb2.Pod):
        return describe_pod(obj, events)
    if isinstance(obj, node_pb2.Node):
        return describe_node(obj, pods or (), events)
    if isinstance(obj, workloads_pb2.ReplicationController):
        return describe_replication_controller(obj, pods, events)
    if isinstance(obj, workloads_pb2.Service):
        return describe_service(obj, endpoints, events)
    return describe_object(obj, events)


def describe_object(obj: Message, events: Sequence[workloads_pb2.Event] | None = None) -> str:
    """The generic layout: identity, then the rest of the v1 encoding, its nested parts as YAML."""
    from coordinator import manifests  # YAML: imported when describing, not for every `get`

    data = manifests.to_dict(obj)
    meta = obj.metadata  # type: ignore[attr-defined]
    pairs = [("Name", meta.name)]
    if meta.namespace:
        pairs.append(("Namespace", meta.namespace))
    pairs.append(("Labels", labels_text(meta.labels)))
    if meta.annotations:
        pairs.append(("Annotations", labels_text(meta.annotations)))
    pairs.append(("Created", timestamp(meta.creation_timestamp)))
    nested: list[str] = []
    for key, value in data.items():
        if key in ("apiVersion", "kind", "metadata"):
            continue
        title = key[:1].upper() + key[1:]
        if isinstance(value, dict | list) and value:
            text = manifests.dumps({"_": value}, "yaml").split("\n", 1)[1].rstrip()
            nested += [f"{title}:", text]
        else:
            pairs.append((title, _scalar(value)))
    lines = [*fields(pairs), *nested]
    if events is not None:
        lines.append(describe_events(events))
    return "\n".join(lines)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value in ({}, []):
        return "<none>"
    return str(value)
