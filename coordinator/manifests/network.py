"""The Network kind: the cluster's overlay, one object named "default". Two input shapes.

The v1 shape, like every other kind::

    apiVersion: v1
    kind: Network
    metadata: {name: default}
    spec: {network: 10.100.0.0/16, subnetLen: 24, backend: {type: vxlan, vni: 1}}

and flannel's own net-conf.json, unchanged, so that operators moving from
flannel keep their file (it has no kind: its top-level ``Network`` says what
it is)::

    {"Network": "10.100.0.0/16", "SubnetLen": 24, "SubnetMin": "10.100.50.0",
     "SubnetMax": "10.100.199.0", "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}}

Errors in a net-conf.json name flannel's keys (``Backend.VNI``). Keys are
matched exactly, with a "did you mean" for other spellings (flannel's Go
decoder ignores case; Atoll does not guess). ``MTU`` and ``IPMasq`` are Atoll
additions: flannel takes those as flags.

`netconf.network_from_flannel_json` is what ``coordinator serve --network-config`` reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from atoll import validation
from atoll.v1 import network_pb2
from coordinator.manifests import meta
from coordinator.manifests.reader import INT32, Fields, Schema, Value
from coordinator.manifests.registry import Codec, Shape, Sniff, rules, translator

_IPV4_ONLY = "Atoll's overlay is IPv4 only"
_VXLAN_ONLY = "Atoll's vxlan backend has no such option"

NETWORK = Schema.of(known=("apiVersion", "kind", "metadata", "spec"))
NETWORK_SPEC = Schema.of(
    known=("network", "subnetLen", "subnetMin", "subnetMax", "backend", "mtu", "ipMasq"),
    unsupported={
        "ipv6Network": _IPV4_ONLY,
        "ipv6SubnetLen": _IPV4_ONLY,
        "ipv6SubnetMin": _IPV4_ONLY,
        "ipv6SubnetMax": _IPV4_ONLY,
        "enableIPv6": _IPV4_ONLY,
        "networks": "give one network",
    },
    origin="flannel",
)
BACKEND = Schema.of(
    known=("type", "vni", "port"),
    unsupported=dict.fromkeys(("gbp", "learning", "directRouting", "macPrefix"), _VXLAN_ONLY),
    origin="flannel",
)

FLANNEL = Schema.of(
    known=("Network", "SubnetLen", "SubnetMin", "SubnetMax", "Backend", "MTU", "IPMasq", "EnableIPv4"),
    unsupported={
        **dict.fromkeys(
            ("IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax", "EnableIPv6", "IPv6Networks"),
            _IPV4_ONLY,
        ),
        "Networks": "give one Network",
        "EnableNFTables": "",
    },
    origin="flannel",
)
FLANNEL_BACKEND = Schema.of(
    known=("Type", "VNI", "Port"),
    unsupported={
        **dict.fromkeys(("GBP", "Learning", "DirectRouting", "MacPrefix"), _VXLAN_ONLY),
        "MTU": "set MTU at the top level",
    },
    origin="flannel",
)

# v1 spec field -> flannel's key.
_FLANNEL_KEYS = {
    "network": "Network",
    "subnetLen": "SubnetLen",
    "subnetMin": "SubnetMin",
    "subnetMax": "SubnetMax",
    "backend": "Backend",
    "mtu": "MTU",
    "ipMasq": "IPMasq",
}
_FLANNEL_BACKEND_KEYS = {"type": "Type", "vni": "VNI", "port": "Port"}


def decode_v1(root: Value) -> network_pb2.Network:
    f = root.fields(NETWORK)
    net = network_pb2.Network(metadata=meta.decode(f.get("metadata")))
    net.spec.CopyFrom(_spec(f.child_fields("spec", NETWORK_SPEC), BACKEND, _same, _same))
    net.spec.SetInParent()
    return net


def decode_flannel(root: Value) -> network_pb2.Network:
    f = root.fields(FLANNEL)
    if (v := f.get("EnableIPv4")) and not v.boolean():
        v.fail(f"{_IPV4_ONLY}: it cannot be turned off")
    net = network_pb2.Network(
        spec=_spec(f, FLANNEL_BACKEND, _FLANNEL_KEYS.__getitem__, _FLANNEL_BACKEND_KEYS.__getitem__)
    )
    net.metadata.name = validation.DEFAULT_NETWORK_NAME
    return net


def _same(key: str) -> str:
    return key


def _spec(
    f: Fields, backend_schema: Schema, key: Callable[[str], str], backend_key: Callable[[str], str]
) -> network_pb2.NetworkSpec:
    """The spec from v1's keys or flannel's: ``key`` and ``backend_key`` name a v1 key in this shape."""
    spec = network_pb2.NetworkSpec()
    if v := f.get(key("network")):
        spec.network = v.string()
    if v := f.get(key("subnetLen")):
        spec.subnet_len = v.integer((0, 32))
    if v := f.get(key("subnetMin")):
        spec.subnet_min = v.string()
    if v := f.get(key("subnetMax")):
        spec.subnet_max = v.string()
    if v := f.get(key("mtu")):
        spec.mtu = v.integer(INT32)
    if v := f.get(key("ipMasq")):
        spec.ip_masq = v.boolean()
    if v := f.get(key("backend")):
        bf = v.fields(backend_schema)
        spec.backend.SetInParent()
        if x := bf.get(backend_key("type")):
            spec.backend.type = x.string()
        if x := bf.get(backend_key("vni")):
            # 0 would silently mean the default VNI 1: refuse it where it was written.
            spec.backend.vni = x.integer((1, validation.VNI_MAX))
        if x := bf.get(backend_key("port")):
            spec.backend.port = x.integer(INT32)
    return spec


v1_to_flannel = translator(
    rules(
        *((rf"spec\.backend\.{k}", f"Backend.{v}") for k, v in _FLANNEL_BACKEND_KEYS.items()),
        *((rf"spec\.{k}", v) for k, v in _FLANNEL_KEYS.items()),
    )
)


def encode(net: network_pb2.Network) -> dict[str, Any]:
    s = net.spec
    spec: dict[str, Any] = {
        key: value
        for key, value in (
            ("network", s.network),
            ("subnetLen", s.subnet_len),
            ("subnetMin", s.subnet_min),
            ("subnetMax", s.subnet_max),
        )
        if value
    }
    if s.HasField("backend"):
        spec["backend"] = {
            k: v for k, v in (("type", s.backend.type), ("vni", s.backend.vni), ("port", s.backend.port)) if v
        }
    if s.mtu:
        spec["mtu"] = s.mtu
    if s.HasField("ip_masq"):
        spec["ipMasq"] = s.ip_masq
    return {"apiVersion": "v1", "kind": "Network", "metadata": meta.encode(net.metadata), "spec": spec}


def _validate(net: network_pb2.Network) -> validation.Problems:
    defaulted = network_pb2.Network()
    defaulted.CopyFrom(net)
    validation.default_network(defaulted.spec)
    return validation.validate_network_object(defaulted)


def _is_flannel(raw: Mapping[str, object]) -> bool:
    return "Network" in raw


CODEC = Codec(
    kind="Network",
    message=network_pb2.Network,
    shapes={"v1": Shape(decode_v1)},
    encode=encode,
    validate=_validate,
    sniffs=(Sniff(_is_flannel, Shape(decode_flannel, v1_to_flannel)),),
)
