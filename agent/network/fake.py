"""Recording fakes of the overlay's side effects: an in-memory kernel and firewall.

`FakeNetlink` keeps links, addresses, routes, neighbours and FDB entries the
way the kernel does for the operations Atoll uses (replace is an upsert,
deleting a link takes everything on it along) and records every write as
the `ip`/`bridge` command it stands for. Every stored object carries a
serial number, so a test can prove that an entry was left alone rather than
deleted and re-added. `FakeFirewall` does the same for iptables.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import replace

from agent.network.firewall import FwOp, Tables
from agent.network.model import (
    AddAddress,
    CreateVxlan,
    DelAddress,
    DeleteLink,
    DelFdb,
    DelNeighbour,
    DelRoute,
    FdbEntry,
    Interface,
    KernelState,
    LinkState,
    Neighbour,
    Op,
    OpError,
    ReplaceFdb,
    ReplaceNeighbour,
    ReplaceRoute,
    Route,
    RouteTo,
    SetLink,
)


class FakeNetlink:
    def __init__(
        self,
        interfaces: Iterable[Interface] = (
            Interface("lo", 1, 65536, loopback=True, addresses=("127.0.0.1/8",)),
            Interface("eth0", 2, 1500, addresses=("198.51.100.10/24",)),
        ),
        *,
        routes_to: dict[str, RouteTo] | None = None,
        default_iface: str | None = None,
    ) -> None:
        self.ifaces = {i.name: i for i in interfaces}
        self.routes_to = dict(routes_to or {})
        self.default_iface = default_iface
        self.links: dict[str, LinkState] = {}
        self.addresses: dict[str, set[str]] = {}
        self.routes: dict[str, Route] = {}  # main table, by dst
        self.neighbours: dict[tuple[str, str], Neighbour] = {}  # (dev, ip)
        self.fdb: dict[tuple[str, str, str], FdbEntry] = {}  # (dev, mac, dst)
        self.sysctls: dict[str, str] = {"net.ipv4.ip_forward": "0"}
        self.serial: dict[object, int] = {}  # object key -> write that made it
        self.calls: list[str] = []  # every write, as an ip/bridge/sysctl command
        self.dumps = 0
        self.hairpin_bridges: list[str] = []
        self.fail: dict[str, str] = {}  # command prefix -> error message
        self._serials = itertools.count(1)
        self._indexes = itertools.count(100)

    # -- test helpers -------------------------------------------------------------------------

    def writes(self) -> list[str]:
        return [c for c in self.calls if not c.startswith("dump")]

    def add_foreign(self, obj: Route | Neighbour | FdbEntry) -> None:
        """Something another program made (never to be touched by the overlay)."""
        self._store(obj)

    def snapshot(self) -> dict[object, int]:
        """Every object with the serial of the write that made it."""
        return dict(self.serial)

    # -- NetlinkDriver ---------------------------------------------------------------------

    async def interfaces(self) -> list[Interface]:
        return list(self.ifaces.values())

    async def route_get(self, dst: str) -> RouteTo | None:
        if dst in self.routes_to:
            return self.routes_to[dst]
        for iface in self.ifaces.values():
            for cidr in iface.addresses:
                if cidr.split("/")[0] == dst:
                    return RouteTo(iface="lo", src=dst, local=True)
        return None

    async def default_route_iface(self) -> str | None:
        return self.default_iface

    async def dump(self, device: str) -> KernelState:
        self.dumps += 1
        self.calls.append(f"dump {device}")
        link = self.links.get(device)
        if link is None:
            return KernelState(link=None)
        return KernelState(
            link=link,
            addresses=tuple(sorted(self.addresses.get(device, ()))),
            routes=tuple(r for r in self.routes.values() if r.dev == device),
            neighbours=tuple(n for (dev, _), n in self.neighbours.items() if dev == device),
            fdb=tuple(e for (dev, _, _), e in self.fdb.items() if dev == device),
        )

    async def execute(self, ops: Sequence[Op]) -> list[OpError]:
        failed = []
        for op in ops:
            command = op.command()
            self.calls.append(command)
            error = next((msg for prefix, msg in self.fail.items() if command.startswith(prefix)), None)
            if error is None:
                error = self._apply(op)
            if error:
                failed.append(OpError(op, error))
        return failed

    async def read_sysctl(self, name: str) -> str:
        return self.sysctls.get(name, "0")

    async def write_sysctl(self, name: str, value: str) -> None:
        self.calls.append(f"sysctl -w {name}={value}")
        self.sysctls[name] = value

    async def set_hairpin(self, bridge: str) -> int:
        self.hairpin_bridges.append(bridge)
        return 0

    async def close(self) -> None:
        return None

    # -- the kernel model -----------------------------------------------------------------------

    def _store(self, obj: Route | Neighbour | FdbEntry) -> None:
        key: object
        if isinstance(obj, Route):
            key = ("route", obj.dst)
            self.routes[obj.dst] = obj
        elif isinstance(obj, Neighbour):
            key = ("neigh", obj.dev, obj.ip)
            self.neighbours[(obj.dev, obj.ip)] = obj
        else:
            key = ("fdb", obj.dev, obj.mac, obj.dst)
            self.fdb[(obj.dev, obj.mac, obj.dst)] = obj
        self.serial[key] = next(self._serials)

    def _prune(self) -> None:
        live: set[object] = {("link", name) for name in self.links}
        live |= {("route", dst) for dst in self.routes}
        live |= {("neigh", *key) for key in self.neighbours}
        live |= {("fdb", *key) for key in self.fdb}
        self.serial = {k: v for k, v in self.serial.items() if k in live}

    def _apply(self, op: Op) -> str:
        match op:
            case CreateVxlan(spec=s):
                if s.name in self.links:
                    return "File exists"
                if s.underlay not in self.ifaces:
                    return "No such device"
                self.links[s.name] = LinkState(
                    name=s.name,
                    index=next(self._indexes),
                    kind="vxlan",
                    mtu=s.mtu,
                    mac=s.mac,
                    up=False,
                    vni=s.vni,
                    port=s.port,
                    local=s.local,
                    underlay=s.underlay,
                    learning=s.learning,
                )
                self.serial[("link", s.name)] = next(self._serials)
            case DeleteLink(name=name):
                self.links.pop(name, None)
                self.addresses.pop(name, None)
                self.routes = {k: r for k, r in self.routes.items() if r.dev != name}
                self.neighbours = {k: n for k, n in self.neighbours.items() if k[0] != name}
                self.fdb = {k: e for k, e in self.fdb.items() if k[0] != name}
                self._prune()
            case SetLink(name=name, mtu=mtu, up=up):
                link = self.links.get(name)
                if link is None:
                    return "No such device"
                self.links[name] = replace(
                    link, mtu=link.mtu if mtu is None else mtu, up=link.up if up is None else up
                )
            case AddAddress(dev=dev, cidr=cidr):
                if dev not in self.links:
                    return "No such device"
                self.addresses.setdefault(dev, set()).add(cidr)
            case DelAddress(dev=dev, cidr=cidr):
                self.addresses.get(dev, set()).discard(cidr)
            case ReplaceRoute(route=r) | ReplaceNeighbour(neighbour=r) | ReplaceFdb(entry=r):
                if r.dev not in self.links:
                    return "No such device"
                if isinstance(r, FdbEntry):
                    # The kernel rewrites a MAC's remote in place.
                    for key in [k for k in self.fdb if k[:2] == (r.dev, r.mac)][:1]:
                        if key[2] != r.dst:
                            del self.fdb[key]
                    if (r.dev, r.mac, r.dst) in self.fdb:
                        return ""  # already a remote of this MAC: the kernel changes nothing
                self._store(r)
                self._prune()
            case DelRoute(route=r):
                self.routes.pop(r.dst, None)
                self.serial.pop(("route", r.dst), None)
            case DelNeighbour(neighbour=n):
                self.neighbours.pop((n.dev, n.ip), None)
                self.serial.pop(("neigh", n.dev, n.ip), None)
            case DelFdb(entry=e):
                self.fdb.pop((e.dev, e.mac, e.dst), None)
                self.serial.pop(("fdb", e.dev, e.mac, e.dst), None)
        return ""


class FakeFirewall:
    """iptables in memory: chains are lists of rule specs, every transaction is recorded."""

    def __init__(self, tables: dict[str, dict[str, list[str]]] | None = None) -> None:
        self.tables: dict[str, dict[str, list[str]]] = tables or {
            "filter": {"INPUT": [], "FORWARD": [], "OUTPUT": []},
            "nat": {"PREROUTING": [], "INPUT": [], "OUTPUT": [], "POSTROUTING": []},
        }
        self.transactions: list[list[str]] = []
        self.dumps = 0

    async def dump(self) -> Tables:
        self.dumps += 1
        return {t: {c: list(rules) for c, rules in chains.items()} for t, chains in self.tables.items()}

    async def apply(self, ops: Sequence[FwOp]) -> None:
        if not ops:
            return
        self.transactions.append([f"{op.table}: {op.line()}" for op in ops])
        for op in sorted(ops, key=lambda o: o.action != "declare"):
            chains = self.tables.setdefault(op.table, {})
            match op.action:
                case "declare":
                    chains[op.chain] = []
                case "insert":
                    chains[op.chain].insert(0, op.rule)
                case "append":
                    chains[op.chain].append(op.rule)
                case "delete":
                    chains[op.chain].remove(op.rule)
                case "remove_chain":
                    del chains[op.chain]
