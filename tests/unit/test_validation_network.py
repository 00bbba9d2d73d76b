"""atoll.validation for the overlay network, subnet leases and image registries."""

from __future__ import annotations

import ipaddress

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from atoll import validation
from atoll.v1 import meta_pb2, network_pb2


def net(**fields: object) -> network_pb2.NetworkSpec:
    return network_pb2.NetworkSpec(**fields)  # type: ignore[arg-type]


def checked(spec: network_pb2.NetworkSpec) -> list[tuple[str, str]]:
    validation.default_network(spec)
    return validation.validate_network(spec).items


# ------------------------------------------------------------------ defaults


def test_defaults_are_flannels_with_vxlan() -> None:
    spec = net(network="10.100.0.0/16")
    validation.default_network(spec)
    assert spec == net(
        network="10.100.0.0/16",
        subnet_len=24,
        subnet_min="10.100.1.0",  # the second subnet: the first holds the network address
        subnet_max="10.100.255.0",
        backend=network_pb2.NetworkBackend(type="vxlan", vni=1, port=8472),
        ip_masq=True,
    )
    assert validation.validate_network(spec).items == []


def test_defaults_keep_what_is_written_and_are_idempotent() -> None:
    spec = net(network="10.100.0.0/16", subnet_len=20, subnet_max="10.100.128.0", ip_masq=False, mtu=1400)
    validation.default_network(spec)
    assert (spec.subnet_min, spec.subnet_max, spec.ip_masq, spec.mtu) == (
        "10.100.16.0",
        "10.100.128.0",
        False,
        1400,
    )
    again = network_pb2.NetworkSpec()
    again.CopyFrom(spec)
    validation.default_network(again)
    assert again == spec


def test_small_networks_get_flannels_smaller_subnets() -> None:
    spec = net(network="10.100.0.0/26")
    validation.default_network(spec)
    assert (spec.subnet_len, spec.subnet_min, spec.subnet_max) == (27, "10.100.0.32", "10.100.0.32")
    assert validation.validate_network(spec).items == []


def test_a_bad_network_is_left_for_validation() -> None:
    spec = net(network="10.100.0.0")
    validation.default_network(spec)
    assert (spec.subnet_len, spec.subnet_min) == (24, "")
    assert validation.validate_network(spec).items == [
        ("spec.network", "'10.100.0.0' is not a CIDR: add the prefix length, as in 10.100.0.0/16")
    ]


# ------------------------------------------------------------------ problems


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (net(), [("spec.network", "is required, for example 10.100.0.0/16")]),
        (
            net(network="10.100.0.0/29"),
            [("spec.network", "/29 is too small for an overlay: the prefix must be 28 or less")],
        ),
        (
            net(network="10.100.0.0/16", subnet_len=16),
            [("spec.subnetLen", "must be longer than the network's prefix /16, got 16")],
        ),
        (net(network="10.100.0.0/16", subnet_len=31), [("spec.subnetLen", "must be at most 30, got 31")]),
        (
            net(network="10.100.0.0/16", subnet_min="10.100.0.128"),
            [("spec.subnetMin", "10.100.0.128 does not start a /24 subnet; did you mean 10.100.0.0?")],
        ),
        (
            net(network="10.100.0.0/16", subnet_min="10.100.9.0", subnet_max="10.100.8.0"),
            [("spec.subnetMax", "must not be below spec.subnetMin (10.100.9.0), got 10.100.8.0")],
        ),
        (
            net(network="10.100.0.0/16", subnet_max="10.0.0.0"),
            [("spec.subnetMax", "10.0.0.0 is outside the network 10.100.0.0/16")],
        ),
        (
            net(network="10.100.0.0/16", backend=network_pb2.NetworkBackend(type="host-gw")),
            [("spec.backend.type", "must be \"vxlan\", the only backend Atoll has, got 'host-gw'")],
        ),
        (
            net(network="10.100.0.0/16", backend=network_pb2.NetworkBackend(vni=1 << 24)),
            [("spec.backend.vni", "must be between 1 and 16777215, got 16777216")],
        ),
        (
            net(network="10.100.0.0/16", backend=network_pb2.NetworkBackend(port=-1)),
            [("spec.backend.port", "must be between 1 and 65535, got -1")],
        ),
        (
            net(network="10.100.0.0/16", mtu=500),
            [("spec.mtu", "must be 0 (from the underlay) or between 576 and 9000, got 500")],
        ),
    ],
)
def test_problems(spec: network_pb2.NetworkSpec, expected: list[tuple[str, str]]) -> None:
    assert checked(spec) == expected


def test_undefaulted_backend_is_reported() -> None:
    spec = net(network="10.100.0.0/16", subnet_len=24, subnet_min="10.100.1.0", subnet_max="10.100.2.0")
    assert validation.validate_network(spec).items == [
        ("spec.backend.type", 'must be "vxlan", the only backend Atoll has, got nothing'),
        ("spec.backend.vni", "must be between 1 and 16777215, got 0"),
        ("spec.backend.port", "must be between 1 and 65535, got 0"),
    ]


def test_the_network_object_is_named_default() -> None:
    obj = network_pb2.Network(metadata=meta_pb2.ObjectMeta(name="overlay"), spec=net(network="10.100.0.0/16"))
    validation.default_network(obj.spec)
    assert validation.validate_network_object(obj).items == [
        ("metadata.name", "must be \"default\": the cluster has one overlay network, got 'overlay'")
    ]


@given(st.integers(8, 28), st.integers(0, 2**32 - 1), st.integers(0, 6))
def test_defaults_always_validate(prefix: int, address: int, extra: int) -> None:
    network = ipaddress.IPv4Network((address, prefix), strict=False)
    spec = net(network=str(network), subnet_len=min(30, prefix + 1 + extra))
    assert checked(spec) == []
    first, last = ipaddress.IPv4Address(spec.subnet_min), ipaddress.IPv4Address(spec.subnet_max)
    assert first in network and last in network and first <= last


# ------------------------------------------------------------------ subnet leases


def lease(**spec: object) -> network_pb2.Subnet:
    fields: dict[str, object] = {
        "cidr": "10.100.50.0/24",
        "node_name": "minion-1",
        "public_ip": "192.168.1.5",
        "vtep_mac": "0a:58:0a:64:32:00",
        "backend_type": "vxlan",
        "vni": 1,
        "expiration": timestamp_pb2.Timestamp(seconds=1),
    } | spec
    return network_pb2.Subnet(
        metadata=meta_pb2.ObjectMeta(name="10.100.50.0-24"),
        spec=network_pb2.SubnetSpec(**fields),  # type: ignore[arg-type]
    )


def test_leases() -> None:
    assert validation.validate_subnet(lease()).items == []
    assert validation.validate_subnet(lease(cidr="10.100.50.1/24")).items == [
        ("spec.cidr", "'10.100.50.1/24' is not an IPv4 subnet like 10.100.50.0/24")
    ]
    assert validation.validate_subnet(lease(cidr="10.100.51.0/24")).items == [
        ("metadata.name", 'must be the subnet with "-" for "/" (10.100.51.0-24), got \'10.100.50.0-24\'')
    ]
    assert validation.validate_subnet(lease(vni=-1, vtep_mac="0a-58-0a-64-32-00", public_ip="")).items == [
        ("spec.vtepMAC", "'0a-58-0a-64-32-00' is not a MAC address like 0a:58:0a:64:32:00"),
        ("spec.vni", "must be between 0 and 16777215, got -1"),
    ]


# ------------------------------------------------------------------ registries


def registries(**spec: object) -> network_pb2.Registries:
    return network_pb2.Registries(
        metadata=meta_pb2.ObjectMeta(name="default"),
        spec=network_pb2.RegistriesSpec(**spec),  # type: ignore[arg-type]
    )


def test_registries_accept_hosts_ports_ipv6_and_insecure_networks() -> None:
    reg = registries(
        search=["registry.example.com", "docker.io", "localhost:5000"],
        insecure=["10.0.0.0/8", "[fd00::1]:5000", "Registry.Example.COM"],
        mirrors=["https://mirror.example.com", "http://10.0.0.9:5000/"],
        auths=[
            network_pb2.RegistryAuth(registry="registry.example.com", username="deploy", password_set=True)
        ],
    )
    assert validation.validate_registries(reg).items == []


def test_registry_problems() -> None:
    reg = registries(
        search=["", "10.0.0.0/8"],
        blocked=["docker.io"],
        insecure=["docker.io"],
        mirrors=["ftp://mirror.example.com", "https://mirror.example.com/?x=1"],
        auths=[network_pb2.RegistryAuth(registry="registry.example.com:0")],
    )
    reg.metadata.name = "mine"
    assert validation.validate_registries(reg).items == [
        ("metadata.name", "must be \"default\": the cluster has one Registries object, got 'mine'"),
        ("spec.search[0]", "is required"),
        (
            "spec.search[1]",
            "'10.0.0.0/8' must be a registry host[:port] like registry.example.com:5000, without a path",
        ),
        (
            "spec.mirrors[0]",
            "'ftp://mirror.example.com' must be an http:// or https:// URL like https://mirror.example.com",
        ),
        ("spec.mirrors[1]", "'https://mirror.example.com/?x=1' must not have a path, query or fragment"),
        ("spec.auths[0].registry", "port 0 must be between 1 and 65535"),
        ("spec.auths[0].username", "is required"),
        ("spec.auths[0].password", "is required: nodes ignore credentials without one"),
    ]


def test_registries_are_compared_as_the_agents_compare_them() -> None:
    # Docker's auth key for Docker Hub, a scheme, case: all name docker.io, as on the nodes.
    reg = registries(
        search=["docker.io"],
        blocked=["*", "Index.Docker.io"],
        auths=[
            network_pb2.RegistryAuth(registry="https://index.docker.io/v1/", username="me", password="pw"),
            network_pb2.RegistryAuth(registry="docker.io", username="me", password_set=True),
        ],
        mirrors=["https://mirror.example.com/v2/"],
    )
    assert validation.validate_registries(reg).items == [
        ("spec.search[0]", "docker.io is also blocked: nothing could be pulled from it"),
        ("spec.mirrors[0]", "'https://mirror.example.com/v2/' must not have a path, query or fragment"),
        ("spec.auths[1].registry", "docker.io has two auths; keep one"),
    ]
