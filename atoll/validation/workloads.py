"""Replication controllers, services, endpoints and events."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from atoll.v1 import meta_pb2, pod_pb2, workloads_pb2
from atoll.validation.core import (
    DEFAULT_NAMESPACE,
    DNS1123_LABEL,
    Problems,
    check_labels,
    check_name,
    check_port,
    is_ip,
    is_ipv4,
    validate_meta,
)
from atoll.validation.pods import default_pod_spec, validate_pod_spec
from atoll.validation.text import check_object

# -- replication controllers -----------------------------------------------------------------

_RESTART_WORDS = {
    pod_pb2.RESTART_POLICY_ALWAYS: "Always",
    pod_pb2.RESTART_POLICY_ON_FAILURE: "OnFailure",
    pod_pb2.RESTART_POLICY_NEVER: "Never",
}


def default_replication_controller(rc: workloads_pb2.ReplicationController) -> None:
    """Kubernetes' v1 defaults: one replica, and the selector and the controller's own labels
    taken from the template's labels; the template's pod spec is defaulted like a pod's."""
    if not rc.metadata.namespace:
        rc.metadata.namespace = DEFAULT_NAMESPACE
    spec = rc.spec
    if not spec.HasField("replicas"):
        spec.replicas = 1
    if not spec.HasField("template"):
        return  # nothing to take defaults from; validation says the template is missing
    template_labels = spec.template.metadata.labels
    if not spec.selector:
        spec.selector.update(template_labels)
    if not rc.metadata.labels:
        rc.metadata.labels.update(template_labels)
    default_pod_spec(spec.template.spec)


def validate_replication_controller(rc: workloads_pb2.ReplicationController) -> Problems:
    p = Problems()
    validate_meta(p, rc.metadata, namespaced=True)
    spec = rc.spec
    if spec.replicas < 0:
        p.add("spec.replicas", f"must not be negative, got {spec.replicas}")
    check_labels(p, "spec.selector", spec.selector)
    if not spec.HasField("template"):
        p.add("spec.template", "is required: it describes the pods to run")
        check_object(p, rc)
        return p
    template = spec.template
    check_labels(p, "spec.template.metadata.labels", template.metadata.labels)
    if not spec.selector:
        p.add("spec.selector", "is required: set it, or give the template labels to select its pods by")
    elif any(template.metadata.labels.get(k) != v for k, v in spec.selector.items()):
        # The controller would never count the pods it creates, and create more forever.
        p.add(
            "spec.template.metadata.labels",
            f"selector {_selector_text(spec.selector)} does not match template labels "
            f"{_selector_text(template.metadata.labels) or '(none)'}",
        )
    validate_pod_spec(p, template.spec, "spec.template.spec")
    policy = template.spec.restart_policy
    if policy not in (pod_pb2.RESTART_POLICY_ALWAYS, pod_pb2.RESTART_POLICY_UNSPECIFIED):
        p.add(
            "spec.template.spec.restartPolicy",
            f"must be Always for a replication controller's pods, got {_RESTART_WORDS.get(policy, policy)}",
        )
    check_object(p, rc)
    return p


def _selector_text(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


# -- services --------------------------------------------------------------------------------

SESSION_AFFINITIES = ("None", "ClientIP")
HEADLESS = "None"


def default_service(svc: workloads_pb2.Service) -> None:
    """TCP ports whose target is the same port number on the pods, and no session affinity."""
    if not svc.metadata.namespace:
        svc.metadata.namespace = DEFAULT_NAMESPACE
    for port in svc.spec.ports:
        if port.protocol == meta_pb2.PROTOCOL_UNSPECIFIED:
            port.protocol = meta_pb2.PROTOCOL_TCP
        if not port.target_port and not port.target_port_name:
            port.target_port = port.port
    if not svc.spec.session_affinity:
        svc.spec.session_affinity = "None"


def validate_service(svc: workloads_pb2.Service) -> Problems:
    p = Problems()
    # The name becomes a DNS name (NAME.NAMESPACE...), so it is one label.
    validate_meta(p, svc.metadata, namespaced=True, label_name=True)
    spec = svc.spec
    check_labels(p, "spec.selector", spec.selector)
    if not spec.ports:
        p.add("spec.ports", "must have at least one port")
    names: set[str] = set()
    seen: set[tuple[int, int]] = set()
    node_ports: set[tuple[int, int]] = set()
    with_node_ports = spec.type in _NODE_PORT_TYPES
    if spec.type not in _SERVICE_TYPES:
        p.add("spec.type", f"unknown service type {spec.type}")
    for i, port in enumerate(spec.ports):
        pf = f"spec.ports[{i}]"
        if port.name:
            if len(port.name) > 63 or not DNS1123_LABEL.fullmatch(port.name):
                p.add(f"{pf}.name", f"{port.name!r} must be a DNS-1123 label")
            elif port.name in names:
                p.add(f"{pf}.name", f"duplicate port name {port.name!r}")
            names.add(port.name)
        elif len(spec.ports) > 1:
            # Endpoints and clients tell the ports apart by name.
            p.add(f"{pf}.name", "is required when the service has more than one port")
        check_port(p, f"{pf}.port", port.port)
        if (port.port, port.protocol) in seen:
            p.add(f"{pf}.port", f"port {port.port}/{_PROTOCOLS.get(port.protocol, '?')} is listed twice")
        seen.add((port.port, port.protocol))
        if port.protocol not in _PROTOCOLS:
            p.add(f"{pf}.protocol", f"unknown protocol {port.protocol}")
        if port.target_port_name:
            if port.target_port:
                p.add(f"{pf}.targetPort", "must be a port number or a container port name, not both")
            else:
                _target_port_name(p, f"{pf}.targetPort", port.target_port_name)
        else:
            check_port(p, f"{pf}.targetPort", port.target_port)
        if port.node_port:
            _node_port(p, f"{pf}.nodePort", port, with_node_ports, node_ports)
    ip = spec.cluster_ip
    if ip and ip != HEADLESS and not is_ipv4(ip):
        p.add(
            "spec.clusterIP",
            f"{ip!r} must be empty (allocated), None (a headless service) or an IPv4 address",
        )
    if with_node_ports and ip == HEADLESS:
        p.add("spec.clusterIP", "may not be None (headless) on a NodePort or LoadBalancer service")
    external: set[str] = set()
    for i, addr in enumerate(spec.external_ips):
        problem = _external_ip_problem(addr)
        if problem:
            p.add(f"spec.externalIPs[{i}]", problem)
        elif addr in external:
            p.add(f"spec.externalIPs[{i}]", f"{addr} is listed twice")
        external.add(addr)
    if spec.session_affinity not in SESSION_AFFINITIES:
        p.add("spec.sessionAffinity", f'must be "None" or "ClientIP", got {spec.session_affinity!r}')
    check_object(p, svc)
    return p


_PROTOCOLS: dict[int, str] = {
    meta_pb2.PROTOCOL_TCP: "TCP",
    meta_pb2.PROTOCOL_UDP: "UDP",
    meta_pb2.PROTOCOL_SCTP: "SCTP",
}


_SERVICE_TYPES = (
    workloads_pb2.SERVICE_TYPE_UNSPECIFIED,
    workloads_pb2.SERVICE_TYPE_CLUSTER_IP,
    workloads_pb2.SERVICE_TYPE_NODE_PORT,
    workloads_pb2.SERVICE_TYPE_LOAD_BALANCER,
)
_NODE_PORT_TYPES = (workloads_pb2.SERVICE_TYPE_NODE_PORT, workloads_pb2.SERVICE_TYPE_LOAD_BALANCER)


def _node_port(
    p: Problems, field: str, port: workloads_pb2.ServicePort, allowed: bool, seen: set[tuple[int, int]]
) -> None:
    """A node port asked for by number; whether it is in the coordinator's range and free is the
    allocator's to say (coordinator.network.nodeports)."""
    if not allowed:
        p.add(field, "may only be set on NodePort and LoadBalancer services")
        return
    check_port(p, field, port.node_port)
    if (port.node_port, port.protocol) in seen:
        p.add(field, f"node port {port.node_port}/{_PROTOCOLS.get(port.protocol, '?')} is listed twice")
    seen.add((port.node_port, port.protocol))


def _target_port_name(p: Problems, field: str, name: str) -> None:
    if name.isdigit():
        p.add(field, f"{name!r} is a number written as text: write it without quotes for a port number")
    elif len(name) > 15 or not DNS1123_LABEL.fullmatch(name):
        # It names a container port, whose names are at most 15 characters (IANA service names).
        p.add(field, f"{name!r} must be a container port's name: at most 15 of [a-z0-9-]")


def _external_ip_problem(value: str) -> str:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address"
    # Nodes cannot accept outside traffic on these, and the proxy's rules would capture local traffic.
    if addr.is_unspecified or addr.is_loopback or addr.is_link_local or addr.is_multicast:
        return f"{value} cannot be an external IP (unspecified, loopback, link-local or multicast)"
    return ""


# -- endpoints and events --------------------------------------------------------------------


def default_endpoints(ep: workloads_pb2.Endpoints) -> None:
    if not ep.metadata.namespace:
        ep.metadata.namespace = DEFAULT_NAMESPACE
    for subset in ep.subsets:
        for port in subset.ports:
            if port.protocol == meta_pb2.PROTOCOL_UNSPECIFIED:
                port.protocol = meta_pb2.PROTOCOL_TCP


def validate_endpoints(ep: workloads_pb2.Endpoints) -> Problems:
    p = Problems()
    validate_meta(p, ep.metadata, namespaced=True)
    for i, subset in enumerate(ep.subsets):
        sf = f"subsets[{i}]"
        for key, addresses in (
            ("addresses", subset.addresses),
            ("notReadyAddresses", subset.not_ready_addresses),
        ):
            for j, addr in enumerate(addresses):
                af = f"{sf}.{key}[{j}]"
                if not is_ip(addr.ip):
                    p.add(f"{af}.ip", f"{addr.ip!r} is not an IP address")
                if addr.node_name:
                    check_name(p, f"{af}.nodeName", addr.node_name)
                if addr.HasField("target_ref") and not (addr.target_ref.kind and addr.target_ref.name):
                    p.add(f"{af}.targetRef", "needs a kind and a name")
        names: set[str] = set()
        for j, port in enumerate(subset.ports):
            pf = f"{sf}.ports[{j}]"
            check_port(p, f"{pf}.port", port.port)
            if port.name:
                if len(port.name) > 63 or not DNS1123_LABEL.fullmatch(port.name):
                    p.add(f"{pf}.name", f"{port.name!r} must be a DNS-1123 label")
                elif port.name in names:
                    p.add(f"{pf}.name", f"duplicate port name {port.name!r}")
                names.add(port.name)
            elif len(subset.ports) > 1:
                p.add(f"{pf}.name", "is required when the subset has more than one port")
    check_object(p, ep)
    return p


EVENT_TYPES = ("Normal", "Warning")


def default_event(ev: workloads_pb2.Event) -> None:
    if not ev.metadata.namespace:
        ev.metadata.namespace = DEFAULT_NAMESPACE
    if not ev.type:
        ev.type = "Normal"
    if not ev.count:
        ev.count = 1


def validate_event(ev: workloads_pb2.Event) -> Problems:
    """Light: events are written by Atoll itself; this keeps hand-made ones listable."""
    p = Problems()
    validate_meta(p, ev.metadata, namespaced=True)
    ref = ev.involved_object
    if not ref.kind:
        p.add("involvedObject.kind", "is required")
    if not ref.name:
        p.add("involvedObject.name", "is required")
    # Events about cluster-scoped objects (nodes) live in "default" with no namespace in the reference.
    if ref.namespace and ev.metadata.namespace and ref.namespace != ev.metadata.namespace:
        p.add(
            "involvedObject.namespace",
            f"{ref.namespace!r} does not match the event's namespace {ev.metadata.namespace!r}",
        )
    if ev.type and ev.type not in EVENT_TYPES:
        p.add("type", f'must be "Normal" or "Warning", got {ev.type!r}')
    if ev.count < 0:
        p.add("count", f"must not be negative, got {ev.count}")
    check_object(p, ev)
    return p
