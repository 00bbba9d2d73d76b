"""Subnet (lease) manifests, both directions."""

from __future__ import annotations

import json

import pytest
from google.protobuf import timestamp_pb2

from atoll.v1 import meta_pb2, network_pb2
from coordinator import manifests
from coordinator.manifests.errors import ManifestError

LEASE = network_pb2.Subnet(
    metadata=meta_pb2.ObjectMeta(name="10.100.50.0-24"),
    spec=network_pb2.SubnetSpec(
        cidr="10.100.50.0/24",
        node_name="minion-1",
        public_ip="192.168.1.5",
        vtep_mac="0a:58:0a:64:32:00",
        backend_type="vxlan",
        vni=1,
        expiration=timestamp_pb2.Timestamp(seconds=1425297600),
    ),
)


def error(text: str) -> str:
    with pytest.raises(ManifestError) as info:
        manifests.load_text(text, "lease.json")
    return str(info.value)


def test_round_trip() -> None:
    out = manifests.to_dict(LEASE)
    assert out == {
        "apiVersion": "v1",
        "kind": "Subnet",
        "metadata": {"name": "10.100.50.0-24"},
        "spec": {
            "cidr": "10.100.50.0/24",
            "nodeName": "minion-1",
            "publicIP": "192.168.1.5",
            "vtepMAC": "0a:58:0a:64:32:00",
            "backendType": "vxlan",
            "vni": 1,
            "expiration": "2015-03-02T12:00:00Z",
        },
    }
    assert manifests.load_data(out) == [LEASE]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("cidr", "10.100.50.0/33", "spec.cidr: '10.100.50.0/33' is not an IPv4 subnet like 10.100.50.0/24"),
        ("vtepMAC", "0a:58:0a", "spec.vtepMAC: '0a:58:0a' is not a MAC address like 0a:58:0a:64:32:00"),
        ("publicIP", "192.168.1", "spec.publicIP: '192.168.1' is not an IPv4 address"),
        ("backendType", "udp", "spec.backendType: must be \"vxlan\", got 'udp'"),
        ("nodeName", "", "spec.nodeName: is required"),
        ("expiration", "tomorrow", "spec.expiration: expected an RFC 3339 time like 2015-03-01T12:00:00Z"),
        ("vnI", 1, 'spec.vnI: unknown field; did you mean "vni"?'),
    ],
)
def test_errors(field: str, value: object, expected: str) -> None:
    data = manifests.to_dict(LEASE)
    data["spec"][field] = value
    assert error(json.dumps(data)).startswith(f"lease.json: {expected}")


def test_the_name_is_the_subnet() -> None:
    data = manifests.to_dict(LEASE)
    data["metadata"]["name"] = "minion-1"
    assert error(json.dumps(data)) == (
        'lease.json: metadata.name: must be the subnet with "-" for "/" (10.100.50.0-24), got \'minion-1\''
    )
