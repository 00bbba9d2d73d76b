"""Cluster IPs for services, from one range, never handed out twice.

Each allocated address has its own key, `/serviceips/<ip>`, written in the
same transaction as the Service (and deleted with it), so the store itself
guarantees uniqueness: two services racing for one address see one create
fail and try another.
"""

from __future__ import annotations

import ipaddress
import random

from atoll import errors
from atoll.v1 import workloads_pb2
from coordinator.store.base import Op, Store

PREFIX = "/serviceips/"
HEADLESS = "None"


class ServiceIPAllocator:
    def __init__(self, store: Store, cidr: str, rng: random.Random | None = None) -> None:
        self._store = store
        self.range = ipaddress.IPv4Network(cidr)
        if self.range.num_addresses < 4:
            raise errors.InvalidArgument(f"service range {cidr} is too small")
        self._rng = rng or random.Random()

    def _check(self, ip: str) -> None:
        try:
            address = ipaddress.IPv4Address(ip)
        except ValueError:
            raise errors.InvalidArgument(f"{ip!r} is not an IPv4 address", field="spec.clusterIP") from None
        if address not in self.range or address in (self.range.network_address, self.range.broadcast_address):
            raise errors.InvalidArgument(
                f"{ip} is not in the service range {self.range}", field="spec.clusterIP"
            )

    async def claim(self, svc: workloads_pb2.Service, *, fixed: bool) -> Op | None:
        """Pick (or check) the service's cluster IP and return the op that claims it."""
        if svc.spec.cluster_ip == HEADLESS:
            return None
        owner = f"{svc.metadata.namespace}/{svc.metadata.name}".encode()
        if fixed:
            self._check(svc.spec.cluster_ip)
            if await self._store.get(PREFIX + svc.spec.cluster_ip) is not None:
                raise errors.AlreadyExists(
                    f"cluster IP {svc.spec.cluster_ip} is already allocated", field="spec.clusterIP"
                )
            return Op("create", PREFIX + svc.spec.cluster_ip, owner)
        hosts = self.range.num_addresses - 2
        start = self._rng.randrange(hosts)
        for i in range(hosts):
            candidate = str(self.range.network_address + 1 + (start + i) % hosts)
            if await self._store.get(PREFIX + candidate) is None:
                svc.spec.cluster_ip = candidate
                return Op("create", PREFIX + candidate, owner)
        raise errors.ResourceExhausted(f"the service range {self.range} is full")

    @staticmethod
    def release(svc: workloads_pb2.Service) -> list[Op]:
        if not svc.spec.cluster_ip or svc.spec.cluster_ip == HEADLESS:
            return []
        return [Op("delete", PREFIX + svc.spec.cluster_ip)]
