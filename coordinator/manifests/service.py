"""The Service kind: v1, v1beta3 (``portalIP``, ``publicIPs``) and 2014's flat v1beta1.

    {"kind": "Service", "apiVersion": "v1beta1", "id": "frontend", "labels": {...},
     "port": 80, "containerPort": 80, "protocol": "TCP", "selector": {"name": "apache"},
     "publicIPs": ["192.168.2.15"], "portalIP": "10.254.0.10"}

v1beta1's single port becomes one ServicePort (``containerPort`` is its
target, a number or a container port's name); its ``ports`` list, when
given, is read instead and the flat fields must agree with its first entry,
as Kubernetes' conversion had it. ``publicIPs`` are the external IPs and
``portalIP`` the cluster IP.

One difference from v1beta1: a service without ``containerPort`` targets the
same port number on the pods (v1's rule), not the container's first port.

``type`` is ClusterIP (the default), NodePort or LoadBalancer; each port of
the last two has a ``nodePort``, allocated by the coordinator when left out.
Atoll provisions no load balancers: a LoadBalancer service is served as a
NodePort one and its status says so (v1beta1/v1beta3's
``createExternalLoadBalancer: true`` is one too, as Kubernetes converted it).
The load balancer's own fields are refused by name, and so is ExternalName.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from atoll import validation
from atoll.v1 import workloads_pb2
from coordinator.manifests import meta, words
from coordinator.manifests.reader import INT32, Fields, Schema, Value
from coordinator.manifests.registry import Codec, Shape, Sniff, rules, translator

NO_LOAD_BALANCERS = (
    "Atoll provisions no load balancers: a LoadBalancer service is served on every node's "
    "addresses on its node ports, as a NodePort service"
)
_IPV4_ONLY = "Atoll services are IPv4"

SERVICE = Schema.of(known=("apiVersion", "kind", "metadata", "spec"), ignored=("status",))
SERVICE_TYPE: dict[str, workloads_pb2.ServiceType] = {
    "ClusterIP": workloads_pb2.SERVICE_TYPE_UNSPECIFIED,  # what a service without a type is
    "NodePort": workloads_pb2.SERVICE_TYPE_NODE_PORT,
    "LoadBalancer": workloads_pb2.SERVICE_TYPE_LOAD_BALANCER,
}
SERVICE_TYPE_WORD = {
    workloads_pb2.SERVICE_TYPE_UNSPECIFIED: "ClusterIP",
    workloads_pb2.SERVICE_TYPE_CLUSTER_IP: "ClusterIP",
    workloads_pb2.SERVICE_TYPE_NODE_PORT: "NodePort",
    workloads_pb2.SERVICE_TYPE_LOAD_BALANCER: "LoadBalancer",
}
SERVICE_SPEC = Schema.of(
    known=("selector", "ports", "clusterIP", "externalIPs", "sessionAffinity", "type"),
    unsupported={
        "clusterIPs": "set clusterIP",
        "loadBalancerIP": NO_LOAD_BALANCERS,
        "loadBalancerSourceRanges": NO_LOAD_BALANCERS,
        "loadBalancerClass": NO_LOAD_BALANCERS,
        "allocateLoadBalancerNodePorts": NO_LOAD_BALANCERS,
        "healthCheckNodePort": NO_LOAD_BALANCERS,
        "externalName": "",
        "externalTrafficPolicy": "",
        "internalTrafficPolicy": "",
        "publishNotReadyAddresses": "",
        "sessionAffinityConfig": "",
        "trafficDistribution": "",
        "ipFamilies": _IPV4_ONLY,
        "ipFamilyPolicy": _IPV4_ONLY,
    },
)
SERVICE_SPEC_V1BETA3 = Schema(
    SERVICE_SPEC.known | {"portalIP", "publicIPs", "createExternalLoadBalancer"},
    SERVICE_SPEC.unsupported,
    SERVICE_SPEC.ignored,
)
SERVICE_PORT = Schema.of(
    known=("name", "protocol", "port", "targetPort", "nodePort"),
    unsupported={"appProtocol": ""},
)

_FLAT_PORT = ("port", "portName", "protocol", "containerPort")
SERVICE_V1BETA1 = Schema.of(
    known=meta.LEGACY_META_FIELDS
    | {*_FLAT_PORT, "ports", "selector", "publicIPs", "portalIP", "sessionAffinity"}
    | {"createExternalLoadBalancer"},
    unsupported=meta.LEGACY_META_UNSUPPORTED,
    # "assigned by the master and ignored on input" (v1beta1's own words).
    ignored=meta.LEGACY_META_IGNORED | {"proxyPort"},
)
SERVICE_PORT_V1BETA1 = Schema.of(known=("name", "protocol", "port", "containerPort"))

_UNSUPPORTED_TYPES = {
    "ExternalName": "Atoll does not support ExternalName services (DNS aliases)",
}


# -- v1 and v1beta3


def decode_v1(root: Value) -> workloads_pb2.Service:
    return _decode(root, SERVICE_SPEC)


def decode_v1beta3(root: Value) -> workloads_pb2.Service:
    return _decode(root, SERVICE_SPEC_V1BETA3)


def _decode(root: Value, schema: Schema) -> workloads_pb2.Service:
    f = root.fields(SERVICE)
    svc = workloads_pb2.Service(metadata=meta.decode(f.get("metadata")), spec=workloads_pb2.ServiceSpec())
    sf = f.child_fields("spec", schema)
    spec = svc.spec
    if v := sf.get("selector"):
        spec.selector.update(v.string_map())
    for item in v.elements() if (v := sf.get("ports")) else []:
        fields = item.fields(SERVICE_PORT)
        port = _port(fields.get, "targetPort")
        if v := fields.get("nodePort"):
            port.node_port = v.integer(INT32)
        spec.ports.append(port)
    if v := sf.get("clusterIP") or sf.get("portalIP"):
        spec.cluster_ip = v.string()
    if v := sf.get("externalIPs") or sf.get("publicIPs"):
        spec.external_ips.extend(v.strings())
    if v := sf.get("sessionAffinity"):
        spec.session_affinity = v.string()
    if v := sf.get("type"):
        spec.type = _type(v)
    _load_balancer(sf.get("createExternalLoadBalancer"), spec)
    return svc


def _type(value: Value) -> workloads_pb2.ServiceType:
    kind = value.string()
    if kind in _UNSUPPORTED_TYPES:
        value.fail(_UNSUPPORTED_TYPES[kind])
    return value.word(SERVICE_TYPE)


def _load_balancer(value: Value | None, spec: workloads_pb2.ServiceSpec) -> None:
    """v1beta1/v1beta3's ``createExternalLoadBalancer: true`` is v1's ``type: LoadBalancer``."""
    if value is not None and value.boolean():
        spec.type = workloads_pb2.SERVICE_TYPE_LOAD_BALANCER


def _port(get: Callable[[str], Value | None], target_key: str) -> workloads_pb2.ServicePort:
    """One port; ``get`` reads its fields (a ports entry's, or v1beta1's flat ones)."""
    port = workloads_pb2.ServicePort()
    if v := get("name"):
        port.name = v.string()
    if v := get("protocol"):
        port.protocol = v.word(words.PROTOCOL)
    if v := get("port"):
        port.port = v.integer(INT32)
    if v := get(target_key):
        _target(v, port)
    return port


def _target(value: Value, port: workloads_pb2.ServicePort) -> None:
    """A port number, or the name of a container port (Kubernetes' IntOrString)."""
    if isinstance(value.raw, str):
        port.target_port_name = value.raw
    elif isinstance(value.raw, int | float) and not isinstance(value.raw, bool):
        port.target_port = value.integer(INT32)
    else:
        value.expected("a port number or a container port's name")


# -- v1beta1


def decode_v1beta1(root: Value) -> workloads_pb2.Service:
    f = root.fields(SERVICE_V1BETA1)
    svc = workloads_pb2.Service(metadata=meta.decode_legacy(f), spec=workloads_pb2.ServiceSpec())
    spec = svc.spec
    if v := f.get("selector"):
        spec.selector.update(v.string_map())
    if v := f.get("portalIP"):
        spec.cluster_ip = v.string()
    if v := f.get("publicIPs"):
        spec.external_ips.extend(v.strings())
    if v := f.get("sessionAffinity"):
        spec.session_affinity = v.string()
    _load_balancer(f.get("createExternalLoadBalancer"), spec)
    flat = None
    if any(f.get(key) for key in _FLAT_PORT):
        flat = _port(lambda key: f.get("portName" if key == "name" else key), "containerPort")
    listed = [_port(item.fields(SERVICE_PORT_V1BETA1).get, "containerPort") for item in _listed(f)]
    if listed:
        spec.ports.extend(listed)
        if flat is not None:
            _agree(f, flat, listed[0])
    elif flat is not None:
        spec.ports.append(flat)
    return svc


def _listed(f: Fields) -> list[Value]:
    return v.elements() if (v := f.get("ports")) else []


def _agree(f: Fields, flat: workloads_pb2.ServicePort, first: workloads_pb2.ServicePort) -> None:
    """The flat fields may repeat ports[0] (Kubernetes wrote both), not contradict it."""
    flat, first = _defaulted(flat), _defaulted(first)
    checks = (
        ("port", flat.port == first.port),
        ("portName", flat.name == first.name),
        ("protocol", flat.protocol == first.protocol),
        (
            "containerPort",
            (flat.target_port, flat.target_port_name) == (first.target_port, first.target_port_name),
        ),
    )
    for key, same in checks:
        if (v := f.get(key)) and not same:
            v.fail("conflicts with ports[0]; write the port once, in ports or in the top-level fields")


def _defaulted(port: workloads_pb2.ServicePort) -> workloads_pb2.ServicePort:
    """The port as the server will store it: TCP, and targeting its own number if nothing else."""
    svc = workloads_pb2.Service(spec=workloads_pb2.ServiceSpec(ports=[port]))
    validation.default_service(svc)
    return svc.spec.ports[0]


_V1BETA1_COMMON = (
    *meta.LEGACY_META_PATHS,
    (r"spec\.selector", "selector"),
    (r"spec\.clusterIP", "portalIP"),
    (r"spec\.externalIPs", "publicIPs"),
    (r"spec\.sessionAffinity", "sessionAffinity"),
)
_V1BETA1_LISTED = translator(
    rules(
        *_V1BETA1_COMMON,
        (r"spec\.ports\[(\d+)\]\.targetPort", r"ports[\1].containerPort"),
        (r"spec\.ports", "ports"),
    )
)
_V1BETA1_FLAT = translator(
    rules(
        *_V1BETA1_COMMON,
        (r"spec\.ports\[0\]\.targetPort", "containerPort"),
        (r"spec\.ports\[0\]\.name", "portName"),
        (r"spec\.ports\[0\]\.(port|protocol)", r"\1"),
        (r"spec\.ports(?:\[0\])?", "port"),
    )
)


def v1beta1_paths(root: Value) -> Callable[[str], str]:
    """v1 paths -> this document's: into ``ports`` if it lists its ports, else the flat fields."""
    raw = root.raw
    listed = isinstance(raw, dict) and isinstance(raw.get("ports"), list) and raw["ports"]
    return _V1BETA1_LISTED if listed else _V1BETA1_FLAT


v1_to_v1beta3 = translator(
    rules((r"spec\.clusterIP", "spec.portalIP"), (r"spec\.externalIPs", "spec.publicIPs"))
)


# -- output


def encode(svc: workloads_pb2.Service) -> dict[str, Any]:
    s = svc.spec
    spec: dict[str, Any] = {}
    if s.selector:
        spec["selector"] = dict(sorted(s.selector.items()))
    if s.ports:
        spec["ports"] = [encode_port(p) for p in s.ports]
    if s.cluster_ip:
        spec["clusterIP"] = s.cluster_ip
    spec["type"] = SERVICE_TYPE_WORD.get(s.type, "ClusterIP")
    if s.external_ips:
        spec["externalIPs"] = list(s.external_ips)
    if s.session_affinity:
        spec["sessionAffinity"] = s.session_affinity
    out = {"apiVersion": "v1", "kind": "Service", "metadata": meta.encode(svc.metadata), "spec": spec}
    if svc.HasField("status"):  # written by the server; a manifest read from a file has none
        out["status"] = encode_status(svc.status)
    return out


def encode_status(status: workloads_pb2.ServiceStatus) -> dict[str, Any]:
    """Kubernetes' shape: ``loadBalancer: {}`` while there is none, then the conditions."""
    balancer: dict[str, Any] = {}
    if status.load_balancer.ingress:
        balancer["ingress"] = [
            {k: v for k, v in (("ip", i.ip), ("hostname", i.hostname)) if v}
            for i in status.load_balancer.ingress
        ]
    out: dict[str, Any] = {"loadBalancer": balancer}
    if status.conditions:
        out["conditions"] = [_condition(c) for c in status.conditions]
    return out


def _condition(c: workloads_pb2.ServiceCondition) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": c.type,
        "status": words.word(words.CONDITION_STATUS_WORD, c.status) or "Unknown",
    }
    if c.observed_generation:
        out["observedGeneration"] = c.observed_generation
    if c.HasField("last_transition_time"):
        out["lastTransitionTime"] = meta.encode_time(c.last_transition_time)
    if c.reason:
        out["reason"] = c.reason
    if c.message:
        out["message"] = c.message
    return out


def encode_port(p: workloads_pb2.ServicePort) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.name:
        out["name"] = p.name
    if protocol := words.word(words.PROTOCOL_WORD, p.protocol):
        out["protocol"] = protocol
    out["port"] = p.port
    if p.node_port:
        out["nodePort"] = p.node_port
    # A name wins over a number: only one can be written (validation refuses both).
    if p.target_port_name:
        out["targetPort"] = p.target_port_name
    elif p.target_port:
        out["targetPort"] = p.target_port
    return out


def _validate(svc: workloads_pb2.Service) -> validation.Problems:
    defaulted = workloads_pb2.Service()
    defaulted.CopyFrom(svc)
    validation.default_service(defaulted)
    return validation.validate_service(defaulted)


def _is_2014_service(raw: Mapping[str, object]) -> bool:
    """api/examples/service.json, mid-2014: no kind, a top-level port and selector."""
    return "port" in raw and "selector" in raw


_V1BETA1 = Shape(decode_v1beta1, paths_for=v1beta1_paths)

CODEC = Codec(
    kind="Service",
    message=workloads_pb2.Service,
    shapes={
        "v1": Shape(decode_v1),
        "v1beta3": Shape(decode_v1beta3, v1_to_v1beta3),
        "v1beta2": _V1BETA1,
        "v1beta1": _V1BETA1,
    },
    encode=encode,
    validate=_validate,
    sniffs=(Sniff(_is_2014_service, _V1BETA1),),
)
