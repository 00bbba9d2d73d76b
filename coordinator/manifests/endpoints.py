"""The Endpoints kind (v1): the addresses behind a service, written by Atoll's endpoints controller.

Decoding exists so that ``get -o yaml`` output can be edited and fed back,
and for services without a selector, whose endpoints an operator writes.
"""

from __future__ import annotations

from typing import Any

from atoll import validation
from atoll.v1 import workloads_pb2
from coordinator.manifests import meta, words
from coordinator.manifests.reader import INT32, Schema, Value
from coordinator.manifests.registry import Codec, Shape

ENDPOINTS = Schema.of(known=("apiVersion", "kind", "metadata", "subsets"))
SUBSET = Schema.of(known=("addresses", "notReadyAddresses", "ports"))
ADDRESS = Schema.of(known=("ip", "nodeName", "targetRef"), unsupported=("hostname",))
PORT = Schema.of(known=("name", "port", "protocol"), unsupported=("appProtocol",))


def decode_v1(root: Value) -> workloads_pb2.Endpoints:
    f = root.fields(ENDPOINTS)
    ep = workloads_pb2.Endpoints(metadata=meta.decode(f.get("metadata")))
    for item in v.elements() if (v := f.get("subsets")) else []:
        sf = item.fields(SUBSET)
        subset = ep.subsets.add()
        for x in a.elements() if (a := sf.get("addresses")) else []:
            subset.addresses.append(_address(x))
        for x in a.elements() if (a := sf.get("notReadyAddresses")) else []:
            subset.not_ready_addresses.append(_address(x))
        for x in a.elements() if (a := sf.get("ports")) else []:
            pf = x.fields(PORT)
            port = subset.ports.add()
            if v := pf.get("name"):
                port.name = v.string()
            if v := pf.get("port"):
                port.port = v.integer(INT32)
            if v := pf.get("protocol"):
                port.protocol = v.word(words.PROTOCOL)
    return ep


def _address(value: Value) -> workloads_pb2.EndpointAddress:
    f = value.fields(ADDRESS)
    addr = workloads_pb2.EndpointAddress()
    if v := f.get("ip"):
        addr.ip = v.string()
    if v := f.get("nodeName"):
        addr.node_name = v.string()
    if v := f.get("targetRef"):
        addr.target_ref.CopyFrom(meta.decode_reference(v))
    return addr


def encode(ep: workloads_pb2.Endpoints) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": meta.encode(ep.metadata),
        "subsets": [_subset(s) for s in ep.subsets],
    }


def _subset(s: workloads_pb2.EndpointSubset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if s.addresses:
        out["addresses"] = [_encode_address(a) for a in s.addresses]
    if s.not_ready_addresses:
        out["notReadyAddresses"] = [_encode_address(a) for a in s.not_ready_addresses]
    if s.ports:
        out["ports"] = [
            ({"name": p.name} if p.name else {})
            | {"port": p.port}
            | ({"protocol": word} if (word := words.word(words.PROTOCOL_WORD, p.protocol)) else {})
            for p in s.ports
        ]
    return out


def _encode_address(a: workloads_pb2.EndpointAddress) -> dict[str, Any]:
    out: dict[str, Any] = {"ip": a.ip}
    if a.node_name:
        out["nodeName"] = a.node_name
    if a.HasField("target_ref"):
        out["targetRef"] = meta.encode_reference(a.target_ref)
    return out


def _validate(ep: workloads_pb2.Endpoints) -> validation.Problems:
    defaulted = workloads_pb2.Endpoints()
    defaulted.CopyFrom(ep)
    validation.default_endpoints(defaulted)
    return validation.validate_endpoints(defaulted)


CODEC = Codec(
    kind="Endpoints",
    message=workloads_pb2.Endpoints,
    shapes={"v1": Shape(decode_v1)},
    encode=encode,
    validate=_validate,
)
