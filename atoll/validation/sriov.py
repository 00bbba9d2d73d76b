"""SriovNetwork: which VFs a network uses and how the PF programs them, checked field by field.

Field paths are the manifest's (the SR-IOV Network Operator's names:
`spec.vlanQoS`, `spec.spoofChk`, `spec.ipam.rangeStart`, ...), so a refusal
points at the line the user wrote.
"""

from __future__ import annotations

import ipaddress
import re

from atoll.v1 import sriov_pb2
from atoll.validation.core import Problems, validate_meta
from atoll.validation.text import check_object

DEFAULT_RESOURCE_DOMAIN = "atoll.io"
IPAM_TYPES = ("", "static", "host-local")
LINK_STATES = ("", "auto", "enable", "disable")
MAX_ROUTES = 32
MAX_ADDRESSES = 16
_RESOURCE = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")


def resource_name(name: str) -> str:
    """`intelnics` -> `atoll.io/intelnics`; a name with a domain stays as it is."""
    return name if not name or "/" in name else f"{DEFAULT_RESOURCE_DOMAIN}/{name}"


def validate_sriov_network(net: sriov_pb2.SriovNetwork) -> Problems:
    p = Problems()
    validate_meta(p, net.metadata, namespaced=False)
    spec = net.spec
    if not spec.resource_name:
        p.add("spec.resourceName", "is required (the VFs' resource, e.g. atoll.io/sriov_ens1f0)")
    elif not _RESOURCE.fullmatch(spec.resource_name):
        p.add("spec.resourceName", f"must be NAME or DOMAIN/NAME, got {spec.resource_name!r}")
    if not 0 <= spec.vlan <= 4094:
        p.add("spec.vlan", f"must be within 0..4094, got {spec.vlan}")
    if not 0 <= spec.vlan_qos <= 7:
        p.add("spec.vlanQoS", f"must be within 0..7, got {spec.vlan_qos}")
    elif spec.vlan_qos and not spec.vlan:
        p.add("spec.vlanQoS", "needs a vlan")
    if spec.link_state not in LINK_STATES:
        p.add("spec.linkState", f"must be auto, enable or disable, got {spec.link_state!r}")
    for field, rate in (("spec.minTxRate", spec.min_tx_rate), ("spec.maxTxRate", spec.max_tx_rate)):
        if rate < 0:
            p.add(field, f"must not be negative, got {rate}")
    if spec.max_tx_rate and spec.min_tx_rate > spec.max_tx_rate:
        p.add("spec.minTxRate", f"{spec.min_tx_rate} is above maxTxRate {spec.max_tx_rate}")
    _check_ipam(p, spec.ipam)
    check_object(p, net)
    return p


def _check_ipam(p: Problems, ipam: sriov_pb2.SriovIpam) -> None:
    if ipam.type not in IPAM_TYPES:
        p.add("spec.ipam.type", f"must be static or host-local, got {ipam.type!r}")
        return
    subnet: ipaddress.IPv4Network | None = None
    if ipam.type == "host-local":
        try:
            subnet = ipaddress.IPv4Network(ipam.subnet)
        except ValueError as exc:
            p.add("spec.ipam.subnet", f"must be an IPv4 CIDR like 10.56.217.0/24 ({exc})")
        for field, value in (("rangeStart", ipam.range_start), ("rangeEnd", ipam.range_end)):
            _inside(p, f"spec.ipam.{field}", value, subnet)
        if subnet and ipam.range_start and ipam.range_end:
            try:
                if ipaddress.IPv4Address(ipam.range_start) > ipaddress.IPv4Address(ipam.range_end):
                    p.add("spec.ipam.rangeStart", f"{ipam.range_start} is after rangeEnd {ipam.range_end}")
            except ValueError:
                pass  # reported by _inside
        if ipam.addresses:
            p.add("spec.ipam.addresses", "belong to type static, not host-local")
    elif ipam.type == "static":
        if ipam.subnet or ipam.range_start or ipam.range_end:
            p.add("spec.ipam.subnet", "belongs to type host-local; static takes addresses")
    elif ipam.subnet or ipam.addresses or ipam.routes or ipam.gateway:
        p.add("spec.ipam.type", "is required when other ipam fields are set")
    if ipam.gateway:
        _inside(p, "spec.ipam.gateway", ipam.gateway, subnet)
    if len(ipam.addresses) > MAX_ADDRESSES:
        p.add("spec.ipam.addresses", f"at most {MAX_ADDRESSES}")
    for i, address in enumerate(ipam.addresses):
        try:
            if "/" not in address.address:
                raise ValueError("no prefix length")
            iface = ipaddress.IPv4Interface(address.address)
        except ValueError:
            p.add(
                f"spec.ipam.addresses[{i}].address",
                f"must be an IPv4 CIDR like 10.56.217.10/24, got {address.address!r}",
            )
            continue
        if address.gateway:
            _inside(p, f"spec.ipam.addresses[{i}].gateway", address.gateway, iface.network)
    if len(ipam.routes) > MAX_ROUTES:
        p.add("spec.ipam.routes", f"at most {MAX_ROUTES}")
    for i, route in enumerate(ipam.routes):
        try:
            ipaddress.IPv4Network(route.dst)
        except ValueError:
            p.add(f"spec.ipam.routes[{i}].dst", f"must be an IPv4 CIDR, got {route.dst!r}")
        if route.gw:
            _inside(p, f"spec.ipam.routes[{i}].gw", route.gw, None)


def _inside(p: Problems, field: str, value: str, subnet: ipaddress.IPv4Network | None) -> None:
    if not value:
        return
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        p.add(field, f"must be an IPv4 address, got {value!r}")
        return
    if subnet is not None and address not in subnet:
        p.add(field, f"{value} is outside the subnet {subnet}")
