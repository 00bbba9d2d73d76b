"""Pod sandboxes whose network the agent builds, CNI's way, instead of the engine.

With `--sandbox-network agent`, a pod without host ports gets an infra
container started with no network (Docker's `none`: a new namespace holding
loopback alone). The agent then adds what Docker's bridge driver would have:
a veth pair whose host end joins the pod network's bridge and whose other end
is the pod's `eth0`, one address, and a default route through the bridge's
gateway. It is what CNI's bridge plugin does for kubelet. It is faster under
parallel load because Docker's bridge driver serialises endpoint set-up
(bench/pod_startup.py measures both).

Addresses: Docker's IPAM hands out only inside the network's `IPRange`, so
the agent takes its addresses from the rest of the subnet and the two never
meet. A network without an `IPRange` (Docker's default `bridge`, say) leaves
the agent no room: its pods keep the engine's network. The overlay's network
is created with the lower half of the lease as its range when this mode is on.
Each pod keeps one address for its lifetime (across sandbox restarts), held in
``<state-dir>/sandbox/ipam.json``, written before the address is used and
released when the pod is removed.

Pods with host ports keep the engine's network: Docker publishes their ports.
Kernel state needs no agent: the veth goes with the sandbox's namespace, and
a restarted agent finds the pod plumbed already (the sandbox id it plumbed is
in the pod's record).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import pathlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from agent.network.leasebook import LeaseBook
from agent.runtime.base import BridgeNetwork
from atoll import errors

log = logging.getLogger(__name__)

MODES = ("engine", "agent")


@dataclass(frozen=True)
class Plumbing:
    """One sandbox's network, as plain data: what the plumber builds."""

    netns: str  # the infra container's network namespace, as the engine binds it (SandboxKey)
    host_ifname: str
    bridge: str
    address: str  # CIDR, "10.1.2.200/24"
    gateway: str
    mtu: int
    ifname: str = "eth0"


class Plumber(Protocol):
    """Builds a sandbox's network (agent.network.veth is the real one). Idempotent."""

    async def plumb(self, plumbing: Plumbing) -> None: ...


def host_ifname(sandbox_id: str) -> str:
    """The host end's name: stable per sandbox, 15 characters at most (IFNAMSIZ)."""
    return "veth" + hashlib.sha256(sandbox_id.encode()).hexdigest()[:11]


@functools.lru_cache(maxsize=16)
def agent_share(info: BridgeNetwork) -> tuple[ipaddress.IPv4Address, ...]:
    """The addresses of `info`'s subnet that are the agent's to give: outside Docker's range, and
    neither the gateway, the network address nor the broadcast address. Highest first (cached:
    a network's share is asked for every new pod)."""
    if not info.ip_range or not info.gateway:
        return ()  # no room left to the agent, or no gateway to route pods through
    subnet = ipaddress.IPv4Network(info.subnet, strict=False)
    engine = ipaddress.IPv4Network(info.ip_range, strict=False)
    if not engine.subnet_of(subnet) or engine == subnet:
        return ()
    skip = {subnet.network_address, subnet.broadcast_address, ipaddress.IPv4Address(info.gateway)}
    skip.update(ipaddress.IPv4Address(a) for a in info.reserved)
    return tuple(a for a in reversed(list(subnet)) if a not in engine and a not in skip)


@functools.lru_cache(maxsize=16)
def _share_set(info: BridgeNetwork) -> frozenset[ipaddress.IPv4Address]:
    return frozenset(agent_share(info))


def engine_share(subnet: str) -> str:
    """The IP range an agent-created network leaves to Docker: the subnet's lower half."""
    net = ipaddress.IPv4Network(subnet, strict=False)
    if net.prefixlen >= 30:
        return ""
    return str(next(net.subnets(prefixlen_diff=1)))


class SandboxIpam:
    """Addresses of pods' sandboxes per engine network, kept on disk (host-local IPAM). No
    directory fsync: each pod's record carries its address too, and adopt() rebuilds from them
    (also what a file found unreadable, and set aside, loses)."""

    def __init__(self, state_dir: pathlib.Path) -> None:
        self._book = LeaseBook(state_dir / "sandbox" / "ipam.json", sync_dir=False)

    def adopt(self, holdings: Iterable[tuple[str, str, str]]) -> int:
        """Take (pod uid, network, address) as held, from the pods' records; how many were missing."""
        missing = 0
        for uid, network, address in holdings:
            held = self._book.of(network)
            ip = address.partition("/")[0]
            if ip not in held:
                held[ip] = uid
                missing += 1
        if missing:
            self._book.save()
        return missing

    def held(self, uid: str) -> dict[str, str]:
        """network -> address that pod `uid` holds."""
        leases = self._book.leases
        return {net: a for net, held in leases.items() for a, owner in held.items() if owner == uid}

    def address(self, info: BridgeNetwork, uid: str) -> str:
        """Pod `uid`'s address on `info` as CIDR: the one it holds, or the highest free one."""
        subnet = ipaddress.IPv4Network(info.subnet, strict=False)
        mine = _share_set(info)
        held = self._book.of(info.name)
        for address, owner in held.items():
            if owner == uid and ipaddress.IPv4Address(address) in mine:
                return f"{address}/{subnet.prefixlen}"
        for candidate in agent_share(info):
            if str(candidate) not in held:
                # The lease of an address the network no longer gives (a new subnet) goes.
                for stale in [a for a, owner in held.items() if owner == uid]:
                    del held[stale]
                held[str(candidate)] = uid
                self._book.save()
                return f"{candidate}/{subnet.prefixlen}"
        raise errors.ResourceExhausted(
            f"network {info.name}: no free address outside the engine's range {info.ip_range}"
        )

    def release(self, uid: str) -> None:
        self._book.release(lambda holder: holder == uid)

    def retain(self, wanted: Callable[[str], bool]) -> list[str]:
        """Release the addresses of pods `wanted` says no to (pods gone while the agent was away)."""
        gone = sorted(uid for uid in self._book.holders() if not wanted(uid))
        self._book.release(lambda holder: holder in gone)
        return gone


class SandboxNetworks:
    """Whether a pod's sandbox is the agent's to plumb, its address, and the plumbing itself."""

    def __init__(
        self,
        plumber: Plumber,
        ipam: SandboxIpam,
        inspect: Callable[[str], Awaitable[BridgeNetwork | None]],
        *,
        explicit: bool = True,
        recheck: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plumber = plumber
        self.ipam = ipam
        self._inspect = inspect
        self._recheck = recheck
        self._clock = clock
        self._known: dict[str, tuple[float, BridgeNetwork | None]] = {}
        self._warned: set[str] = set()
        # `--sandbox-network agent`: any network with room, and say why not where there is none.
        # `auto`: only networks the agent made (the overlay's), quietly; and if this host cannot
        # be plumbed at all (an engine elsewhere, namespaces out of reach), the engine from then on.
        self._explicit = explicit
        self.unusable = ""
        self._plumbed_once = False  # a host where it worked once is one where it works

    async def network(self, name: str) -> BridgeNetwork | None:
        """`name`'s bridge and share when the agent can plumb pods onto it, else None (cached)."""
        if self.unusable:
            return None
        now = self._clock()
        known = self._known.get(name)
        if known is not None and now - known[0] < self._recheck:
            return known[1]
        info = await self._inspect(name)
        if info is not None and not self._explicit and not info.managed:
            info = None  # an operator's network: its range may be kept for containers of theirs
        if info is not None and not agent_share(info):
            if self._explicit and name not in self._warned:
                self._warned.add(name)
                log.warning(
                    "sandbox network: engine network %s has no IP range that leaves addresses to the "
                    "agent (subnet %s, range %r): its pods keep the engine's network",
                    name,
                    info.subnet,
                    info.ip_range,
                )
            info = None
        self._known[name] = (now, info)
        return info

    def forget_network(self, name: str) -> None:
        """`name` was made again (a new lease): look at it afresh."""
        self._known.pop(name, None)

    def address(self, info: BridgeNetwork, uid: str) -> str:
        """Pod `uid`'s address on `info` (CIDR); ResourceExhausted when the agent's share is full."""
        return self.ipam.address(info, uid)

    async def plumb(self, info: BridgeNetwork, sandbox_id: str, netns: str, address: str) -> None:
        """Build sandbox `sandbox_id`'s network in `netns` with `address`."""
        plumbing = Plumbing(
            netns=netns,
            host_ifname=host_ifname(sandbox_id),
            bridge=info.bridge,
            address=address,
            gateway=info.gateway,
            mtu=info.mtu,
        )
        try:
            await self.plumber.plumb(plumbing)
        except errors.FailedPrecondition as exc:
            if not self._explicit and not self._plumbed_once and not self.unusable:
                self.unusable = str(exc)
                log.warning("sandbox network: %s; the engine builds pods' networks from now on", exc)
            raise
        self._plumbed_once = True

    def release(self, uid: str) -> None:
        self.ipam.release(uid)


class RecordingPlumber:
    """A fake plumber: records each Plumbing it is asked for and builds nothing (no kernel in
    unit tests; agent.network.veth is the real one, tested against the kernel in
    tests/integration). `fail` makes the next calls raise, as a kernel refusing would."""

    def __init__(self) -> None:
        self.plumbed: list[Plumbing] = []
        self.fail: errors.AtollError | None = None

    async def plumb(self, plumbing: Plumbing) -> None:
        if self.fail is not None:
            raise self.fail
        self.plumbed.append(plumbing)
