"""Render the overlay's desired kernel state as data, and diff it against a dump.

`render` is a pure function from (overlay config, our VXLAN device, our lease,
every lease) to an `OverlayPlan`; `diff` compares a plan with a `KernelState`
dump and returns one `Change` per object (add, remove, update or keep) with
the operations that converge it. Nothing here touches the kernel, so every
rule below is unit-tested as data (tests/unit/test_overlay_plan.py).

Ownership, i.e. what `diff` may remove:

* the device `flannel.<VNI>` is Atoll's: every IPv4 address on it, and every
  permanent unicast FDB entry in its own table (`self`), is ours;
* routes and neighbours on it are ours only if their destination lies inside
  the overlay Network; a non-permanent neighbour (one the kernel made) is
  never removed;
* nothing on any other device is ever looked at.

An object that is already right is kept, never deleted and re-added: a
restarted agent re-renders the same plan, finds the same kernel state and
writes nothing (see the module docstring of agent.network.overlay).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agent.network.model import (
    MIN_MTU,
    VXLAN_OVERHEAD,
    Action,
    AddAddress,
    CreateVxlan,
    DelAddress,
    DeleteLink,
    DelFdb,
    DelNeighbour,
    DelRoute,
    FdbEntry,
    KernelState,
    Kind,
    Lease,
    LinkState,
    Neighbour,
    Op,
    OverlayConfig,
    OverlayError,
    ReplaceFdb,
    ReplaceNeighbour,
    ReplaceRoute,
    Route,
    SetLink,
    Underlay,
    VxlanSpec,
    canonical_mac,
)

ZERO_MAC = "00:00:00:00:00:00"


def vtep_mac(public_ip: str, vni: int) -> str:
    """A stable, locally administered unicast MAC for this node's VXLAN device.

    The kernel would pick a random one at every creation; deriving it from the
    node's public IP and the VNI means that a rebooted node comes back with the
    MAC its peers still have in their neighbour and FDB entries, so traffic
    flows before its renewed lease has even propagated.
    """
    digest = bytearray(hashlib.sha256(f"atoll-vtep/{vni}/{public_ip}".encode()).digest()[:6])
    digest[0] = (digest[0] & 0xFC) | 0x02  # unicast, locally administered
    return ":".join(f"{b:02x}" for b in digest)


def overlay_mtu(config: OverlayConfig, underlay_mtu: int) -> int:
    """The configured MTU, else the underlay's minus the VXLAN encapsulation."""
    mtu = config.mtu or underlay_mtu - VXLAN_OVERHEAD
    if mtu < MIN_MTU:
        raise OverlayError(
            f"overlay MTU would be {mtu} (underlay MTU {underlay_mtu} - {VXLAN_OVERHEAD}); "
            f"at least {MIN_MTU} is needed: raise the underlay's MTU or set the network's mtu"
        )
    return mtu


def render_device(config: OverlayConfig, underlay: Underlay, mac: str) -> VxlanSpec:
    return VxlanSpec(
        name=config.device,
        vni=config.vni,
        port=config.port,
        local=underlay.local_ip,
        underlay=underlay.iface,
        mtu=overlay_mtu(config, underlay.mtu),
        mac=canonical_mac(mac),
    )


@dataclass(frozen=True)
class PeerEntries:
    routes: tuple[Route, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()
    fdb: tuple[FdbEntry, ...] = ()


@dataclass(frozen=True)
class OverlayPlan:
    """The kernel state we want. `None` parts are left as they are (prepare() knows no lease yet)."""

    network: ipaddress.IPv4Network
    device: VxlanSpec
    address: str | None = None  # "<our subnet>.0/32"
    peers: PeerEntries | None = None
    skipped: tuple[str, ...] = ()  # leases that were ignored, and why


def device_plan(config: OverlayConfig, device: VxlanSpec) -> OverlayPlan:
    """Only the device: what prepare() converges before the node has a lease."""
    return OverlayPlan(network=config.network, device=device)


def select_peers(
    config: OverlayConfig, own: Lease, leases: Iterable[Lease], local_public_ip: str
) -> tuple[list[Lease], list[str]]:
    """The leases we build entries for, and a reason for each one we ignore."""
    peers: list[Lease] = []
    skipped: list[str] = []
    for lease in sorted(leases, key=lambda le: (le.subnet, le.node_name)):
        if lease.subnet == own.subnet:
            continue
        name = f"lease {lease.subnet} ({lease.node_name or 'unknown node'})"
        reason = ""
        if not lease.subnet.subnet_of(config.network):
            reason = f"outside the overlay network {config.network}"
        elif lease.subnet.overlaps(own.subnet):
            reason = f"overlaps our own subnet {own.subnet}"
        elif not _valid_ip(lease.public_ip):
            reason = f"no valid public IP ({lease.public_ip!r})"
        elif not _valid_mac(lease.vtep_mac):
            reason = f"no valid VTEP MAC ({lease.vtep_mac!r})"
        elif lease.public_ip == local_public_ip:
            reason = f"has this node's public IP {local_public_ip}"
        elif peers and peers[-1].subnet.overlaps(lease.subnet):
            # Sorted by start and disjoint: only the last accepted lease can overlap.
            reason = f"overlaps lease {peers[-1].subnet} ({peers[-1].node_name})"
        if reason:
            skipped.append(f"{name}: {reason}")
        else:
            peers.append(lease)
    return peers, skipped


def render(
    config: OverlayConfig, device: VxlanSpec, own: Lease, leases: Sequence[Lease], public_ip: str
) -> OverlayPlan:
    """The full plan: device, our address and per peer a route, a neighbour and an FDB entry."""
    if not own.subnet.subnet_of(config.network):
        raise OverlayError(f"our lease {own.subnet} lies outside the overlay network {config.network}")
    peers, skipped = select_peers(config, own, leases, public_ip)
    dev = device.name
    entries = PeerEntries(
        routes=tuple(Route(dst=str(p.subnet), gateway=p.vtep_ip, dev=dev) for p in peers),
        neighbours=tuple(Neighbour(ip=p.vtep_ip, mac=canonical_mac(p.vtep_mac), dev=dev) for p in peers),
        fdb=tuple(FdbEntry(mac=canonical_mac(p.vtep_mac), dst=p.public_ip, dev=dev) for p in peers),
    )
    return OverlayPlan(
        network=config.network,
        device=device,
        address=f"{own.vtep_ip}/32",
        peers=entries,
        skipped=tuple(skipped),
    )


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def _valid_mac(value: str) -> bool:
    try:
        mac = canonical_mac(value)
    except ValueError:
        return False
    return mac != ZERO_MAC and not _multicast(mac)


def _multicast(mac: str) -> bool:
    return bool(int(mac[:2], 16) & 1)


def _inside(cidr: str, network: ipaddress.IPv4Network) -> bool:
    """Whether an address or prefix lies inside `network` (integer arithmetic: called per entry)."""
    address, _, length = cidr.partition("/")
    try:
        start = int(ipaddress.IPv4Address(address))
        prefix = int(length) if length else 32
    except ValueError:
        return False
    lo = int(network.network_address)
    return prefix >= network.prefixlen and lo <= start <= lo + network.num_addresses - 1


# -- diff -----------------------------------------------------------------------------------------

# Order of application: the device, its address, then removals, then additions
# in the order that lets the first packet through: FDB, neighbour, route last
# (as flannel: a route whose neighbour is missing would send into a black hole).
_PHASES: dict[tuple[Kind, bool], int] = {
    ("link", False): 0,
    ("link", True): 0,
    ("address", True): 1,
    ("address", False): 1,
    ("route", True): 2,
    ("neighbour", True): 3,
    ("fdb", True): 4,
    ("fdb", False): 5,
    ("neighbour", False): 6,
    ("route", False): 7,
}


@dataclass(frozen=True)
class Change:
    action: Action
    kind: Kind
    key: str
    ops: tuple[Op, ...] = ()
    reason: str = ""

    @property
    def phase(self) -> int:
        return _PHASES[(self.kind, self.action == "remove")]


@dataclass(frozen=True)
class Diff:
    changes: tuple[Change, ...] = field(default_factory=tuple)

    def ops(self) -> list[Op]:
        ordered = sorted(self.changes, key=lambda c: c.phase)  # stable: keys stay sorted within a phase
        return [op for change in ordered for op in change.ops]

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action == action)

    def of(self, kind: Kind, action: Action | None = None) -> list[Change]:
        return [c for c in self.changes if c.kind == kind and (action is None or c.action == action)]

    @property
    def in_sync(self) -> bool:
        return all(c.action == "keep" for c in self.changes)


def diff(plan: OverlayPlan, state: KernelState) -> Diff:
    """What turns `state` into `plan`, one Change per object."""
    changes: list[Change] = []
    link_change, recreated = _diff_link(plan.device, state.link)
    changes.append(link_change)
    if recreated:
        # Deleting (or creating) the device takes everything on it along.
        state = KernelState(link=None)
    dev = plan.device.name
    if plan.address is not None:
        changes += _diff_addresses(dev, plan.address, state.addresses)
    if plan.peers is not None:
        changes += _diff_routes(plan.network, dev, plan.peers.routes, state.routes)
        changes += _diff_neighbours(plan.network, dev, plan.peers.neighbours, state.neighbours)
        changes += _diff_fdb(dev, plan.peers.fdb, state.fdb)
    return Diff(tuple(changes))


def _diff_link(spec: VxlanSpec, link: LinkState | None) -> tuple[Change, bool]:
    create = (CreateVxlan(spec), SetLink(spec.name, up=True))
    if link is None:
        return Change("add", "link", spec.name, create), True
    wrong = [
        f"{what} {have} (want {want})"
        for what, have, want in (
            ("kind", link.kind, "vxlan"),
            ("vni", link.vni, spec.vni),
            ("dstport", link.port, spec.port),
            ("local", link.local, spec.local),
            ("dev", link.underlay, spec.underlay),
            ("learning", link.learning, spec.learning),
        )
        if have != want
    ]
    if wrong:
        return Change("update", "link", spec.name, (DeleteLink(spec.name), *create), "; ".join(wrong)), True
    mtu = spec.mtu if link.mtu != spec.mtu else None
    up = True if not link.up else None
    if mtu is None and up is None:
        return Change("keep", "link", spec.name), False
    reason = f"mtu {link.mtu} (want {spec.mtu})" if mtu else "down"
    return Change("update", "link", spec.name, (SetLink(spec.name, mtu=mtu, up=up),), reason), False


def _diff_addresses(dev: str, want: str, have: Sequence[str]) -> list[Change]:
    changes = [
        Change("keep", "address", want)
        if want in have
        else Change("add", "address", want, (AddAddress(dev, want),))
    ]
    changes += [
        Change("remove", "address", cidr, (DelAddress(dev, cidr),)) for cidr in sorted(set(have) - {want})
    ]
    return changes


def _diff_routes(
    network: ipaddress.IPv4Network, dev: str, want: Sequence[Route], have: Sequence[Route]
) -> list[Change]:
    ours = {r.dst: r for r in have if r.dev == dev and _inside(r.dst, network)}
    changes = []
    for route in sorted(want, key=lambda r: ipaddress.IPv4Network(r.dst)):
        actual = ours.pop(route.dst, None)
        if actual is None:
            changes.append(Change("add", "route", route.dst, (ReplaceRoute(route),)))
        elif actual.same(route):
            changes.append(Change("keep", "route", route.dst))
        else:
            reason = f"via {actual.gateway}{' onlink' if actual.onlink else ''}"
            changes.append(Change("update", "route", route.dst, (ReplaceRoute(route),), reason))
    for dst, stale in sorted(ours.items(), key=lambda kv: ipaddress.IPv4Network(kv[0])):
        changes.append(Change("remove", "route", dst, (DelRoute(stale),), "no lease"))
    return changes


def _diff_neighbours(
    network: ipaddress.IPv4Network, dev: str, want: Sequence[Neighbour], have: Sequence[Neighbour]
) -> list[Change]:
    ours = {n.ip: n for n in have if n.dev == dev and _inside(n.ip, network)}
    changes = []
    for neigh in sorted(want, key=lambda n: ipaddress.IPv4Address(n.ip)):
        actual = ours.pop(neigh.ip, None)
        if actual is None:
            changes.append(Change("add", "neighbour", neigh.ip, (ReplaceNeighbour(neigh),)))
        elif actual.permanent and actual.mac == neigh.mac:
            changes.append(Change("keep", "neighbour", neigh.ip))
        else:
            reason = f"lladdr {actual.mac or 'none'}{'' if actual.permanent else ' (not permanent)'}"
            changes.append(Change("update", "neighbour", neigh.ip, (ReplaceNeighbour(neigh),), reason))
    for ip, stale in sorted(ours.items(), key=lambda kv: ipaddress.IPv4Address(kv[0])):
        if stale.permanent:  # entries the kernel made itself come and go on their own
            changes.append(Change("remove", "neighbour", ip, (DelNeighbour(stale),), "no lease"))
    return changes


def _diff_fdb(dev: str, want: Sequence[FdbEntry], have: Sequence[FdbEntry]) -> list[Change]:
    by_mac: dict[str, list[FdbEntry]] = {}
    for entry in have:
        if entry.dev == dev and entry.permanent and entry.self_ and _valid_mac(entry.mac):
            by_mac.setdefault(entry.mac, []).append(entry)
    changes = []
    for entry in sorted(want, key=lambda e: e.mac):
        actual = by_mac.pop(entry.mac, [])
        if not actual:
            changes.append(Change("add", "fdb", entry.mac, (ReplaceFdb(entry),)))
        elif [a.dst for a in actual] == [entry.dst]:
            changes.append(Change("keep", "fdb", entry.mac))
        else:
            # `replace` rewrites a MAC's only remote in place. Several remotes (we
            # never make them) are cut down first, then replace settles the rest.
            extra = tuple(DelFdb(a) for a in actual if a.dst != entry.dst) if len(actual) > 1 else ()
            reason = "dst " + ",".join(a.dst for a in actual)
            changes.append(Change("update", "fdb", entry.mac, (*extra, ReplaceFdb(entry)), reason))
    for mac, stale in sorted(by_mac.items()):
        changes.append(Change("remove", "fdb", mac, tuple(DelFdb(e) for e in stale), "no lease"))
    return changes
