"""The real sandbox plumber: a veth pair from the pod network's bridge into a pod, through pyroute2.

What CNI's bridge plugin does, in two netlink conversations and no process:
on the host, the pair is created with its pod end already in the sandbox's
namespace (IFLA_NET_NS_FD on the peer), and the host end joins the bridge;
inside, on a thread that joined the namespace (setns), the pod end gets its
MTU, address and default route, and IPv6 is switched off on it (the networks
are IPv4, as the engine does for them). Every step checks first, so a retry
after a crash half way finishes the job and a second call changes nothing.

The namespace is opened once, by the engine's bound path for it, and both
conversations use that descriptor: a namespace found by a process id could
be another's by the time it is used. The agent's own namespace is refused.
The pod end's MAC is derived from its address (02:42 and the four bytes, as
Docker does), so a pod that keeps its address across sandboxes keeps its MAC
and no neighbour holds a stale one.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
from typing import Any

from agent.network.netlink import run_in
from agent.network.sandbox import Plumbing
from atoll import errors


def _one(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def mac_of(address: str) -> str:
    """02:42 and the address's four bytes (Docker's scheme): stable per address, locally administered."""
    packed = ipaddress.IPv4Interface(address).ip.packed
    return "02:42:" + ":".join(f"{b:02x}" for b in packed)


def _host_side(ipr: Any, p: Plumbing, netns_fd: int) -> None:
    bridge = _one(ipr, p.bridge)
    if bridge is None:
        raise OSError(errno.ENODEV, f"no bridge {p.bridge}")
    host = _one(ipr, p.host_ifname)
    if host is None:
        # Both ends at once: the pod end is born inside the sandbox, so no name clashes on the host.
        ipr.link(
            "add",
            ifname=p.host_ifname,
            kind="veth",
            mtu=p.mtu,
            peer={"ifname": p.ifname, "net_ns_fd": netns_fd},
        )
        host = _one(ipr, p.host_ifname)
        if host is None:
            raise OSError(errno.ENODEV, f"{p.host_ifname} vanished after it was created")
    ipr.link("set", index=host, master=bridge, mtu=p.mtu, state="up")


def _pod_side(ipr: Any, p: Plumbing) -> None:
    index = _one(ipr, p.ifname)
    if index is None:
        raise OSError(errno.ENODEV, f"no {p.ifname} in {p.netns}")
    lo = _one(ipr, "lo")
    if lo is not None:
        ipr.link("set", index=lo, state="up")
    _no_ipv6(p.ifname)
    ipr.link("set", index=index, mtu=p.mtu, address=mac_of(p.address), state="up")
    address, _, prefix = p.address.partition("/")
    present = {(a.get_attr("IFA_ADDRESS"), int(a["prefixlen"])) for a in ipr.get_addr(index=index, family=2)}
    for other, length in present - {(address, int(prefix))}:
        ipr.addr("del", index=index, address=other, prefixlen=length)
    if (address, int(prefix)) not in present:
        ipr.addr("add", index=index, address=address, prefixlen=int(prefix))
    if p.gateway:
        ipr.route("replace", dst="0.0.0.0/0", gateway=p.gateway, oif=index)


def _no_ipv6(ifname: str) -> None:
    # /proc/sys/net is the opening thread's namespace: this thread is in the pod's.
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as knob:
            knob.write("1")
    except FileNotFoundError:
        pass  # a kernel without IPv6


class VethPlumber:
    def __init__(self, timeout: float = 10.0) -> None:
        self._timeout = timeout

    def _plumb_sync(self, p: Plumbing) -> None:
        ipaddress.IPv4Interface(p.address)  # plain data is checked before the kernel sees it
        try:
            fd = os.open(p.netns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            # Not a passing failure: the engine's namespaces are out of this agent's reach (an
            # engine on another host, in another mount namespace, or rootless).
            raise errors.FailedPrecondition(f"cannot open the sandbox's network namespace: {exc}") from None
        try:
            ns, own = os.fstat(fd), os.stat("/proc/self/ns/net")
            if (ns.st_dev, ns.st_ino) == (own.st_dev, own.st_ino):
                raise errors.FailedPrecondition(f"{p.netns} is the agent's own network namespace")
            run_in(None, lambda ipr: _host_side(ipr, p, fd))
            run_in(fd, lambda ipr: _pod_side(ipr, p))
        finally:
            os.close(fd)

    async def plumb(self, plumbing: Plumbing) -> None:
        try:
            await asyncio.wait_for(asyncio.to_thread(self._plumb_sync, plumbing), self._timeout)
        except OSError as exc:
            raise errors.Unavailable(f"sandbox network ({plumbing.host_ifname}): {exc}") from None
        except TimeoutError:
            raise errors.Unavailable(
                f"sandbox network ({plumbing.host_ifname}): no answer in {self._timeout:.0f}s"
            ) from None
