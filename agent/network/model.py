"""Plain data of the overlay: its config, leases, kernel objects and the operations on them.

Nothing here talks to the kernel. The planner (agent.network.plan) turns
config and leases into the kernel objects we want, the drivers
(agent.network.netlink, agent.network.fake) report the objects that exist in
the same shapes, and the difference is a list of the operations below. Every
operation can describe itself as the `ip`/`bridge` command an operator would
type, which is what dry-run (noop) mode logs and what the fake driver records.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from atoll import errors

if TYPE_CHECKING:
    from atoll.v1 import network_pb2

DEFAULT_VNI = 1
DEFAULT_PORT = 8472  # the Linux default, as flannel (IANA's is 4789)
DEFAULT_SUBNET_LEN = 24
#: Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers.
VXLAN_OVERHEAD = 50
MIN_MTU = 576


class OverlayError(errors.FailedPrecondition):
    """The overlay cannot be set up as configured (bad config, no underlay, ...)."""


_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def canonical_mac(mac: str) -> str:
    """`0A-00-...` or `0a:00:...` as lower-case colon-separated; ValueError if it is not a MAC."""
    text = mac.replace("-", ":").lower()
    if not _MAC.fullmatch(text):
        raise ValueError(f"not a MAC address: {mac!r}")
    return text


def first_host(net: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The gateway of a pod subnet: `<subnet>.1`."""
    return net.network_address + 1


@dataclass(frozen=True)
class OverlayConfig:
    """The cluster's overlay (the Network object), defaults applied."""

    network: ipaddress.IPv4Network
    subnet_len: int = DEFAULT_SUBNET_LEN
    vni: int = DEFAULT_VNI
    port: int = DEFAULT_PORT
    mtu: int = 0  # 0: underlay MTU - VXLAN_OVERHEAD
    ip_masq: bool = True
    backend: str = "vxlan"

    def __post_init__(self) -> None:
        if self.backend != "vxlan":
            raise OverlayError(f"overlay backend {self.backend!r} is not supported (only vxlan)")
        if not 0 < self.vni < 1 << 24:
            raise OverlayError(f"VNI {self.vni} is outside 1..16777215")
        if not 0 < self.port < 1 << 16:
            raise OverlayError(f"VXLAN port {self.port} is outside 1..65535")
        if self.mtu and self.mtu < MIN_MTU:
            raise OverlayError(f"overlay MTU {self.mtu} is below {MIN_MTU}")

    @property
    def device(self) -> str:
        """flannel's name for the VXLAN device, so that tooling written for flannel finds it."""
        return f"flannel.{self.vni}"

    @classmethod
    def from_proto(cls, spec: network_pb2.NetworkSpec) -> OverlayConfig:
        try:
            network = ipaddress.IPv4Network(spec.network)
        except ValueError as exc:
            raise OverlayError(f"overlay network {spec.network!r}: {exc}") from None
        return cls(
            network=network,
            subnet_len=spec.subnet_len or DEFAULT_SUBNET_LEN,
            vni=spec.backend.vni or DEFAULT_VNI,
            port=spec.backend.port or DEFAULT_PORT,
            mtu=spec.mtu,
            ip_masq=spec.ip_masq if spec.HasField("ip_masq") else True,
            backend=spec.backend.type or "vxlan",
        )


@dataclass(frozen=True)
class Lease:
    """One node's lease: its pod subnet and where that subnet's VXLAN packets go."""

    subnet: ipaddress.IPv4Network
    public_ip: str
    vtep_mac: str
    node_name: str = ""

    @property
    def vtep_ip(self) -> str:
        """The address flannel puts on a node's VXLAN device: the subnet's network address."""
        return str(self.subnet.network_address)

    @classmethod
    def from_proto(cls, subnet: network_pb2.Subnet) -> Lease:
        spec = subnet.spec
        try:
            net = ipaddress.IPv4Network(spec.cidr)
        except ValueError as exc:
            raise OverlayError(f"lease {subnet.metadata.name or spec.cidr!r}: cidr: {exc}") from None
        return cls(subnet=net, public_ip=spec.public_ip, vtep_mac=spec.vtep_mac, node_name=spec.node_name)


@dataclass(frozen=True)
class Underlay:
    """Where VXLAN packets leave this node: the interface, its address, the public one, the MTU."""

    iface: str
    local_ip: str  # on `iface`: the VXLAN device's source address
    public_ip: str  # what peers send to; differs from local_ip only behind 1:1 NAT
    mtu: int  # of `iface`


@dataclass(frozen=True)
class VtepInfo:
    """What the agent puts into its lease request."""

    public_ip: str
    iface: str
    mtu: int  # of the VXLAN device, which is what pods get
    vtep_mac: str
    device: str = "flannel.1"


# -- kernel objects, as reported and as wanted -----------------------------------------------


@dataclass(frozen=True)
class Interface:
    name: str
    index: int
    mtu: int
    up: bool = True
    loopback: bool = False
    addresses: tuple[str, ...] = ()  # IPv4 "a.b.c.d/len"


@dataclass(frozen=True)
class RouteTo:
    """The kernel's answer to `ip route get DST`."""

    iface: str
    src: str
    local: bool = False  # DST is one of this host's own addresses


@dataclass(frozen=True)
class VxlanSpec:
    """The VXLAN device we want. `mac` is only used when the device is created."""

    name: str
    vni: int
    port: int
    local: str
    underlay: str
    mtu: int
    mac: str
    learning: bool = False


@dataclass(frozen=True)
class LinkState:
    """A link as the kernel reports it (the vxlan fields are None for other kinds)."""

    name: str
    index: int
    kind: str
    mtu: int
    mac: str
    up: bool
    vni: int | None = None
    port: int | None = None
    local: str | None = None
    underlay: str | None = None
    learning: bool | None = None


@dataclass(frozen=True)
class Route:
    """`ip route replace DST via GATEWAY dev DEV onlink` (main table)."""

    dst: str
    gateway: str
    dev: str
    onlink: bool = True

    def same(self, other: Route) -> bool:
        return (self.dst, self.gateway, self.dev, self.onlink) == (
            other.dst,
            other.gateway,
            other.dev,
            other.onlink,
        )


@dataclass(frozen=True)
class Neighbour:
    """`ip neigh replace IP lladdr MAC dev DEV nud permanent`."""

    ip: str
    mac: str  # "" for entries without a link-layer address (incomplete, failed)
    dev: str
    permanent: bool = True


@dataclass(frozen=True)
class FdbEntry:
    """`bridge fdb replace MAC dev DEV dst DST self permanent`."""

    mac: str
    dst: str
    dev: str
    permanent: bool = True
    self_: bool = True  # NTF_SELF: the VXLAN device's own table, not a bridge master's


@dataclass(frozen=True)
class KernelState:
    """A dump of everything on the overlay device (empty when the device does not exist)."""

    link: LinkState | None
    addresses: tuple[str, ...] = ()  # IPv4 "a.b.c.d/len" on the device
    routes: tuple[Route, ...] = ()  # main-table IPv4 routes whose output device is the device
    neighbours: tuple[Neighbour, ...] = ()
    fdb: tuple[FdbEntry, ...] = ()


# -- operations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateVxlan:
    spec: VxlanSpec

    def command(self) -> str:
        s = self.spec
        return (
            f"ip link add {s.name} address {s.mac} mtu {s.mtu} type vxlan id {s.vni} local {s.local} "
            f"dev {s.underlay} dstport {s.port} {'learning' if s.learning else 'nolearning'}"
        )


@dataclass(frozen=True)
class DeleteLink:
    name: str

    def command(self) -> str:
        return f"ip link del {self.name}"


@dataclass(frozen=True)
class SetLink:
    name: str
    mtu: int | None = None
    up: bool | None = None

    def command(self) -> str:
        words = [f"ip link set {self.name}"]
        if self.mtu is not None:
            words.append(f"mtu {self.mtu}")
        if self.up is not None:
            words.append("up" if self.up else "down")
        return " ".join(words)


@dataclass(frozen=True)
class AddAddress:
    dev: str
    cidr: str

    def command(self) -> str:
        return f"ip addr add {self.cidr} dev {self.dev}"


@dataclass(frozen=True)
class DelAddress:
    dev: str
    cidr: str

    def command(self) -> str:
        return f"ip addr del {self.cidr} dev {self.dev}"


@dataclass(frozen=True)
class ReplaceRoute:
    route: Route

    def command(self) -> str:
        r = self.route
        return f"ip route replace {r.dst} via {r.gateway} dev {r.dev}{' onlink' if r.onlink else ''}"


@dataclass(frozen=True)
class DelRoute:
    route: Route

    def command(self) -> str:
        return f"ip route del {self.route.dst} dev {self.route.dev}"


@dataclass(frozen=True)
class ReplaceNeighbour:
    neighbour: Neighbour

    def command(self) -> str:
        n = self.neighbour
        return f"ip neigh replace {n.ip} lladdr {n.mac} dev {n.dev} nud permanent"


@dataclass(frozen=True)
class DelNeighbour:
    neighbour: Neighbour

    def command(self) -> str:
        return f"ip neigh del {self.neighbour.ip} dev {self.neighbour.dev}"


@dataclass(frozen=True)
class ReplaceFdb:
    entry: FdbEntry

    def command(self) -> str:
        e = self.entry
        return f"bridge fdb replace {e.mac} dev {e.dev} dst {e.dst} self permanent"


@dataclass(frozen=True)
class DelFdb:
    entry: FdbEntry

    def command(self) -> str:
        e = self.entry
        return f"bridge fdb del {e.mac} dev {e.dev} dst {e.dst} self"


Op = (
    CreateVxlan
    | DeleteLink
    | SetLink
    | AddAddress
    | DelAddress
    | ReplaceRoute
    | DelRoute
    | ReplaceNeighbour
    | DelNeighbour
    | ReplaceFdb
    | DelFdb
)

#: Operations that remove something; a removal of what is already gone is not an error.
REMOVALS = (DeleteLink, DelAddress, DelRoute, DelNeighbour, DelFdb)


@dataclass(frozen=True)
class OpError:
    op: Op
    message: str

    def __str__(self) -> str:
        return f"{self.op.command()}: {self.message}"


Action = Literal["add", "remove", "update", "keep"]
Kind = Literal["link", "address", "route", "neighbour", "fdb"]

SYSCTLS: Mapping[str, str] = {"net.ipv4.ip_forward": "1"}
