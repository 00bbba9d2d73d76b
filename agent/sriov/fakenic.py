"""A fake SR-IOV NIC whose VFs are real netdevs that carry traffic, VLANs included.

Fake: no SR-IOV hardware exists on the machines Atoll is tested on. With
``--sriov-driver fake --sriov-fake-netdevs`` each VF gets a veth pair when
``sriov_numvfs`` is written: ``<pf>v<N>``, the VF's netdev (the real link
driver moves it into pods), and ``<pf>p<N>``, its port on the fake NIC's
switch. Programming a VF's VLAN plugs its port into one Linux bridge per
VLAN, ``svl<VLAN>`` (this kernel has no bridge VLAN filtering and no 8021q,
so a bridge per VLAN is how tagging is emulated); with
``--sriov-fake-fabric IFACE`` every VLAN bridge also gets a VXLAN device on
that underlay interface (VNI 4000+VLAN, one multicast group per VLAN), so
the VFs of one VLAN on different hosts share one segment, as the physical
switch would give them. A disabled link state takes the port down. The
attributes are recorded as well (`RecordingVfConfigurator`), for tests.
"""

from __future__ import annotations

import pathlib
from typing import Any

from agent.network.netlink import run_in
from agent.sriov.fake import FakeSriovHardware, RecordingVfConfigurator
from agent.sriov.model import VfSettings

VNI_BASE = 4000
FABRIC_PORT = 4790  # not 4789/8472: the overlay's VXLAN keeps its port


def bridge_name(vlan: int) -> str:
    return f"svl{vlan}"


def port_name(pf: str, index: int) -> str:
    return f"{pf}p{index}"


class NetdevSriovHardware(FakeSriovHardware):
    """The fake sysfs tree, plus a veth pair per VF in the current network namespace."""

    def write_num_vfs(self, pf: str, count: int) -> None:
        before = len(self.vfs(pf))
        super().write_num_vfs(pf, count)

        def recreate(ipr: Any) -> None:
            for index in range(max(before, count)):
                for name in (f"{pf}v{index}", port_name(pf, index)):
                    found = ipr.link_lookup(ifname=name)
                    if found and index >= count:
                        ipr.link("del", index=found[0])
            for index in range(count):
                if not ipr.link_lookup(ifname=f"{pf}v{index}"):
                    ipr.link("add", ifname=f"{pf}v{index}", kind="veth", peer=port_name(pf, index))
                (port,) = ipr.link_lookup(ifname=port_name(pf, index))
                ipr.link("set", index=port, state="up")

        run_in(None, recreate)


class SwitchingVfConfigurator(RecordingVfConfigurator):
    """Records every VF's settings and wires its switch port into the bridge of its VLAN."""

    def __init__(self, *, fabric: str = "", state_file: pathlib.Path | None = None) -> None:
        super().__init__(state_file=state_file)
        self.fabric = fabric

    def configure(self, pf: str, index: int, settings: VfSettings) -> None:
        super().configure(pf, index, settings)

        def wire(ipr: Any) -> None:
            found = ipr.link_lookup(ifname=port_name(pf, index))
            if not found:
                # A NIC's VF outlives the namespace it was in (the kernel moves it home); a veth
                # stand-in dies with it, so the fake NIC makes it again, at home.
                ipr.link("add", ifname=f"{pf}v{index}", kind="veth", peer=port_name(pf, index))
                found = ipr.link_lookup(ifname=port_name(pf, index))
            bridge = self._bridge(ipr, settings.vlan)
            ipr.link("set", index=found[0], master=bridge)
            ipr.link("set", index=found[0], state="down" if settings.link_state == "disable" else "up")
            vf = ipr.link_lookup(ifname=f"{pf}v{index}")
            if vf and settings.mac:  # at home: before the move into the pod, as a PF sets it
                ipr.link("set", index=vf[0], address=settings.mac)

        run_in(None, wire)

    def _bridge(self, ipr: Any, vlan: int) -> int:
        name = bridge_name(vlan)
        found = ipr.link_lookup(ifname=name)
        if not found:
            ipr.link("add", ifname=name, kind="bridge")
            (bridge,) = ipr.link_lookup(ifname=name)
            ipr.link("set", index=bridge, state="up")
            if self.fabric:
                (under,) = ipr.link_lookup(ifname=self.fabric)
                ipr.link(
                    "add",
                    ifname=f"svx{vlan}",
                    kind="vxlan",
                    vxlan_id=VNI_BASE + vlan,
                    vxlan_group=f"239.1.{vlan // 256}.{vlan % 256}",
                    vxlan_link=under,
                    vxlan_port=FABRIC_PORT,
                )
                (vx,) = ipr.link_lookup(ifname=f"svx{vlan}")
                ipr.link("set", index=vx, master=bridge)
                ipr.link("set", index=vx, state="up")
            return int(bridge)
        return int(found[0])
