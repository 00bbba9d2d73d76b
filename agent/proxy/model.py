"""What the proxy needs from a ServiceState, as plain data: one `ServicePort` per service port.

`resolve` does all the interpretation of the API objects (which ports are
served, which endpoints are ready, which external IPs belong to this node),
so that rendering the ruleset (agent.proxy.ruleset) is a pure function of
these values and can be tested without protobufs.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from atoll.v1 import meta_pb2, node_api_pb2, workloads_pb2

#: nft names for the API's protocols (the `meta l4proto` values we match on).
PROTOCOLS = {
    meta_pb2.PROTOCOL_UNSPECIFIED: "tcp",  # unset means TCP, as in Kubernetes
    meta_pb2.PROTOCOL_TCP: "tcp",
    meta_pb2.PROTOCOL_UDP: "udp",
    meta_pb2.PROTOCOL_SCTP: "sctp",
}

# Names end up inside nft chain names, which allow only [A-Za-z0-9/._-]; the
# API's own validation is stricter than this, so anything else is a bug upstream
# and the service is skipped (with a warning) rather than mangled.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?\Z")
# With these caps the longest chain name ("ep-<owner>/sctp/<port name>__<ip>/<port>") is 222 bytes.
_MAX_OWNER = 127
_MAX_PORT_NAME = 63


@dataclass(frozen=True, order=True)
class Endpoint:
    ip: str
    port: int
    # On this node (EndpointAddress.node_name is ours). Only the external-IP
    # path cares: traffic to a remote endpoint is masqueraded there.
    local: bool = False


@dataclass(frozen=True)
class ServicePort:
    """One port of one service, resolved against its Endpoints and this node's addresses."""

    namespace: str
    name: str
    port_name: str  # "" for an unnamed (single) port
    protocol: str  # "tcp", "udp" or "sctp"
    cluster_ip: str
    port: int
    external_ips: tuple[str, ...] = ()  # only the ones this node owns, sorted
    endpoints: tuple[Endpoint, ...] = ()  # ready ones, sorted, no duplicates
    # NodePort and LoadBalancer services: the port served on every address of this node
    # (`node_addresses`, sorted: all its IPv4 addresses but loopback), as kube-proxy's nodeports.
    node_port: int = 0
    node_addresses: tuple[str, ...] = ()

    @property
    def owner(self) -> str:
        """The service, "namespace/name": what reports and element comments name."""
        return f"{self.namespace}/{self.name}"

    @property
    def ident(self) -> str:
        """Unique per service port and valid inside an nft chain name."""
        return f"{self.namespace}/{self.name}/{self.protocol}/{self.port_name or self.port}"


@dataclass(frozen=True)
class Resolved:
    ports: tuple[ServicePort, ...]
    warnings: tuple[str, ...] = ()
    # Services asking for ClientIP affinity, which is not implemented (the caller logs once).
    affinity_ignored: tuple[str, ...] = ()
    # (owner, why) of services, or ports of them, refused here: the agent reports them as events.
    refused: tuple[tuple[str, str], ...] = ()


_WITH_NODE_PORTS = (workloads_pb2.SERVICE_TYPE_NODE_PORT, workloads_pb2.SERVICE_TYPE_LOAD_BALANCER)


@functools.lru_cache(maxsize=65536)  # the same addresses come back with every push
def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _ready_endpoints(
    endpoints: workloads_pb2.Endpoints | None, port: workloads_pb2.ServicePort, node_name: str
) -> tuple[Endpoint, ...]:
    """Ready addresses of every subset that serves `port`, matched by port name.

    Named target ports (`target_port_name`) are already resolved by the
    endpoints controller: each subset lists the number under the service
    port's name, so the proxy never looks at pods.
    """
    if endpoints is None:
        return ()
    protocol = PROTOCOLS.get(port.protocol, "tcp")
    found: set[Endpoint] = set()
    for subset in endpoints.subsets:
        numbers = [
            p.port
            for p in subset.ports
            if p.name == port.name and PROTOCOLS.get(p.protocol, "tcp") == protocol and 0 < p.port < 65536
        ]
        if not numbers:
            continue
        for addr in subset.addresses:  # not_ready_addresses get no traffic
            if _is_ipv4(addr.ip):
                local = bool(node_name) and addr.node_name == node_name
                found.add(Endpoint(addr.ip, numbers[0], local))
    return tuple(sorted(found))


def resolve(
    state: node_api_pb2.ServiceState,
    local_addresses: Iterable[str],
    node_name: str = "",
    reserved_ports: frozenset[int] = frozenset(),
) -> Resolved:
    """Every service port the proxy serves, in a stable order.

    Skipped, with a warning: services without a cluster IP (unallocated, or
    headless "None": kube-proxy ignores those too), non-IPv4 cluster IPs (the
    table is `ip`), names that could not appear in a chain name, ports out of
    range.
    """
    local = {a for a in local_addresses if _is_ipv4(a)}
    # Not loopback: a DNAT from 127.0.0.1 to a pod needs route_localnet (kube-proxy's
    # nftables mode leaves it out too).
    node_addresses = tuple(sorted(a for a in local if not ipaddress.IPv4Address(a).is_loopback))
    endpoints = {(e.metadata.namespace or "default", e.metadata.name): e for e in state.endpoints}
    ports: list[ServicePort] = []
    warnings: list[str] = []
    affinity: list[str] = []
    refused: list[tuple[str, str]] = []

    def refuse(owner: str, why: str) -> None:
        warnings.append(f"{owner!r}: {why}")
        refused.append((owner, why))

    for svc in sorted(state.services, key=lambda s: (s.metadata.namespace, s.metadata.name)):
        ns, name = svc.metadata.namespace or "default", svc.metadata.name
        owner = f"{ns}/{name}"
        spec = svc.spec
        if not spec.cluster_ip or spec.cluster_ip == "None":
            continue  # headless or not allocated yet: nothing to proxy
        if not _is_ipv4(spec.cluster_ip):
            refuse(owner, f"cluster IP {spec.cluster_ip!r} is not IPv4; skipped")
            continue
        # nft caps chain names at 255 bytes and comments at 128: a name the kernel would refuse
        # would fail the whole transaction, every other service's change with it.
        if not (_NAME.fullmatch(ns) and _NAME.fullmatch(name)) or len(owner) > _MAX_OWNER:
            refuse(owner, "name not usable in nft chain names; skipped")
            continue
        if spec.session_affinity == "ClientIP":
            affinity.append(owner)
        externals = tuple(sorted(ip for ip in set(spec.external_ips) if ip in local))
        eps = endpoints.get((ns, name))
        for port in spec.ports:
            bad_name = port.name and (not _NAME.fullmatch(port.name) or len(port.name) > _MAX_PORT_NAME)
            if not 0 < port.port < 65536 or bad_name:
                refuse(owner, f"port {port.name or port.port!r} is invalid; skipped")
                continue
            exposed = externals
            if externals and port.port in reserved_ports:
                # The coordinator refuses these already; a service that got past it (an older
                # coordinator, a bug) still never captures sshd's or an Atoll daemon's port.
                refuse(
                    owner,
                    f"port {port.port} on external IPs {','.join(externals)} is reserved for "
                    "Atoll's daemons and sshd; served on the cluster IP only",
                )
                exposed = ()
            node_port = port.node_port if spec.type in _WITH_NODE_PORTS and 0 < port.node_port < 65536 else 0
            if node_port and node_port in reserved_ports:
                refuse(
                    owner,
                    f"node port {node_port} is reserved for Atoll's daemons and sshd; served on the cluster IP only",
                )
                node_port = 0
            ports.append(
                ServicePort(
                    namespace=ns,
                    name=name,
                    port_name=port.name,
                    protocol=PROTOCOLS.get(port.protocol, "tcp"),
                    cluster_ip=spec.cluster_ip,
                    port=port.port,
                    external_ips=exposed,
                    endpoints=_ready_endpoints(eps, port, node_name),
                    node_port=node_port,
                    node_addresses=node_addresses if node_port else (),
                )
            )
    return Resolved(tuple(ports), tuple(warnings), tuple(affinity), tuple(refused))
