"""The real SR-IOV drivers: VF attributes through the PF, and VF netdevs moved between namespaces.

`NetlinkVfConfigurator` is what ``ip link set PF vf N vlan .. mac .. spoofchk ..``
does: one IFLA_VF_* attribute per request, so a driver that lacks one (rate
limits, trust) fails only that one, and resetting an attribute a driver does not
support is not an error. `NetlinkVfLinks` moves a VF's netdev into a pod's
network namespace and back. A VF is found by an alias the agent gives it
(``atoll-vf:<PCI address>``), which stays with the device whatever it is
called and wherever it is: in the pod, at home under its own name, or at home
under the pod's name after the kernel moved it back from a namespace that
went away.

Each call runs on a fresh thread; calls inside a pod's namespace first join
it with setns(2) (agent.network.netlink.run_in), so only that thread moves.
pyroute2 is imported on first use.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Any

from agent.network.netlink import run_in
from agent.sriov.model import CLEAN, LINK_STATES, VfSettings

ALIAS_PREFIX = "atoll-vf:"
_UNSUPPORTED = (errno.EOPNOTSUPP, errno.EINVAL)


def _index(ipr: Any, *, name: str = "", alias: str = "") -> int | None:
    if name:
        found = ipr.link_lookup(ifname=name)
        if found:
            return int(found[0])
    if alias:
        for link in ipr.get_links():
            if link.get_attr("IFLA_IFALIAS") == alias:
                return int(link["index"])
    return None


class NetlinkVfConfigurator:
    def configure(self, pf: str, index: int, settings: VfSettings) -> None:
        def apply(ipr: Any) -> None:
            pf_index = _index(ipr, name=pf)
            if pf_index is None:
                raise OSError(errno.ENODEV, f"no PF {pf}")
            parts: list[tuple[str, dict[str, Any]]] = [
                ("mac", {"mac": settings.mac or "00:00:00:00:00:00"}),
                ("vlan", {"vlan": {"vlan": settings.vlan, "qos": settings.qos}}),
                ("spoofchk", {"spoofchk": int(settings.spoofchk)}),
                ("trust", {"trust": int(settings.trust)}),
                ("link_state", {"link_state": LINK_STATES[settings.link_state]}),
                (
                    "rate",
                    {"rate": {"min_tx_rate": settings.min_tx_rate, "max_tx_rate": settings.max_tx_rate}},
                ),
            ]
            for name, attrs in parts:
                try:
                    ipr.link("set", index=pf_index, vf={"vf": index, **attrs})
                except OSError as exc:
                    if exc.errno in _UNSUPPORTED and _is_default(name, settings):
                        continue  # resetting what the driver never supported: nothing to undo
                    raise OSError(exc.errno, f"{pf} vf {index} {name}: {exc.strerror or exc}") from None

        run_in(None, apply)

    def read(self, pf: str, index: int) -> VfSettings:
        def get(ipr: Any) -> VfSettings:
            pf_index = _index(ipr, name=pf)
            if pf_index is None:
                raise OSError(errno.ENODEV, f"no PF {pf}")
            (link,) = ipr.get_links(pf_index, ext_mask=1)  # RTEXT_FILTER_VF
            vfs = link.get_attr("IFLA_VFINFO_LIST")
            for info in vfs.get_attrs("IFLA_VF_INFO") if vfs else []:
                mac = info.get_attr("IFLA_VF_MAC")
                if mac is None or mac["vf"] != index:
                    continue
                vlan = info.get_attr("IFLA_VF_VLAN") or {"vlan": 0, "qos": 0}
                rate = info.get_attr("IFLA_VF_RATE") or {"min_tx_rate": 0, "max_tx_rate": 0}
                state = (info.get_attr("IFLA_VF_LINK_STATE") or {"link_state": 0})["link_state"]
                address = str(mac["mac"])[:17]
                return VfSettings(
                    vlan=vlan["vlan"],
                    qos=vlan["qos"],
                    mac="" if address == "00:00:00:00:00:00" else address,
                    spoofchk=bool((info.get_attr("IFLA_VF_SPOOFCHK") or {"spoofchk": 1})["spoofchk"]),
                    trust=bool((info.get_attr("IFLA_VF_TRUST") or {"trust": 0})["trust"]),
                    link_state={v: k for k, v in LINK_STATES.items()}.get(state, "auto"),
                    min_tx_rate=rate["min_tx_rate"],
                    max_tx_rate=rate["max_tx_rate"],
                )
            raise OSError(errno.ENOENT, f"{pf} has no vf {index}")

        return run_in(None, get)


def _is_default(name: str, settings: VfSettings) -> bool:
    if name == "mac":
        return not settings.mac
    if name == "vlan":
        return settings.vlan == 0 and settings.qos == 0
    if name == "rate":
        return settings.min_tx_rate == 0 and settings.max_tx_rate == 0
    return bool(getattr(settings, name) == getattr(CLEAN, name))


class NetlinkVfLinks:
    def to_pod(
        self,
        pci: str,
        netdev: str,
        netns: str,
        ifname: str,
        *,
        addresses: Sequence[str] = (),
        routes: Sequence[tuple[str, str]] = (),
    ) -> None:
        alias = ALIAS_PREFIX + pci

        def leave_home(ipr: Any) -> None:
            index = _index(ipr, name=netdev) if netdev else None
            if index is None:
                index = _index(ipr, alias=alias)
            if index is None:
                return  # not at home: moved already (a retried attach)
            ipr.link("set", index=index, ifalias=alias)
            ipr.link("set", index=index, state="down")
            ipr.link("set", index=index, net_ns_fd=netns)

        def settle_in(ipr: Any) -> None:
            index = _index(ipr, alias=alias)
            if index is None:
                raise OSError(errno.ENODEV, f"VF {pci} ({netdev}) is neither at home nor in {netns}")
            ipr.link("set", index=index, ifname=ifname)
            present = {f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=index)}
            for cidr in addresses:
                if cidr not in present:
                    address, _, prefix = cidr.partition("/")
                    ipr.addr("add", index=index, address=address, prefixlen=int(prefix))
            ipr.link("set", index=index, state="up")
            for dst, gateway in routes:
                ipr.route("replace", dst=dst, oif=index, **({"gateway": gateway} if gateway else {}))

        run_in(None, leave_home)
        run_in(netns, settle_in)

    def to_host(self, pci: str, netdev: str, netns: str) -> None:
        alias = ALIAS_PREFIX + pci
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:

            def leave_pod(ipr: Any) -> None:
                index = _index(ipr, alias=alias)
                if index is None:
                    return  # at home already (the pod's namespace went, or a retried release)
                ipr.flush_addr(index=index)
                ipr.link("set", index=index, state="down")
                ipr.link("set", index=index, net_ns_fd=home)

            if netns and os.path.exists(netns):
                try:
                    run_in(netns, leave_pod)
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.EINVAL):  # the namespace went meanwhile
                        raise
        finally:
            os.close(home)

        def settle_home(ipr: Any) -> None:
            index = _index(ipr, alias=alias)
            if index is None:
                index = _index(ipr, name=netdev)
            if index is None:
                raise OSError(errno.ENODEV, f"VF {pci} ({netdev}) not found at home")
            ipr.flush_addr(index=index)
            ipr.link("set", index=index, state="down")
            link = ipr.get_links(index)[0]
            if link.get_attr("IFLA_IFNAME") != netdev:
                ipr.link("set", index=index, ifname=netdev)

        run_in(None, settle_home)
