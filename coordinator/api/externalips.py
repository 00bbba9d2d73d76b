"""Who may put a service on an external IP, and on which ports (CVE-2020-8554).

A service's externalIPs make every node that owns one of those addresses
capture traffic to it in nat prerouting and output. Unchecked, an operator
could list a node's own address and take over its sshd, the agent's API or
the coordinator's ports (and, with no endpoints, reset every connection to
them). So:

* addresses: admins may list any; everyone else only addresses inside the
  admin-configured ``service_external_ip_cidrs`` (none by default, so by
  default only admins set external IPs at all);
* ports: no service, an admin's included, may take a port that an Atoll
  daemon or sshd listens on (22, the coordinator's API and token ports, every
  node's agent port). These are refused on every external IP, not only on
  the addresses where the daemons run: the coordinator cannot know every
  address a host answers on, and a refusal is cheap to work around (pick
  another service port) while a capture is not.

Updates are checked only when the external IPs or the ports change, so an
operator may still edit the selector of a service an admin put on an address.
The agent's proxy refuses the same ports again on its own (defence in depth).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from atoll import errors
from atoll.v1 import workloads_pb2

SSH_PORT = 22


@dataclass(frozen=True)
class ExternalIPPolicy:
    allowed_cidrs: tuple[ipaddress.IPv4Network, ...] = ()
    # The ports Atoll's daemons listen on (the coordinator's, every node's agent's), read per
    # check since nodes come and go; sshd's port is always added.
    daemon_ports: Callable[[], Iterable[int]] = tuple

    @classmethod
    def from_config(cls, cidrs: Iterable[str], daemon_ports: Callable[[], Iterable[int]]) -> ExternalIPPolicy:
        networks = []
        for i, cidr in enumerate(cidrs):
            try:
                networks.append(ipaddress.IPv4Network(cidr))
            except ValueError as exc:
                raise errors.InvalidArgument(f"service_external_ip_cidrs[{i}]: {exc}") from None
        return cls(tuple(networks), daemon_ports)

    def reserved(self) -> frozenset[int]:
        return frozenset({SSH_PORT, *self.daemon_ports()})

    def check(
        self,
        svc: workloads_pb2.Service,
        *,
        admin: bool,
        old: workloads_pb2.Service | None = None,
    ) -> None:
        """Raise PermissionDenied (addresses) or InvalidArgument (ports) naming the field."""
        spec = svc.spec
        if not spec.external_ips:
            return
        if old is not None and _exposure(old) == _exposure(svc):
            return
        where = f'service "{svc.metadata.name}" in namespace "{svc.metadata.namespace}"'
        if not admin:
            for i, address in enumerate(spec.external_ips):
                if not any(_inside(address, net) for net in self.allowed_cidrs):
                    allowed = ", ".join(str(n) for n in self.allowed_cidrs) or "none are configured"
                    raise errors.PermissionDenied(
                        f"spec.externalIPs[{i}]: {address} is outside the ranges non-admins may use "
                        f"(service_external_ip_cidrs: {allowed}); {where}"
                    )
        reserved = self.reserved()
        for i, port in enumerate(spec.ports):
            if port.port in reserved:
                raise errors.InvalidArgument(
                    f"port {port.port} is reserved for Atoll's daemons and sshd and cannot be "
                    f"exposed on external IPs; {where}",
                    field=f"spec.ports[{i}].port",
                )


def _exposure(svc: workloads_pb2.Service) -> tuple[tuple[str, ...], tuple[int, ...]]:
    return tuple(sorted(svc.spec.external_ips)), tuple(sorted(p.port for p in svc.spec.ports))


def _inside(address: str, network: ipaddress.IPv4Network) -> bool:
    try:
        return ipaddress.IPv4Address(address) in network
    except ValueError:
        return False
