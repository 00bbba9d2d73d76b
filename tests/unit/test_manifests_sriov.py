"""SriovNetwork manifests: the SR-IOV Network Operator's files as written, and errors that name the field."""

from __future__ import annotations

import json

import pytest
import yaml

from atoll.v1 import sriov_pb2
from coordinator import manifests
from coordinator.manifests.errors import ManifestError

OPERATOR_FILE = """\
apiVersion: sriovnetwork.openshift.io/v1
kind: SriovNetwork
metadata:
  name: sriov-a
  namespace: openshift-sriov-network-operator
spec:
  resourceName: intelnics
  networkNamespace: default
  vlan: 100
  vlanQoS: 3
  spoofChk: "off"
  trust: "on"
  linkState: enable
  minTxRate: 100
  maxTxRate: 1000
  ipam: |
    {
      "type": "host-local",
      "subnet": "10.56.217.0/24",
      "rangeStart": "10.56.217.171",
      "rangeEnd": "10.56.217.181",
      "routes": [{"dst": "0.0.0.0/0"}],
      "gateway": "10.56.217.1"
    }
"""


def load(text: str) -> sriov_pb2.SriovNetwork:
    (obj,) = manifests.load_text(text, "net.yaml")
    assert isinstance(obj, sriov_pb2.SriovNetwork)
    return obj


def error(text: str) -> str:
    with pytest.raises(ManifestError) as info:
        load(text)
    return str(info.value)


def with_spec(**changes: object) -> str:
    doc = yaml.safe_load(OPERATOR_FILE)
    doc["spec"].update(changes)
    return yaml.safe_dump(doc)


def test_the_operators_file_as_written() -> None:
    net = load(OPERATOR_FILE)
    assert net.metadata.name == "sriov-a" and net.metadata.namespace == ""  # cluster-wide
    s = net.spec
    assert (s.resource_name, s.vlan, s.vlan_qos, s.link_state) == ("atoll.io/intelnics", 100, 3, "enable")
    assert (s.spoof_chk, s.trust) == (sriov_pb2.SRIOV_SWITCH_OFF, sriov_pb2.SRIOV_SWITCH_ON)
    assert (s.min_tx_rate, s.max_tx_rate) == (100, 1000)
    assert (s.ipam.type, s.ipam.subnet, s.ipam.range_start, s.ipam.range_end, s.ipam.gateway) == (
        "host-local",
        "10.56.217.0/24",
        "10.56.217.171",
        "10.56.217.181",
        "10.56.217.1",
    )
    assert [r.dst for r in s.ipam.routes] == ["0.0.0.0/0"]


def test_round_trip_writes_ipam_back_as_json() -> None:
    net = load(OPERATOR_FILE)
    out = manifests.to_dict(net)
    assert out["apiVersion"] == "sriovnetwork.openshift.io/v1" and isinstance(out["spec"]["ipam"], str)
    assert json.loads(out["spec"]["ipam"])["rangeEnd"] == "10.56.217.181"
    assert load(manifests.dumps(out, "yaml")) == net


def test_static_ipam_unquoted_switches_and_a_full_resource_name() -> None:
    text = with_spec(
        resourceName="atoll.io/sriov_ens1f0",
        spoofChk=True,
        ipam={"type": "static", "addresses": [{"address": "10.56.0.10/24", "gateway": "10.56.0.1"}]},
    )
    s = load(text).spec
    assert s.resource_name == "atoll.io/sriov_ens1f0" and s.spoof_chk == sriov_pb2.SRIOV_SWITCH_ON
    assert [(a.address, a.gateway) for a in s.ipam.addresses] == [("10.56.0.10/24", "10.56.0.1")]


def test_host_local_ranges_form() -> None:
    ipam = {
        "type": "host-local",
        "ranges": [[{"subnet": "10.9.0.0/16", "rangeStart": "10.9.1.1", "rangeEnd": "10.9.1.9"}]],
    }
    s = load(with_spec(ipam=json.dumps(ipam))).spec
    assert (s.ipam.subnet, s.ipam.range_start, s.ipam.range_end) == ("10.9.0.0/16", "10.9.1.1", "10.9.1.9")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vlan": 4095}, "net.yaml: spec.vlan: must be within 0..4094, got 4095"),
        ({"vlanQoS": 9}, "net.yaml: spec.vlanQoS: must be within 0..7, got 9"),
        ({"vlan": 0}, "net.yaml: spec.vlanQoS: needs a vlan"),
        ({"spoofChk": "maybe"}, "net.yaml: spec.spoofChk: expected"),
        ({"linkState": "up"}, "net.yaml: spec.linkState: must be auto, enable or disable"),
        ({"minTxRate": 2000}, "net.yaml: spec.minTxRate: 2000 is above maxTxRate 1000"),
        ({"resourceName": "bad name"}, "net.yaml: spec.resourceName: must be NAME or DOMAIN/NAME"),
        ({"resourceName": ""}, "net.yaml: spec.resourceName: is required"),
        ({"ipam": "{not json"}, "net.yaml: spec.ipam: expected the CNI IPAM config as JSON"),
        ({"ipam": '{"type": "dhcp"}'}, "net.yaml: spec.ipam.type: must be static or host-local"),
        (
            {"ipam": '{"type": "host-local", "subnet": "10.56.217.0/24", "rangeStart": "10.57.0.1"}'},
            "net.yaml: spec.ipam.rangeStart: 10.57.0.1 is outside the subnet 10.56.217.0/24",
        ),
        (
            {
                "ipam": '{"type": "host-local", "subnet": "10.56.217.0/24", "rangeStart": "10.56.217.9", "rangeEnd": "10.56.217.2"}'
            },
            "net.yaml: spec.ipam.rangeStart: 10.56.217.9 is after rangeEnd",
        ),
        (
            {"ipam": '{"type": "static", "addresses": [{"address": "10.1.1.1"}]}'},
            "net.yaml: spec.ipam.addresses[0].address",
        ),
        (
            {"ipam": '{"type": "host-local", "subnet": "10.0.0.0/8", "routes": [{"dst": "x"}]}'},
            "net.yaml: spec.ipam.routes[0].dst",
        ),
        (
            {"metaPlugins": "{}"},
            "net.yaml: spec.metaPlugins: Atoll does not support this SR-IOV Network Operator field",
        ),
        ({"vlna": 3}, 'net.yaml: spec.vlna: unknown field; did you mean "vlan"?'),
    ],
)
def test_every_mistake_names_its_field(changes: dict[str, object], message: str) -> None:
    assert error(with_spec(**changes)).startswith(message)


def test_the_name_must_be_a_dns_name() -> None:
    assert "metadata.name" in error(OPERATOR_FILE.replace("name: sriov-a", "name: Sriov_A"))
