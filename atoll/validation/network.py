"""The overlay network (flannel's net-conf.json), subnet leases and image registries."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

from atoll.v1 import network_pb2
from atoll.validation.core import (
    MAX_NAME,
    Problems,
    check_name,
    check_port,
    is_ipv4,
    validate_meta,
)
from atoll.validation.text import check_object

# -- the overlay network (flannel's net-conf.json) -------------------------------------------

VXLAN = "vxlan"
VNI_MAX = (1 << 24) - 1
VXLAN_PORT = 8472  # the Linux kernel's default, as flannel's
MAX_NETWORK_PREFIX = 28
MAX_SUBNET_LEN = 30
MTU_RANGE = (576, 9000)
DEFAULT_NETWORK_NAME = "default"


def default_network(spec: network_pb2.NetworkSpec) -> None:
    """flannel's defaults, except that the backend is vxlan (flannel's is udp).

    SubnetLen is 24, or one more than the network's prefix for a /24 or smaller
    network (as flannel, so that there are always two subnets); SubnetMin is
    the second subnet (the first holds the network address) and SubnetMax the
    last. Values that cannot be computed (a bad network) are left for
    `validate_network` to report.
    """
    net = _ipv4_network(spec.network)
    if not spec.subnet_len:
        spec.subnet_len = 24 if net is None or net.prefixlen < 24 else net.prefixlen + 1
    if net is not None and net.prefixlen < spec.subnet_len <= 32:
        size = 1 << (32 - spec.subnet_len)
        if not spec.subnet_min:
            spec.subnet_min = str(net.network_address + size)
        if not spec.subnet_max:
            spec.subnet_max = str(net.network_address + (net.num_addresses - size))
    backend = spec.backend
    if not backend.type:
        backend.type = VXLAN
    if not backend.vni:
        backend.vni = 1
    if not backend.port:
        backend.port = VXLAN_PORT
    if not spec.HasField("ip_masq"):
        spec.ip_masq = True


def validate_network(spec: network_pb2.NetworkSpec) -> Problems:
    """The spec of the Network object (paths ``spec.network`` ...); see also `validate_network_object`."""
    p = Problems()
    net = _network_cidr(p, spec.network)
    if net is not None and not net.prefixlen < spec.subnet_len <= MAX_SUBNET_LEN:
        if spec.subnet_len <= net.prefixlen:
            p.add(
                "spec.subnetLen",
                f"must be longer than the network's prefix /{net.prefixlen}, got {spec.subnet_len}",
            )
        else:
            p.add("spec.subnetLen", f"must be at most {MAX_SUBNET_LEN}, got {spec.subnet_len}")
        net = None
    elif net is None and not 1 <= spec.subnet_len <= MAX_SUBNET_LEN:
        p.add("spec.subnetLen", f"must be between 1 and {MAX_SUBNET_LEN}, got {spec.subnet_len}")
    low = _subnet_bound(p, "spec.subnetMin", spec.subnet_min, net, spec.subnet_len)
    high = _subnet_bound(p, "spec.subnetMax", spec.subnet_max, net, spec.subnet_len)
    if low is not None and high is not None and high < low:
        p.add("spec.subnetMax", f"must not be below spec.subnetMin ({low}), got {high}")
    backend = spec.backend
    if backend.type != VXLAN:
        got = repr(backend.type) if backend.type else "nothing"
        p.add("spec.backend.type", f'must be "vxlan", the only backend Atoll has, got {got}')
    if not 1 <= backend.vni <= VNI_MAX:
        p.add("spec.backend.vni", f"must be between 1 and {VNI_MAX}, got {backend.vni}")
    check_port(p, "spec.backend.port", backend.port)
    if spec.mtu and not MTU_RANGE[0] <= spec.mtu <= MTU_RANGE[1]:
        low_mtu, high_mtu = MTU_RANGE
        p.add(
            "spec.mtu", f"must be 0 (from the underlay) or between {low_mtu} and {high_mtu}, got {spec.mtu}"
        )
    return p


def validate_network_object(net: network_pb2.Network) -> Problems:
    """The whole Network object: cluster-scoped, named "default", and a valid spec."""
    p = Problems()
    validate_meta(p, net.metadata, namespaced=False)
    if net.metadata.name and net.metadata.name != DEFAULT_NETWORK_NAME:
        p.add(
            "metadata.name",
            f'must be "default": the cluster has one overlay network, got {net.metadata.name!r}',
        )
    p.items.extend(validate_network(net.spec).items)
    check_object(p, net)
    return p


def _ipv4_network(text: str) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(text) if "/" in text else None
    except ValueError:
        return None


def _network_cidr(p: Problems, text: str) -> ipaddress.IPv4Network | None:
    field = "spec.network"
    if not text:
        p.add(field, "is required, for example 10.100.0.0/16")
        return None
    if "/" not in text:
        p.add(field, f"{text!r} is not a CIDR: add the prefix length, as in 10.100.0.0/16")
        return None
    try:
        net = ipaddress.IPv4Network(text)
    except ValueError:
        try:
            loose = ipaddress.IPv4Network(text, strict=False)
        except ValueError:
            p.add(field, f"{text!r} is not an IPv4 CIDR like 10.100.0.0/16")
        else:
            p.add(field, f"{text!r} has host bits set; did you mean {loose}?")
        return None
    if net.prefixlen > MAX_NETWORK_PREFIX:
        p.add(
            field,
            f"/{net.prefixlen} is too small for an overlay: the prefix must be {MAX_NETWORK_PREFIX} or less",
        )
        return None
    return net


def _subnet_bound(
    p: Problems, field: str, text: str, net: ipaddress.IPv4Network | None, subnet_len: int
) -> ipaddress.IPv4Address | None:
    if not text:
        if net is not None:  # else the network's problem comes first, and defaulting fills this in
            p.add(field, "is required")
        return None
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        p.add(field, f"{text!r} is not an IPv4 address")
        return None
    if net is None:
        return addr
    if addr not in net:
        p.add(field, f"{addr} is outside the network {net}")
        return None
    start = ipaddress.IPv4Network(f"{addr}/{subnet_len}", strict=False).network_address
    if start != addr:
        p.add(field, f"{addr} does not start a /{subnet_len} subnet; did you mean {start}?")
        return None
    return addr


# -- subnet leases ---------------------------------------------------------------------------

MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}\Z")


def validate_subnet(lease: network_pb2.Subnet) -> Problems:
    p = Problems()
    validate_meta(p, lease.metadata, namespaced=False)
    spec = lease.spec
    try:
        cidr = ipaddress.IPv4Network(spec.cidr) if "/" in spec.cidr else None
    except ValueError:
        cidr = None
    if cidr is None:
        p.add("spec.cidr", f"{spec.cidr!r} is not an IPv4 subnet like 10.100.50.0/24")
    else:
        # One object per subnet, so that two nodes can never hold the same one.
        expected = str(cidr).replace("/", "-")
        if lease.metadata.name and lease.metadata.name != expected:
            p.add(
                "metadata.name",
                f'must be the subnet with "-" for "/" ({expected}), got {lease.metadata.name!r}',
            )
    check_name(p, "spec.nodeName", spec.node_name)
    if spec.public_ip and not is_ipv4(spec.public_ip):
        p.add("spec.publicIP", f"{spec.public_ip!r} is not an IPv4 address")
    if spec.vtep_mac and not MAC.fullmatch(spec.vtep_mac):
        p.add("spec.vtepMAC", f"{spec.vtep_mac!r} is not a MAC address like 0a:58:0a:64:32:00")
    if spec.backend_type not in ("", VXLAN):
        p.add("spec.backendType", f'must be "vxlan", got {spec.backend_type!r}')
    if not 0 <= spec.vni <= VNI_MAX:
        p.add("spec.vni", f"must be between 0 and {VNI_MAX}, got {spec.vni}")
    check_object(p, lease)
    return p


# -- image registries ------------------------------------------------------------------------
#
# Accepted here is exactly what the agents accept (agent.registries.settings): a
# registry is host[:port], optionally written as a URL (Docker's own auth key for
# Docker Hub is https://index.docker.io/v1/); insecure entries may be networks;
# `*` or RHEL's `all` in blocked blocks everything outside the search list.

_HOST_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
REGISTRY_HOST = re.compile(
    rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?\Z"
)
BLOCK_ALL = ("*", "all")


def validate_registries(reg: network_pb2.Registries) -> Problems:
    p = Problems()
    validate_meta(p, reg.metadata, namespaced=False)
    if reg.metadata.name and reg.metadata.name != DEFAULT_NETWORK_NAME:
        p.add(
            "metadata.name",
            f'must be "default": the cluster has one Registries object, got {reg.metadata.name!r}',
        )
    spec = reg.spec
    lists = (("search", spec.search), ("insecure", spec.insecure), ("blocked", spec.blocked))
    for key, entries in lists:
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            field = f"spec.{key}[{i}]"
            if key == "insecure" and _is_cidr(entry):
                pass  # dockerd's insecure-registries takes whole networks too
            elif key == "blocked" and entry.strip().lower() in BLOCK_ALL:
                pass
            else:
                _registry_host(p, field, entry)
            name = "*" if key == "blocked" and entry.strip().lower() in BLOCK_ALL else _canonical(entry)
            if name in seen:
                p.add(field, f"{entry} is listed twice")
            seen.add(name)
    blocked = {_canonical(entry) for entry in spec.blocked}
    for i, entry in enumerate(spec.search):
        # The nodes would drop it from the search list (blocked wins): say so now.
        if _canonical(entry) in blocked:
            p.add(f"spec.search[{i}]", f"{entry} is also blocked: nothing could be pulled from it")
    for i, url in enumerate(spec.mirrors):
        _mirror(p, f"spec.mirrors[{i}]", url)
    registries: set[str] = set()
    for i, auth in enumerate(spec.auths):
        af = f"spec.auths[{i}]"
        _registry_host(p, f"{af}.registry", auth.registry)
        if _canonical(auth.registry) in registries:
            p.add(f"{af}.registry", f"{auth.registry} has two auths; keep one")
        registries.add(_canonical(auth.registry))
        if not auth.username:
            p.add(f"{af}.username", "is required")
        # password_set: a client sending back what it read ("keep the stored one"); the server
        # fills the stored password in before it validates.
        if not auth.password and not auth.password_set:
            p.add(f"{af}.password", "is required: nodes ignore credentials without one")
    check_object(p, reg)
    return p


def _is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return False
    return "/" in text


def _canonical(name: str) -> str:
    """The registry a name means, as the agents compare them: no scheme, no API suffix, lower case."""
    text = name.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.rstrip("/")
    for suffix in ("/v1", "/v2"):
        text = text.removesuffix(suffix)
    return "docker.io" if text in _DOCKER_HUB_ALIASES else text


_DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")


def _registry_host(p: Problems, field: str, value: str) -> None:
    text = _canonical(value)
    if not text:
        p.add(field, "is required")
    elif "/" in text:
        p.add(
            field, f"{value!r} must be a registry host[:port] like registry.example.com:5000, without a path"
        )
    elif not (m := REGISTRY_HOST.fullmatch(text)) or len(text) > MAX_NAME:
        p.add(field, f"{value!r} is not a registry host[:port] like registry.example.com:5000")
    elif m.group("port") is not None and not 1 <= int(m.group("port")) <= 65535:
        p.add(field, f"port {m.group('port')} must be between 1 and 65535")


def _mirror(p: Problems, field: str, url: str) -> None:
    """What dockerd accepts as a registry mirror: it refuses to start on anything else."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError:
        p.add(field, f"{url!r} is not a URL like https://mirror.example.com")
        return
    if parts.scheme not in ("http", "https") or not parts.hostname:
        p.add(field, f"{url!r} must be an http:// or https:// URL like https://mirror.example.com")
    elif parts.username is not None or parts.password is not None:
        # The URL would be printed and stored in the clear; auths keep the password write-only.
        p.add(field, "must not carry credentials: put them in auths")
    elif parts.path not in ("", "/") or parts.query or parts.fragment:
        p.add(field, f"{url!r} must not have a path, query or fragment")
    elif port == 0:
        p.add(field, "the port must be between 1 and 65535")
