"""The overlay network, subnet leases and image registries: table rows.

Registries rows name each auth's registry and user, never a password (the
API does not return one, and a client-side object that still holds one
prints the same).
"""

from __future__ import annotations

import time

from atoll import validation
from atoll.v1 import namespace_pb2, network_pb2, sriov_pb2
from coordinator.admission import podsecurity
from coordinator.cli.printers.common import age, duration, labels_text, list_text


def lease_expiry(lease: network_pb2.Subnet, now: float | None = None) -> str:
    """``in 23h`` while the lease holds, ``expired 5m ago`` once another node may take the subnet."""
    if not lease.spec.HasField("expiration"):
        return "<never>"
    left = int(lease.spec.expiration.ToNanoseconds() / 1e9 - (now or time.time()))
    return f"in {duration(left)}" if left >= 0 else f"expired {duration(-left)} ago"


def subnet_row(lease: network_pb2.Subnet, wide: bool) -> list[str]:
    s = lease.spec
    row = [
        s.cidr,
        s.node_name or "<none>",
        s.public_ip or "<none>",
        s.vtep_mac or "<none>",
        lease_expiry(lease),
    ]
    if wide:
        row += [s.backend_type or "<none>", str(s.vni), age(lease.metadata.creation_timestamp)]
    return row


SUBNET_HEADERS = ["SUBNET", "NODE", "PUBLIC IP", "VTEP MAC", "EXPIRES"]
SUBNET_WIDE = ["BACKEND", "VNI", "AGE"]


def network_row(net: network_pb2.Network, wide: bool) -> list[str]:
    """The values the coordinator uses: defaults filled in, as `validation.default_network` does."""
    s = network_pb2.NetworkSpec()
    s.CopyFrom(net.spec)
    validation.default_network(s)
    row = [
        net.metadata.name,
        s.network or "<none>",
        str(s.subnet_len),
        f"{s.subnet_min or '?'} - {s.subnet_max or '?'}",
        s.backend.type,
        str(s.backend.vni),
        str(s.mtu) if s.mtu else "auto",
    ]
    if wide:
        row += [f"{s.backend.port}/udp", str(s.ip_masq).lower(), age(net.metadata.creation_timestamp)]
    return row


NETWORK_HEADERS = ["NAME", "NETWORK", "SUBNET LEN", "RANGE", "BACKEND", "VNI", "MTU"]
NETWORK_WIDE = ["PORT", "IP MASQ", "AGE"]


def registries_row(reg: network_pb2.Registries, wide: bool) -> list[str]:
    s = reg.spec
    row = [
        reg.metadata.name,
        list_text(s.search),
        list_text(s.insecure),
        list_text(s.blocked),
        list_text(s.mirrors),
        list_text([f"{a.registry} ({a.username})" for a in s.auths]),
    ]
    if wide:
        row.append(age(reg.metadata.creation_timestamp))
    return row


REGISTRIES_HEADERS = ["NAME", "SEARCH", "INSECURE", "BLOCKED", "MIRRORS", "AUTHS"]
REGISTRIES_WIDE = ["AGE"]


def sriov_network_row(net: sriov_pb2.SriovNetwork, wide: bool) -> list[str]:
    s = net.spec
    row = [
        net.metadata.name,
        s.resource_name,
        str(s.vlan) if s.vlan else "-",
        s.ipam.type or "-",
        s.ipam.subnet or list_text([a.address for a in s.ipam.addresses]),
        age(net.metadata.creation_timestamp),
    ]
    if wide:
        switches = {sriov_pb2.SRIOV_SWITCH_ON: "on", sriov_pb2.SRIOV_SWITCH_OFF: "off"}
        row += [
            str(s.vlan_qos),
            switches.get(s.spoof_chk, "on"),
            switches.get(s.trust, "off"),
            s.link_state or "auto",
            f"{s.min_tx_rate}-{s.max_tx_rate}" if s.min_tx_rate or s.max_tx_rate else "-",
        ]
    return row


SRIOV_NETWORK_HEADERS = ["NAME", "RESOURCE", "VLAN", "IPAM", "ADDRESSES", "AGE"]
SRIOV_NETWORK_WIDE = ["QOS", "SPOOFCHK", "TRUST", "LINK STATE", "TX RATE"]


def namespace_row(ns: namespace_pb2.Namespace, wide: bool) -> list[str]:
    level = podsecurity.level_of(ns.metadata.labels)
    row = [ns.metadata.name, level, age(ns.metadata.creation_timestamp)]
    if wide:
        row.append(labels_text(ns.metadata.labels))
    return row


NAMESPACE_HEADERS = ["NAME", "POD SECURITY", "AGE"]
NAMESPACE_WIDE = ["LABELS"]
