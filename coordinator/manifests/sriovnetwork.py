"""The SriovNetwork kind, in the shape the SR-IOV Network Operator's users already have on disk:

    apiVersion: sriovnetwork.openshift.io/v1
    kind: SriovNetwork
    metadata:
      name: sriov-a
      namespace: openshift-sriov-network-operator   # accepted and dropped: cluster-wide here
    spec:
      resourceName: intelnics        # atoll.io/intelnics; or a full name (atoll.io/sriov_ens1f0)
      vlan: 100
      vlanQoS: 3
      spoofChk: "on"                 # "on" | "off"
      trust: "off"
      linkState: auto                # auto | enable | disable
      minTxRate: 0
      maxTxRate: 1000
      networkNamespace: default      # the operator's target namespace: accepted and dropped
      ipam: |                        # CNI IPAM config as a JSON string: static or host-local
        {"type": "host-local", "subnet": "10.56.217.0/24",
         "rangeStart": "10.56.217.171", "rangeEnd": "10.56.217.181",
         "routes": [{"dst": "0.0.0.0/0"}], "gateway": "10.56.217.1"}

``apiVersion: v1`` is accepted too. ``ipam`` may also be written as a
mapping; host-local's newer ``ranges: [[{subnet, rangeStart, ...}]]`` form
is read when it holds one range. Output uses the operator's apiVersion and
writes ``ipam`` back as a JSON string, so `get -o yaml` round-trips.
"""

from __future__ import annotations

import json
from typing import Any

from atoll import validation
from atoll.v1 import sriov_pb2
from atoll.validation.sriov import resource_name
from coordinator.manifests import meta
from coordinator.manifests.reader import Fields, Schema, Value
from coordinator.manifests.registry import Codec, Shape

API_VERSION = "sriovnetwork.openshift.io/v1"

SRIOV_NETWORK = Schema.of(known=("apiVersion", "kind", "metadata", "spec"), ignored=("status",))
SPEC = Schema.of(
    known=(
        "resourceName",
        "vlan",
        "vlanQoS",
        "spoofChk",
        "trust",
        "linkState",
        "minTxRate",
        "maxTxRate",
        "ipam",
    ),
    unsupported={
        "metaPlugins": "chained CNI plugins are not run",
        "capabilities": "runtime capabilities come from the pod's spec.networks",
        "vlanProto": "only 802.1Q",
    },
    ignored=("networkNamespace", "logLevel", "logFile"),
    origin="SR-IOV Network Operator",
)
IPAM = Schema.of(
    known=("type", "subnet", "rangeStart", "rangeEnd", "gateway", "routes", "addresses", "ranges"),
    ignored=("dataDir", "resolvConf"),
    origin="CNI IPAM",
)
RANGE = Schema.of(known=("subnet", "rangeStart", "rangeEnd", "gateway"), origin="CNI IPAM")
ROUTE = Schema.of(known=("dst", "gw"), origin="CNI IPAM")
ADDRESS = Schema.of(known=("address", "gateway"), origin="CNI IPAM")
SWITCH = {"on": sriov_pb2.SRIOV_SWITCH_ON, "off": sriov_pb2.SRIOV_SWITCH_OFF}
_SWITCH_TEXT = {v: k for k, v in SWITCH.items()}


def decode(root: Value) -> sriov_pb2.SriovNetwork:
    f = root.fields(SRIOV_NETWORK)
    net = sriov_pb2.SriovNetwork(metadata=meta.decode(f.get("metadata")))
    net.metadata.namespace = ""  # cluster-wide; the operator's files name its own namespace
    sf = f.child_fields("spec", SPEC)
    spec = net.spec
    if v := sf.get("resourceName"):
        spec.resource_name = resource_name(v.string())
    for key, attr in (
        ("vlan", "vlan"),
        ("vlanQoS", "vlan_qos"),
        ("minTxRate", "min_tx_rate"),
        ("maxTxRate", "max_tx_rate"),
    ):
        if v := sf.get(key):
            setattr(spec, attr, v.integer((-(2**31), 2**31 - 1)))
    if v := sf.get("spoofChk"):
        spec.spoof_chk = _switch(v)
    if v := sf.get("trust"):
        spec.trust = _switch(v)
    if v := sf.get("linkState"):
        spec.link_state = v.string()
    if v := sf.get("ipam"):
        _decode_ipam(v, spec.ipam)
    return net


def _switch(value: Value) -> sriov_pb2.SriovSwitch:
    """ "on" or "off"; an unquoted YAML on/off (read as a boolean) means the same."""
    if isinstance(value.raw, bool):
        return SWITCH["on" if value.raw else "off"]
    return value.word(SWITCH)


def _decode_ipam(value: Value, ipam: sriov_pb2.SriovIpam) -> None:
    raw = value.raw
    if isinstance(raw, str):
        if not raw.strip():
            return
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            value.fail(f"expected the CNI IPAM config as JSON, got invalid JSON ({exc})")
        value = Value(raw, value.path, value.ctx)
    f = value.fields(IPAM)
    if v := f.get("type"):
        ipam.type = v.string()
    _range(f, ipam)
    if v := f.get("ranges"):
        sets = v.elements()
        if len(sets) != 1 or len(inner := sets[0].elements()) != 1:
            v.fail("expected one range ([[{subnet, rangeStart, rangeEnd, gateway}]])")
        _range(inner[0].fields(RANGE), ipam)
    for element in v.elements() if (v := f.get("routes")) else []:
        rf = element.fields(ROUTE)
        route = ipam.routes.add()
        if r := rf.get("dst"):
            route.dst = r.string()
        if r := rf.get("gw"):
            route.gw = r.string()
    for element in v.elements() if (v := f.get("addresses")) else []:
        af = element.fields(ADDRESS)
        address = ipam.addresses.add()
        if a := af.get("address"):
            address.address = a.string()
        if a := af.get("gateway"):
            address.gateway = a.string()


def _range(f: Fields, ipam: sriov_pb2.SriovIpam) -> None:
    for key, attr in (
        ("subnet", "subnet"),
        ("rangeStart", "range_start"),
        ("rangeEnd", "range_end"),
        ("gateway", "gateway"),
    ):
        if v := f.get(key):
            setattr(ipam, attr, v.string())


def encode(net: sriov_pb2.SriovNetwork) -> dict[str, Any]:
    s = net.spec
    spec: dict[str, Any] = {"resourceName": s.resource_name}
    for key, attr in (
        ("vlan", "vlan"),
        ("vlanQoS", "vlan_qos"),
        ("minTxRate", "min_tx_rate"),
        ("maxTxRate", "max_tx_rate"),
    ):
        if getattr(s, attr):
            spec[key] = getattr(s, attr)
    if s.spoof_chk:
        spec["spoofChk"] = _SWITCH_TEXT[s.spoof_chk]
    if s.trust:
        spec["trust"] = _SWITCH_TEXT[s.trust]
    if s.link_state:
        spec["linkState"] = s.link_state
    if s.HasField("ipam") and s.ipam.type:
        spec["ipam"] = json.dumps(encode_ipam(s.ipam), sort_keys=False)
    return {
        "apiVersion": API_VERSION,
        "kind": "SriovNetwork",
        "metadata": meta.encode(net.metadata),
        "spec": spec,
    }


def encode_ipam(ipam: sriov_pb2.SriovIpam) -> dict[str, Any]:
    out: dict[str, Any] = {"type": ipam.type}
    for key, attr in (
        ("subnet", "subnet"),
        ("rangeStart", "range_start"),
        ("rangeEnd", "range_end"),
        ("gateway", "gateway"),
    ):
        if getattr(ipam, attr):
            out[key] = getattr(ipam, attr)
    if ipam.addresses:
        out["addresses"] = [
            {"address": a.address, **({"gateway": a.gateway} if a.gateway else {})} for a in ipam.addresses
        ]
    if ipam.routes:
        out["routes"] = [{"dst": r.dst, **({"gw": r.gw} if r.gw else {})} for r in ipam.routes]
    return out


CODEC = Codec(
    kind="SriovNetwork",
    message=sriov_pb2.SriovNetwork,
    shapes={API_VERSION: Shape(decode), "v1": Shape(decode)},
    encode=encode,
    validate=validation.validate_sriov_network,
)
