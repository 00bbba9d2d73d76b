"""The kernel seam of the overlay: `NetlinkDriver`, and its pyroute2 implementation.

The driver only reads and writes plain data (agent.network.model); every
decision lives in agent.network.plan. `PyrouteNetlink` uses pyroute2's plain
synchronous `IPRoute` (not IPDB/NDB, which keep their own cached view of the
kernel and threads of their own). IPRoute keeps its socket and event loop in
thread-local storage, so each driver owns exactly one worker thread: the
socket is made there, every call runs there, under a deadline. A call that
misses its deadline abandons that thread (and its socket) and the next call
starts a fresh one.

With `netns=PATH` the worker thread joins that network namespace with
setns(2) before doing anything (only that thread moves, and it checks that it
did), so sysctl writes under /proc/sys/net and the netlink socket both act
there. The agent itself runs in the host's namespace and passes nothing;
tests point the driver at a simulated host.

pyroute2 is imported on the worker thread when first used (importing it
costs a third of a second and probes the host), only as much of it as IPRoute
needs (agent.network.pyroute), and its NetlinkError is
turned into OSError(errno) right at the call, so nothing else depends on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import ctypes.util
import errno
import logging
import os
import pathlib
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from agent.network.model import (
    REMOVALS,
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
    canonical_mac,
)
from atoll import errors

log = logging.getLogger(__name__)

T = TypeVar("T")

MAIN_TABLE = 254
RTN_UNICAST = 1
RTN_LOCAL = 2
RTNH_F_ONLINK = 4
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
CLONE_NEWNET = 0x40000000

# A removal of something that is already gone, or an add of what is already there, succeeded.
_GONE = {errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL}


class NetlinkFailure(errors.Unavailable):
    """A netlink request failed or did not answer in time."""


class NetlinkDriver(Protocol):
    async def interfaces(self) -> list[Interface]:
        """Every link with its IPv4 addresses (underlay detection)."""
        ...

    async def route_get(self, dst: str) -> RouteTo | None:
        """`ip route get DST`; None when there is no route."""
        ...

    async def default_route_iface(self) -> str | None: ...

    async def dump(self, device: str) -> KernelState:
        """The device, its IPv4 addresses, main-table routes through it, its neighbours and FDB."""
        ...

    async def execute(self, ops: Sequence[Op]) -> list[OpError]:
        """Apply `ops` in order; a failed op is reported and the rest still run."""
        ...

    async def read_sysctl(self, name: str) -> str: ...

    async def write_sysctl(self, name: str, value: str) -> None: ...

    async def set_hairpin(self, bridge: str) -> int:
        """Hairpin mode on every port of `bridge`, so a pod can reach itself through a service.

        Returns how many ports were switched on; a missing bridge is not an error."""
        ...

    async def close(self) -> None: ...


def enter_netns(netns: str | int) -> None:
    """Move the calling thread (only it) into the network namespace at path `netns` (or open as
    file descriptor `netns`), and check it did."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = netns if isinstance(netns, int) else os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
        target = os.fstat(fd).st_ino
    finally:
        if not isinstance(netns, int):
            os.close(fd)
    if os.stat("/proc/thread-self/ns/net").st_ino != target:
        raise OSError(errno.EINVAL, f"thread did not enter network namespace {netns}")


class ErrnoIPRoute:
    """An IPRoute whose NetlinkError comes out as OSError(errno)."""

    def __init__(self, ipr: Any, error: type[Exception]) -> None:
        self._ipr = ipr
        self._error = error

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._ipr, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except self._error as exc:
                code = int(getattr(exc, "code", 0) or errno.EIO)
                raise OSError(code, f"{name} {args[0] if args else ''}: {os.strerror(code)}") from None

        return call


class PyrouteNetlink:
    def __init__(self, *, netns: str | None = None, timeout: float = 10.0) -> None:
        self._netns = netns
        self._timeout = timeout
        self._local = threading.local()
        self._pool = self._new_pool()
        self._closed = False

    def _new_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        init: Callable[[], None] | None = None
        if self._netns is not None:
            netns = self._netns

            def init() -> None:
                enter_netns(netns)

        # If setns fails the pool is broken and every call fails: never a silent fallback
        # to the namespace the agent runs in.
        return concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="netlink", initializer=init
        )

    def _ipr(self) -> Any:
        ipr = getattr(self._local, "ipr", None)
        if ipr is None:
            if self._netns is not None and (
                os.stat("/proc/thread-self/ns/net").st_ino != os.stat(self._netns).st_ino
            ):
                # Only the worker thread has joined the namespace; never act anywhere else.
                raise OSError(errno.EINVAL, f"netlink call outside network namespace {self._netns}")
            from agent.network import pyroute

            iproute, netlink_error = pyroute.load()
            ipr = ErrnoIPRoute(iproute(), netlink_error)
            self._local.ipr = ipr
        return ipr

    async def _call(self, fn: Callable[..., T], *args: Any, extra_time: float = 0.0) -> T:
        if self._closed:
            raise NetlinkFailure("netlink driver is closed")
        pool = self._pool
        loop = asyncio.get_running_loop()
        limit = self._timeout + extra_time
        try:
            return await asyncio.wait_for(loop.run_in_executor(pool, fn, *args), limit)
        except TimeoutError:
            # The worker is stuck in the kernel or pyroute2: abandon it with its socket.
            if self._pool is pool:
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            raise NetlinkFailure(f"netlink {fn.__name__} did not return within {limit:.0f}s") from None
        except concurrent.futures.BrokenExecutor as exc:
            raise NetlinkFailure(f"netlink worker could not start: {exc}") from None
        except OSError as exc:  # netlink errors, setns, /proc/sys
            raise NetlinkFailure(f"netlink {fn.__name__}: {exc}") from None

    # -- reads ----------------------------------------------------------------------------------

    async def interfaces(self) -> list[Interface]:
        return await self._call(self._interfaces_sync)

    def _interfaces_sync(self) -> list[Interface]:
        ipr = self._ipr()
        addrs: dict[int, list[str]] = {}
        for msg in ipr.addr("dump", family=socket.AF_INET):
            addrs.setdefault(msg["index"], []).append(f"{msg.get_attr('IFA_LOCAL')}/{msg['prefixlen']}")
        return [
            Interface(
                name=msg.get_attr("IFLA_IFNAME"),
                index=msg["index"],
                mtu=msg.get_attr("IFLA_MTU") or 0,
                up=bool(msg["flags"] & IFF_UP),
                loopback=bool(msg["flags"] & IFF_LOOPBACK),
                addresses=tuple(addrs.get(msg["index"], ())),
            )
            for msg in ipr.link("dump")
        ]

    async def route_get(self, dst: str) -> RouteTo | None:
        return await self._call(self._route_get_sync, dst)

    def _route_get_sync(self, dst: str) -> RouteTo | None:
        ipr = self._ipr()
        try:
            msg = ipr.route("get", dst=dst)[0]
        except OSError as exc:
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                return None
            raise
        oif = msg.get_attr("RTA_OIF")
        name = self._name_of(ipr, oif) if oif else ""
        return RouteTo(
            iface=name or "", src=msg.get_attr("RTA_PREFSRC") or "", local=msg["type"] == RTN_LOCAL
        )

    async def default_route_iface(self) -> str | None:
        return await self._call(self._default_route_sync)

    def _default_route_sync(self) -> str | None:
        ipr = self._ipr()
        best: tuple[int, int] | None = None
        for msg in ipr.route("dump", family=socket.AF_INET):
            table = msg.get_attr("RTA_TABLE") or msg["table"]
            oif = msg.get_attr("RTA_OIF")
            if msg["dst_len"] == 0 and table == MAIN_TABLE and oif:
                prio = msg.get_attr("RTA_PRIORITY") or 0
                if best is None or prio < best[0]:
                    best = (prio, oif)
        return self._name_of(ipr, best[1]) if best else None

    @staticmethod
    def _name_of(ipr: Any, index: int) -> str | None:
        try:
            return str(ipr.link("get", index=index)[0].get_attr("IFLA_IFNAME"))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise

    async def dump(self, device: str) -> KernelState:
        return await self._call(self._dump_sync, device)

    def _dump_sync(self, device: str) -> KernelState:
        ipr = self._ipr()
        try:
            msg = ipr.link("get", ifname=device)[0]
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return KernelState(link=None)
            raise
        link = self._link_state(ipr, msg)
        idx = link.index
        addresses = tuple(
            sorted(
                f"{m.get_attr('IFA_LOCAL') or m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}"
                for m in ipr.addr("dump", family=socket.AF_INET)
                if m["index"] == idx
            )
        )
        routes = []
        for m in ipr.route("dump", family=socket.AF_INET):
            table = m.get_attr("RTA_TABLE") or m["table"]
            if table != MAIN_TABLE or m["type"] != RTN_UNICAST or m.get_attr("RTA_OIF") != idx:
                continue
            routes.append(
                Route(
                    dst=f"{m.get_attr('RTA_DST') or '0.0.0.0'}/{m['dst_len']}",
                    gateway=m.get_attr("RTA_GATEWAY") or "",
                    dev=device,
                    onlink=bool(m["flags"] & RTNH_F_ONLINK),
                )
            )
        neighbours = [
            Neighbour(
                ip=m.get_attr("NDA_DST"),
                mac=_mac_or_empty(m.get_attr("NDA_LLADDR")),
                dev=device,
                permanent=bool(m["state"] & NUD_PERMANENT),
            )
            for m in ipr.neigh("dump", family=socket.AF_INET, ifindex=idx)
            if m["ifindex"] == idx and m.get_attr("NDA_DST")
        ]
        fdb = [
            FdbEntry(
                mac=_mac_or_empty(m.get_attr("NDA_LLADDR")),
                dst=m.get_attr("NDA_DST") or "",
                dev=device,
                permanent=bool(m["state"] & NUD_PERMANENT),
                self_=bool(m["flags"] & NTF_SELF),
            )
            for m in ipr.fdb("dump", ifindex=idx)
            if m["ifindex"] == idx
        ]
        return KernelState(
            link=link, addresses=addresses, routes=tuple(routes), neighbours=tuple(neighbours), fdb=tuple(fdb)
        )

    def _link_state(self, ipr: Any, msg: Any) -> LinkState:
        info = msg.get_attr("IFLA_LINKINFO")
        kind = (info.get_attr("IFLA_INFO_KIND") if info is not None else None) or ""
        data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
        vxlan: dict[str, Any] = {}
        if kind == "vxlan" and data is not None:
            under = data.get_attr("IFLA_VXLAN_LINK")
            vxlan = {
                "vni": data.get_attr("IFLA_VXLAN_ID"),
                "port": data.get_attr("IFLA_VXLAN_PORT"),
                "local": data.get_attr("IFLA_VXLAN_LOCAL"),
                "underlay": self._name_of(ipr, under) if under else None,
                "learning": bool(data.get_attr("IFLA_VXLAN_LEARNING")),
            }
        return LinkState(
            name=msg.get_attr("IFLA_IFNAME"),
            index=msg["index"],
            kind=kind,
            mtu=msg.get_attr("IFLA_MTU") or 0,
            mac=_mac_or_empty(msg.get_attr("IFLA_ADDRESS")),
            up=bool(msg["flags"] & IFF_UP),
            **vxlan,
        )

    async def read_sysctl(self, name: str) -> str:
        return await self._call(self._read_sysctl_sync, name)

    @staticmethod
    def _read_sysctl_sync(name: str) -> str:
        with open(_sysctl_path(name)) as f:
            return f.read().strip()

    # -- writes ---------------------------------------------------------------------------------

    async def write_sysctl(self, name: str, value: str) -> None:
        await self._call(self._write_sysctl_sync, name, value)

    @staticmethod
    def _write_sysctl_sync(name: str, value: str) -> None:
        with open(_sysctl_path(name), "w") as f:
            f.write(value)

    async def set_hairpin(self, bridge: str) -> int:
        return await self._call(self._set_hairpin_sync, bridge)

    @staticmethod
    def _set_hairpin_sync(bridge: str) -> int:
        # sysfs here is the agent's own network namespace's (it runs inside it).
        ports = pathlib.Path("/sys/class/net") / bridge / "brif"
        changed = 0
        try:
            entries = list(ports.iterdir())
        except FileNotFoundError:
            return 0
        for port in entries:
            flag = port / "hairpin_mode"
            try:
                if flag.read_text().strip() != "1":
                    flag.write_text("1")
                    changed += 1
            except OSError:
                continue  # the port went away meanwhile
        return changed

    async def execute(self, ops: Sequence[Op]) -> list[OpError]:
        if not ops:
            return []
        return await self._call(self._execute_sync, list(ops), extra_time=0.05 * len(ops))

    def _execute_sync(self, ops: list[Op]) -> list[OpError]:
        ipr = self._ipr()
        indexes: dict[str, int] = {}

        def index(name: str) -> int:
            if name not in indexes:
                found = ipr.link_lookup(ifname=name)
                if not found:
                    raise OSError(errno.ENODEV, f"no device {name}")
                indexes[name] = found[0]
            return indexes[name]

        failed = []
        for op in ops:
            try:
                self._apply_one(ipr, op, index)
            except OSError as exc:
                code = exc.errno
                if isinstance(op, REMOVALS) and code in _GONE:
                    continue
                if isinstance(op, AddAddress) and code == errno.EEXIST:
                    continue
                failed.append(OpError(op, os.strerror(code) if code else str(exc)))
            if isinstance(op, (CreateVxlan, DeleteLink)):
                indexes.clear()
        return failed

    @staticmethod
    def _apply_one(ipr: Any, op: Op, index: Callable[[str], int]) -> None:
        match op:
            case CreateVxlan(spec=s):
                ipr.link(
                    "add",
                    ifname=s.name,
                    kind="vxlan",
                    address=s.mac,
                    mtu=s.mtu,
                    vxlan_id=s.vni,
                    vxlan_local=s.local,
                    vxlan_link=index(s.underlay),
                    vxlan_port=s.port,
                    vxlan_learning=1 if s.learning else 0,
                )
            case DeleteLink(name=name):
                ipr.link("del", index=index(name))
            case SetLink(name=name, mtu=mtu, up=up):
                changes: dict[str, Any] = {}
                if mtu is not None:
                    changes["mtu"] = mtu
                if up is not None:
                    changes["state"] = "up" if up else "down"
                ipr.link("set", index=index(name), **changes)
            case AddAddress(dev=dev, cidr=cidr) | DelAddress(dev=dev, cidr=cidr):
                address, _, prefix = cidr.partition("/")
                verb = "add" if isinstance(op, AddAddress) else "del"
                ipr.addr(verb, index=index(dev), address=address, prefixlen=int(prefix or 32))
            case ReplaceRoute(route=r):
                ipr.route(
                    "replace",
                    dst=r.dst,
                    **({"gateway": r.gateway} if r.gateway else {}),
                    oif=index(r.dev),
                    table=MAIN_TABLE,
                    flags=RTNH_F_ONLINK if r.onlink else 0,
                )
            case DelRoute(route=r):
                ipr.route("del", dst=r.dst, oif=index(r.dev), table=MAIN_TABLE)
            case ReplaceNeighbour(neighbour=n):
                ipr.neigh("replace", dst=n.ip, lladdr=n.mac, ifindex=index(n.dev), state=NUD_PERMANENT)
            case DelNeighbour(neighbour=n):
                ipr.neigh("del", dst=n.ip, ifindex=index(n.dev))
            case ReplaceFdb(entry=e):
                # pyroute2 fills in NTF_SELF and the state for add/append/del, not for replace.
                ipr.fdb(
                    "replace",
                    ifindex=index(e.dev),
                    lladdr=e.mac,
                    dst=e.dst,
                    flags=NTF_SELF,
                    state=NUD_PERMANENT | NUD_NOARP,
                )
            case DelFdb(entry=e):
                ipr.fdb("del", ifindex=index(e.dev), lladdr=e.mac, dst=e.dst, flags=NTF_SELF)

    async def close(self) -> None:
        if self._closed:
            return
        try:
            await self._call(self._close_sync)
        except NetlinkFailure as exc:
            log.debug("closing the netlink socket failed: %s", exc)
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _close_sync(self) -> None:
        ipr = getattr(self._local, "ipr", None)
        if ipr is not None:
            ipr.close()
            self._local.ipr = None


def _sysctl_path(name: str) -> str:
    if not name or "/" in name or ".." in name:
        raise ValueError(f"bad sysctl name {name!r}")
    return "/proc/sys/" + name.replace(".", "/")


def _mac_or_empty(value: object) -> str:
    if not value:
        return ""
    try:
        return canonical_mac(str(value))
    except ValueError:
        return ""


def _ipr() -> Any:
    from agent.network import pyroute

    iproute, netlink_error = pyroute.load()
    return ErrnoIPRoute(iproute(), netlink_error)


def run_in(netns: str | int | None, fn: Callable[[Any], T]) -> T:
    """`fn(ipr)` on a new thread, inside `netns` (a path or an open descriptor) when given (the
    caller's namespace otherwise)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            if netns is not None:
                enter_netns(netns)
            ipr = _ipr()
            try:
                result.append(fn(ipr))
            finally:
                ipr.close()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=body, name=f"netlink{'' if netns is None else '-netns'}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]
