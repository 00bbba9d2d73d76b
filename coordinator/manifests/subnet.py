"""The Subnet kind: a node's lease on one overlay subnet, named after it ("10.100.50.0-24").

The coordinator hands leases out; operators read them (``get subnets``) and
may delete one to free its subnet. Decoding exists for round trips.
"""

from __future__ import annotations

from typing import Any

from atoll import validation
from atoll.v1 import network_pb2
from coordinator.manifests import meta
from coordinator.manifests.reader import INT32, Schema, Value
from coordinator.manifests.registry import Codec, Shape

SUBNET = Schema.of(known=("apiVersion", "kind", "metadata", "spec"))
SUBNET_SPEC = Schema.of(known=("cidr", "nodeName", "publicIP", "vtepMAC", "backendType", "vni", "expiration"))


def decode_v1(root: Value) -> network_pb2.Subnet:
    f = root.fields(SUBNET)
    lease = network_pb2.Subnet(metadata=meta.decode(f.get("metadata")), spec=network_pb2.SubnetSpec())
    sf = f.child_fields("spec", SUBNET_SPEC)
    spec = lease.spec
    if v := sf.get("cidr"):
        spec.cidr = v.string()
    if v := sf.get("nodeName"):
        spec.node_name = v.string()
    if v := sf.get("publicIP"):
        spec.public_ip = v.string()
    if v := sf.get("vtepMAC"):
        spec.vtep_mac = v.string()
    if v := sf.get("backendType"):
        spec.backend_type = v.string()
    if v := sf.get("vni"):
        spec.vni = v.integer(INT32)
    if v := sf.get("expiration"):
        spec.expiration.CopyFrom(v.timestamp())
    return lease


def encode(lease: network_pb2.Subnet) -> dict[str, Any]:
    s = lease.spec
    spec: dict[str, Any] = {
        key: value
        for key, value in (
            ("cidr", s.cidr),
            ("nodeName", s.node_name),
            ("publicIP", s.public_ip),
            ("vtepMAC", s.vtep_mac),
            ("backendType", s.backend_type),
            ("vni", s.vni),
        )
        if value
    }
    if s.HasField("expiration"):
        spec["expiration"] = meta.encode_time(s.expiration)
    return {"apiVersion": "v1", "kind": "Subnet", "metadata": meta.encode(lease.metadata), "spec": spec}


CODEC = Codec(
    kind="Subnet",
    message=network_pb2.Subnet,
    shapes={"v1": Shape(decode_v1)},
    encode=encode,
    validate=validation.validate_subnet,
)
