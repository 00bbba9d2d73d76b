"""Overlay subnet leases, flannel's subnet manager on our store.

Each node holds one lease: a Subnet object named after its subnet
("10.100.50.0-24"), plus an index key `/subnetowners/<node>` naming it. Both
are written in one transaction, so two nodes can never share a subnet and a
node never holds two, also when many register at once: a lost race is an
AlreadyExists on one of the keys, and the loser tries the next free subnet.
Candidates are tried from a random offset, as flannel does, so that
concurrent registrations rarely collide at all.

A lease lives `ttl` (flannel: 24 h) and the agent renews it. A restarted
agent or coordinator finds the node's lease through the index and keeps its
subnet. A lease is only given to another node once it has expired.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import time
from collections.abc import Callable, Iterator

from atoll import errors, kinds, validation
from atoll.v1 import network_pb2, node_pb2
from coordinator.objects.registry import Registry, key_for
from coordinator.store.base import KV, Op

log = logging.getLogger(__name__)

NETWORK = kinds.by_name("Network")
SUBNET = kinds.by_name("Subnet")
NODE = kinds.by_name("Node")
DEFAULT_NAME = "default"
OWNER_PREFIX = "/subnetowners/"


def subnet_name(cidr: str) -> str:
    return cidr.replace("/", "-")


def candidate_subnets(spec: network_pb2.NetworkSpec) -> list[ipaddress.IPv4Network]:
    """Every subnet between SubnetMin and SubnetMax, in order."""
    network = ipaddress.IPv4Network(spec.network)
    first = ipaddress.IPv4Network(f"{spec.subnet_min}/{spec.subnet_len}")
    last = ipaddress.IPv4Network(f"{spec.subnet_max}/{spec.subnet_len}")
    return [
        s
        for s in network.subnets(new_prefix=spec.subnet_len)
        if first.network_address <= s.network_address <= last.network_address
    ]


def lease_fits(spec: network_pb2.NetworkSpec, cidr: str) -> bool:
    """Whether a lease on `cidr` is still valid under the network config `spec`."""
    try:
        subnet = ipaddress.IPv4Network(cidr)
        network = ipaddress.IPv4Network(spec.network)
    except ValueError:
        return False
    return (
        subnet.subnet_of(network)
        and subnet.prefixlen == spec.subnet_len
        and ipaddress.IPv4Address(spec.subnet_min)
        <= subnet.network_address
        <= ipaddress.IPv4Address(spec.subnet_max)
    )


def orphaned_by(spec: network_pb2.NetworkSpec, leases: list[network_pb2.Subnet]) -> list[network_pb2.Subnet]:
    return [lease for lease in leases if not lease_fits(spec, lease.spec.cidr)]


class LeaseManager:
    def __init__(
        self,
        registry: Registry,
        *,
        ttl: float = 24 * 3600,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._registry = registry
        self.ttl = ttl
        self._clock = clock
        self._rng = rng or random.Random()

    async def network(self) -> network_pb2.NetworkSpec:
        try:
            net = await self._registry.get(NETWORK, "", DEFAULT_NAME)
        except errors.NotFound:
            raise errors.FailedPrecondition(
                "no overlay network is configured: start the coordinator with --network-config FILE "
                "or create the Network object"
            ) from None
        assert isinstance(net, network_pb2.Network)
        spec = network_pb2.NetworkSpec()
        spec.CopyFrom(net.spec)
        validation.default_network(spec)
        return spec

    def _lease_value(
        self, cidr: str, node: str, public_ip: str, mac: str, net: network_pb2.NetworkSpec
    ) -> network_pb2.Subnet:
        lease = network_pb2.Subnet()
        lease.metadata.name = subnet_name(cidr)
        lease.spec.cidr = cidr
        lease.spec.node_name = node
        lease.spec.public_ip = public_ip
        lease.spec.vtep_mac = mac
        lease.spec.backend_type = net.backend.type
        lease.spec.vni = net.backend.vni
        lease.spec.expiration.FromNanoseconds(int((self._clock() + self.ttl) * 1e9))
        return lease

    async def acquire(self, node: str, public_ip: str, vtep_mac: str) -> network_pb2.Subnet:
        """The node's lease, renewed (and its addresses refreshed), or a new one."""
        net = await self.network()
        for _ in range(8):
            owner = await self._registry.store.get(OWNER_PREFIX + node)
            if owner is not None:
                lease = await self._renew(owner, node, public_ip, vtep_mac, net)
                if lease is not None:
                    await self._record_on_node(node, lease.spec.cidr)
                    return lease
                continue
            lease = await self._allocate(node, public_ip, vtep_mac, net)
            if lease is not None:
                await self._record_on_node(node, lease.spec.cidr)
                log.info("leased %s to node %s", lease.spec.cidr, node, extra={"node": node})
                return lease
        raise errors.Unavailable(f"could not settle a lease for node {node}: too much contention, retry")

    async def _renew(
        self, owner: KV, node: str, public_ip: str, mac: str, net: network_pb2.NetworkSpec
    ) -> network_pb2.Subnet | None:
        """Renew the lease the index names; None when the caller must look again."""
        name = owner.value.decode()
        kv = await self._registry.store.get(key_for(SUBNET, "", name))
        if (
            kv is None
            or not lease_fits(net, (current := self._decode(kv)).spec.cidr)
            or current.spec.node_name != node
        ):
            # A dangling or obsolete index entry: drop it (and a lease the config no longer allows).
            ops = [Op("delete", OWNER_PREFIX + node, expected_revision=owner.mod_revision)]
            if kv is not None and self._decode(kv).spec.node_name == node:
                ops.append(Op("delete", kv.key, expected_revision=kv.mod_revision))
            try:
                await self._registry.store.txn(ops)
            except (errors.Conflict, errors.NotFound):
                pass
            return None
        renewed = self._lease_value(current.spec.cidr, node, public_ip, mac, net)
        renewed.metadata.CopyFrom(current.metadata)
        try:
            return await self._registry.update(renewed, expected_revision=kv.mod_revision)
        except errors.Conflict:
            return None

    def _decode(self, kv: KV) -> network_pb2.Subnet:
        lease = self._registry.decode(SUBNET, kv)
        assert isinstance(lease, network_pb2.Subnet)
        return lease

    def _candidates(self, net: network_pb2.NetworkSpec) -> Iterator[ipaddress.IPv4Network]:
        subnets = candidate_subnets(net)
        start = self._rng.randrange(len(subnets)) if subnets else 0
        yield from subnets[start:]
        yield from subnets[:start]

    async def _allocate(
        self, node: str, public_ip: str, mac: str, net: network_pb2.NetworkSpec
    ) -> network_pb2.Subnet | None:
        now = self._clock()
        for subnet in self._candidates(net):
            cidr = str(subnet)
            key = key_for(SUBNET, "", subnet_name(cidr))
            existing = await self._registry.store.get(key)
            lease = self._lease_value(cidr, node, public_ip, mac, net)
            self._registry.prepare_new(lease)
            ops = [
                Op("create", key, self._registry.encode(lease)),
                Op("create", OWNER_PREFIX + node, subnet_name(cidr).encode()),
            ]
            if existing is not None:
                old = self._decode(existing)
                if old.spec.expiration.ToNanoseconds() / 1e9 > now:
                    continue
                # Expired: the old holder loses it, in the same transaction.
                log.info(
                    "reclaiming expired lease %s of node %s",
                    cidr,
                    old.spec.node_name,
                    extra={"node": old.spec.node_name},
                )
                ops = [Op("delete", key, expected_revision=existing.mod_revision), *ops]
                old_owner = await self._registry.store.get(OWNER_PREFIX + old.spec.node_name)
                if old_owner is not None and old_owner.value.decode() == subnet_name(cidr):
                    ops.insert(1, Op("delete", old_owner.key, expected_revision=old_owner.mod_revision))
            try:
                kvs = await self._registry.store.txn(ops)
            except errors.AlreadyExists:
                if await self._registry.store.get(OWNER_PREFIX + node) is not None:
                    return None  # this node got a lease meanwhile: renew that one
                continue
            except (errors.Conflict, errors.NotFound):
                continue
            created = [kv for kv in kvs if kv.key == key][-1]  # after a reclaim, the delete comes first
            return self._decode(created)
        raise errors.ResourceExhausted(
            f"no free subnet left between {net.subnet_min} and {net.subnet_max} (/{net.subnet_len})"
        )

    async def _record_on_node(self, node: str, cidr: str) -> None:
        def mutate(obj: object) -> bool:
            assert isinstance(obj, node_pb2.Node)
            if obj.spec.pod_cidr == cidr:
                return False
            obj.spec.pod_cidr = cidr
            return True

        try:
            await self._registry.guaranteed_update(NODE, "", node, mutate)
        except errors.NotFound:
            pass  # agents register before they lease; a node deleted meanwhile gets it on its next renewal

    async def leases(self) -> list[network_pb2.Subnet]:
        items, _ = await self._registry.list(SUBNET)
        return [i for i in items if isinstance(i, network_pb2.Subnet)]


async def ensure_no_orphans(registry: Registry, network: network_pb2.Network) -> None:
    """Refuse a network config under which existing leases would no longer be valid."""
    items, _ = await registry.list(SUBNET)
    orphans = orphaned_by(network.spec, [lease for lease in items if isinstance(lease, network_pb2.Subnet)])
    if orphans:
        listed = ", ".join(f"{o.spec.cidr} (node {o.spec.node_name})" for o in orphans[:5])
        more = f" and {len(orphans) - 5} more" if len(orphans) > 5 else ""
        raise errors.FailedPrecondition(
            f"this network config would orphan {len(orphans)} existing lease(s): {listed}{more}; "
            "delete those subnets (or let them expire) first",
            field="spec",
        )
