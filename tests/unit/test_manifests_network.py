"""Network manifests: the v1 shape, flannel's net-conf.json, and `network_from_flannel_json`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atoll.v1 import meta_pb2, network_pb2
from coordinator import manifests
from coordinator.manifests.errors import ManifestError

NET_CONF: dict[str, Any] = {
    "Network": "10.100.0.0/16",
    "SubnetLen": 24,
    "SubnetMin": "10.100.50.0",
    "SubnetMax": "10.100.199.0",
    "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472},
    "MTU": 1400,
    "IPMasq": True,
}

V1 = """\
apiVersion: v1
kind: Network
metadata: {name: default}
spec:
  network: 10.100.0.0/16
  subnetLen: 24
  subnetMin: 10.100.50.0
  subnetMax: 10.100.199.0
  backend: {type: vxlan, vni: 1, port: 8472}
  mtu: 1400
  ipMasq: true
"""

EXPECTED = network_pb2.Network(
    metadata=meta_pb2.ObjectMeta(name="default"),
    spec=network_pb2.NetworkSpec(
        network="10.100.0.0/16",
        subnet_len=24,
        subnet_min="10.100.50.0",
        subnet_max="10.100.199.0",
        backend=network_pb2.NetworkBackend(type="vxlan", vni=1, port=8472),
        mtu=1400,
        ip_masq=True,
    ),
)


def load(data: Any, source: str = "net-conf.json") -> network_pb2.Network:
    text = data if isinstance(data, str) else json.dumps(data)
    (obj,) = manifests.load_text(text, source)
    assert isinstance(obj, network_pb2.Network)
    return obj


def error(data: Any, source: str = "net-conf.json") -> str:
    with pytest.raises(ManifestError) as info:
        load(data, source)
    return str(info.value)


def conf(**changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(NET_CONF))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


# ------------------------------------------------------------------ decoding


def test_flannel_net_conf_is_recognised_without_a_kind() -> None:
    assert load(NET_CONF) == EXPECTED


def test_the_v1_shape_is_the_same_network() -> None:
    assert load(V1, "net.yaml") == EXPECTED


def test_a_minimal_net_conf_as_flannel_documents_it() -> None:
    got = load({"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan"}})
    assert got.spec == network_pb2.NetworkSpec(
        network="10.1.0.0/16", backend=network_pb2.NetworkBackend(type="vxlan")
    )


# ------------------------------------------------------------------ errors in flannel's keys


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            conf(Backend={"Type": "vxlan", "VNI": 0}),
            "Backend.VNI: expected an integer between 1 and 16777215, got 0",
        ),
        (conf(Backend={"Type": "vxlan", "Vni": 2}), 'Backend.Vni: unknown field; did you mean "VNI"?'),
        (
            conf(Backend={"Type": "udp"}),
            "Backend.Type: must be \"vxlan\", the only backend Atoll has, got 'udp'",
        ),
        (
            conf(Backend={"Type": "vxlan", "Port": 70000}),
            "Backend.Port: must be between 1 and 65535, got 70000",
        ),
        (
            conf(Backend={"Type": "vxlan", "DirectRouting": True}),
            "Backend.DirectRouting: Atoll does not support this flannel field; "
            "Atoll's vxlan backend has no such option",
        ),
        (conf(SubnetLen=16), "SubnetLen: must be longer than the network's prefix /16, got 16"),
        (conf(SubnetLen=31), "SubnetLen: must be at most 30, got 31"),
        (
            conf(SubnetMin="10.100.50.1"),
            "SubnetMin: 10.100.50.1 does not start a /24 subnet; did you mean 10.100.50.0?",
        ),
        (conf(SubnetMax="10.101.0.0"), "SubnetMax: 10.101.0.0 is outside the network 10.100.0.0/16"),
        (
            conf(SubnetMin="10.100.200.0"),
            "SubnetMax: must not be below SubnetMin (10.100.200.0), got 10.100.199.0",
        ),
        (conf(SubnetMin="ten"), "SubnetMin: 'ten' is not an IPv4 address"),
        (conf(Network="10.100.0.0"), "Network: '10.100.0.0' is not a CIDR: add the prefix length"),
        (
            conf(Network="10.100.1.0/16"),
            "Network: '10.100.1.0/16' has host bits set; did you mean 10.100.0.0/16?",
        ),
        (
            conf(Network="10.100.0.0/29", SubnetMin=None, SubnetMax=None, SubnetLen=None),
            "Network: /29 is too small",
        ),
        (conf(Network="fd00::/64"), "Network: 'fd00::/64' is not an IPv4 CIDR like 10.100.0.0/16"),
        (conf(MTU=9200), "MTU: must be 0 (from the underlay) or between 576 and 9000, got 9200"),
        (conf(IPMasq="yes"), 'IPMasq: expected true or false, got "yes"'),
        (
            conf(EnableIPv6=True),
            "EnableIPv6: Atoll does not support this flannel field; Atoll's overlay is IPv4",
        ),
        (conf(EnableIPv4=False), "EnableIPv4: Atoll's overlay is IPv4 only: it cannot be turned off"),
        (conf(network="10.0.0.0/8"), 'network: unknown field; did you mean "Network"?'),
    ],
)
def test_errors_name_flannel_keys(data: dict[str, Any], expected: str) -> None:
    assert error(data).startswith(f"net-conf.json: {expected}")


def test_v1_errors_name_v1_paths() -> None:
    assert error(V1.replace("vni: 1", "vni: 0"), "n.yaml") == (
        "n.yaml: spec.backend.vni: expected an integer between 1 and 16777215, got 0"
    )
    assert error(V1.replace("subnetLen: 24", "subnetLen: 12"), "n.yaml") == (
        "n.yaml: spec.subnetLen: must be longer than the network's prefix /16, got 12"
    )
    assert error(V1.replace("name: default", "name: overlay"), "n.yaml") == (
        "n.yaml: metadata.name: must be \"default\": the cluster has one overlay network, got 'overlay'"
    )
    assert error(
        V1.replace("metadata: {name: default}", "metadata: {name: default, namespace: x}"), "n.yaml"
    ) == ("n.yaml: metadata.namespace: must be empty: this kind is not namespaced")


# ------------------------------------------------------------------ the --network-config helper


def test_network_from_flannel_json_returns_the_defaulted_spec() -> None:
    spec = manifests.network_from_flannel_json('{"Network": "10.100.0.0/16"}')
    assert spec == network_pb2.NetworkSpec(
        network="10.100.0.0/16",
        subnet_len=24,
        subnet_min="10.100.1.0",
        subnet_max="10.100.255.0",
        backend=network_pb2.NetworkBackend(type="vxlan", vni=1, port=8472),
        ip_masq=True,
    )
    assert manifests.network_from_flannel_json(NET_CONF) == EXPECTED.spec
    assert manifests.network_from_flannel_json(V1, "net.yaml") == EXPECTED.spec


def test_network_from_flannel_json_errors_name_the_file_and_key() -> None:
    with pytest.raises(ManifestError) as info:
        manifests.network_from_flannel_json(
            '{"Network": "10.100.0.0/16", "SubnetLen": 8}', "/etc/atoll/net-conf.json"
        )
    assert str(info.value) == (
        "/etc/atoll/net-conf.json: SubnetLen: must be longer than the network's prefix /16, got 8"
    )
    with pytest.raises(ManifestError, match=r"^<network config>:1:\d+: "):
        manifests.network_from_flannel_json('{"Network": "10.100.0.0/16",}')
    with pytest.raises(ManifestError) as info:
        manifests.network_from_flannel_json(
            '{"apiVersion": "v1", "kind": "Registries", "metadata": {"name": "default"}}'
        )
    assert str(info.value) == (
        "<network config>: expected one overlay network: flannel's net-conf.json or a kind: Network manifest"
    )


# ------------------------------------------------------------------ encoding


def test_output_is_the_v1_shape() -> None:
    assert manifests.to_dict(load(NET_CONF)) == {
        "apiVersion": "v1",
        "kind": "Network",
        "metadata": {"name": "default"},
        "spec": {
            "network": "10.100.0.0/16",
            "subnetLen": 24,
            "subnetMin": "10.100.50.0",
            "subnetMax": "10.100.199.0",
            "backend": {"type": "vxlan", "vni": 1, "port": 8472},
            "mtu": 1400,
            "ipMasq": True,
        },
    }


TEXT = st.text(max_size=12)


@st.composite
def networks(draw: st.DrawFn) -> network_pb2.Network:
    spec = network_pb2.NetworkSpec(
        network=draw(TEXT),
        subnet_len=draw(st.integers(0, 32)),
        subnet_min=draw(TEXT),
        subnet_max=draw(TEXT),
        mtu=draw(st.integers(-(2**31), 2**31 - 1)),
    )
    if draw(st.booleans()):
        spec.backend.CopyFrom(
            network_pb2.NetworkBackend(
                type=draw(TEXT), vni=draw(st.integers(1, 2**24 - 1)), port=draw(st.integers(0, 2**31 - 1))
            )
        )
        spec.backend.SetInParent()
    if draw(st.booleans()):
        spec.ip_masq = draw(st.booleans())
    return network_pb2.Network(metadata=meta_pb2.ObjectMeta(name=draw(TEXT)), spec=spec)


@given(networks())
def test_decode_of_encode_is_identity(net: network_pb2.Network) -> None:
    assert manifests.load_data(manifests.to_dict(net), validate=False) == [net]
