"""Find the underlay: the interface and address VXLAN packets leave this node from.

By default that is the route to the coordinator, `ip route get <coordinator>`
(the coordinator is reachable on the network the nodes share; hosts need no
default route). Configuration can name the interface, the public IP, or
both; a public IP that is on no local interface is a 1:1 NAT address (as
flannel's --public-ip): peers send to it, the device sends from the
interface's own address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from agent.network.model import Interface, OverlayError, Underlay
from agent.network.netlink import NetlinkDriver


def _first_ipv4(iface: Interface) -> str:
    return iface.addresses[0].split("/")[0] if iface.addresses else ""


def _holder(ifaces: dict[str, Interface], ip: str) -> Interface | None:
    return next((i for i in ifaces.values() if any(a.split("/")[0] == ip for a in i.addresses)), None)


async def _resolve(host: str) -> str:
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, family=socket.AF_INET)
    except OSError as exc:
        raise OverlayError(f"cannot resolve the coordinator {host!r}: {exc}") from None
    return str(infos[0][4][0])


async def detect_underlay(
    netlink: NetlinkDriver, coordinator: str, *, iface: str | None = None, public_ip: str | None = None
) -> Underlay:
    ifaces = {i.name: i for i in await netlink.interfaces()}
    if public_ip:
        try:
            public_ip = str(ipaddress.IPv4Address(public_ip))
        except ValueError:
            raise OverlayError(f"public IP {public_ip!r} is not an IPv4 address") from None
    if iface:
        chosen = ifaces.get(iface)
        if chosen is None:
            raise OverlayError(
                f"overlay interface {iface!r} does not exist (have: {', '.join(sorted(ifaces))})"
            )
        local = public_ip if public_ip and _holder({iface: chosen}, public_ip) else _first_ipv4(chosen)
    elif public_ip:
        holder = _holder(ifaces, public_ip)
        if holder is None:
            raise OverlayError(
                f"public IP {public_ip} is on no interface of this host; "
                "behind 1:1 NAT, configure the overlay interface as well"
            )
        chosen, local = holder, public_ip
    else:
        chosen, local = await _towards(netlink, ifaces, coordinator)
    if not local:
        raise OverlayError(f"overlay interface {chosen.name} has no IPv4 address")
    return Underlay(iface=chosen.name, local_ip=local, public_ip=public_ip or local, mtu=chosen.mtu)


async def _towards(
    netlink: NetlinkDriver, ifaces: dict[str, Interface], coordinator: str
) -> tuple[Interface, str]:
    ip = await _resolve(coordinator)
    route = await netlink.route_get(ip)
    if route is not None and not route.local:
        chosen = ifaces.get(route.iface)
        if chosen is not None and not chosen.loopback:
            return chosen, route.src or _first_ipv4(chosen)
    if route is not None and route.local:
        # The coordinator runs here: the interface holding its address is the node's.
        holder = _holder(ifaces, ip)
        if holder is not None and not holder.loopback:
            return holder, ip
    default = await netlink.default_route_iface()
    chosen = ifaces.get(default or "")
    if chosen is None or chosen.loopback:
        via = f"through {route.iface}" if route else "through no route"
        raise OverlayError(
            f"cannot tell the underlay: the coordinator {coordinator} is reached {via} and there "
            "is no default route; configure the overlay interface or public IP"
        )
    return chosen, _first_ipv4(chosen)
