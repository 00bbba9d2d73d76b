"""Machines (hosts Atoll provisioned) beside the nodes their agents registered as.

A machine's row joins two objects: the Machine the provisioner recorded
(provider, provider state) and, once the host's agent has joined, the Node of
the same name (its readiness and InternalIP). Without the nodes the table
still prints, with the node columns marked unknown, so any caller of
`render_table` works; `coordinator get machines` passes them in.
"""

from __future__ import annotations

from collections.abc import Mapping

from atoll.v1 import machines_pb2, node_pb2
from coordinator.cli.printers.common import age, labels_text
from coordinator.cli.printers.pods import node_address, node_status_text

MACHINE_HEADERS = ["NAME", "PROVIDER", "STATE", "NODE", "NODE STATUS", "ADDRESS", "AGE"]
MACHINE_WIDE = ["PROVIDER ID", "HOST NAME", "LABELS", "LAST ERROR"]


def machine_address(machine: machines_pb2.Machine, node: node_pb2.Node | None) -> str:
    """The address operators reach the host on: the joined node's, else the floating or first fixed one."""
    if node is not None and (address := node_address(node)) != "<none>":
        return address
    s = machine.spec
    return s.floating_ip or (s.addresses[0] if s.addresses else "<none>")


def machine_row(
    machine: machines_pb2.Machine,
    wide: bool,
    nodes: Mapping[str, node_pb2.Node] | None = None,
) -> list[str]:
    """``nodes``: the cluster's nodes by name, or None when the caller did not look them up."""
    s = machine.spec
    node_name = s.node_name or s.host_name.lower() or machine.metadata.name
    node = nodes.get(node_name) if nodes is not None else None
    if nodes is None:
        node_col, status_col = node_name, "<unknown>"
    elif node is None:
        node_col, status_col = "<none>", "<not joined>"
    else:
        node_col, status_col = node.metadata.name, node_status_text(node)
    row = [
        machine.metadata.name,
        s.provider or "<unknown>",
        machine.status.state or "<unknown>",
        node_col,
        status_col,
        machine_address(machine, node),
        age(machine.metadata.creation_timestamp),
    ]
    if wide:
        error = machine.status.last_error.splitlines()[0] if machine.status.last_error else "<none>"
        row += [s.provider_id or "<none>", s.host_name or "<none>", labels_text(s.labels), error[:80]]
    return row
