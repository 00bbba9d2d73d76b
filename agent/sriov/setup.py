"""Build the agent's SR-IOV parts from its config: the real drivers, or the fake NIC.

``--sriov-driver sysfs`` (the default): the host's PFs in ``/sys`` and the
netlink drivers (agent.sriov.netlink). ``--sriov-driver fake`` (Ironic's
fake-hardware, for SR-IOV): no NIC with SR-IOV exists, so the agent builds a
fake sysfs tree under ``--sysfs-root`` for each configured PF that lacks one
and keeps VF attributes and placements in files beside it, as a NIC and the
kernel would; with ``--sriov-fake-netdevs`` the VFs are veth stand-ins that
carry traffic, moved by the real link driver (agent.sriov.fakenic).
Everything above the drivers is the real code: VFs are counted and reported
as node resources, scheduled, attached to pods, released and recovered
exactly as with a NIC.
"""

from __future__ import annotations

from agent.sriov.fake import FakeSriovHardware, FakeVfLinks, RecordingVfConfigurator
from agent.sriov.fakenic import NetdevSriovHardware, SwitchingVfConfigurator
from agent.sriov.ipam import HostLocalIpam
from agent.sriov.manager import SriovManager, VfConfigurator, VfLinks
from agent.sriov.model import PfSpec
from agent.sriov.netlink import NetlinkVfConfigurator, NetlinkVfLinks
from agent.sriov.pods import SriovPodNetworks
from agent.sriov.sysfs import SriovDevices, SysfsDevices
from atoll.agentconfig import AgentConfig
from atoll.v1 import meta_pb2, node_pb2

FAKE_TOTAL_VFS = 8


def from_config(cfg: AgentConfig) -> SriovPodNetworks | None:
    if not cfg.sriov_pfs:
        return None
    pfs = [PfSpec.parse(text) for text in cfg.sriov_pfs]
    devices: SriovDevices
    configurator: VfConfigurator
    links: VfLinks
    if cfg.sriov_driver == "fake" and cfg.sriov_fake_netdevs:
        nic = NetdevSriovHardware(cfg.sysfs_root)
        _add_fake_pfs(nic, pfs)
        devices = nic
        configurator = SwitchingVfConfigurator(
            fabric=cfg.sriov_fake_fabric, state_file=nic.root / "atoll-fake-vf-settings.json"
        )
        links = NetlinkVfLinks()
    elif cfg.sriov_driver == "fake":
        hardware = FakeSriovHardware(cfg.sysfs_root)
        _add_fake_pfs(hardware, pfs)
        devices = hardware
        configurator = RecordingVfConfigurator(state_file=hardware.root / "atoll-fake-vf-settings.json")
        links = FakeVfLinks(state_file=hardware.root / "atoll-fake-vf-places.json")
    else:
        devices = SysfsDevices(cfg.sysfs_root)
        configurator = NetlinkVfConfigurator()
        links = NetlinkVfLinks()
    manager = SriovManager(pfs, devices, configurator, links, cfg.state_path)
    return SriovPodNetworks(manager, HostLocalIpam(cfg.state_path))


def _add_fake_pfs(hardware: FakeSriovHardware, pfs: list[PfSpec]) -> None:
    for bus, pf in enumerate(pfs, start=3):
        if not hardware.has_pf(pf.name):
            hardware.add_pf(pf.name, max(pf.num_vfs, FAKE_TOTAL_VFS), bus=bus)


def status_parts(networks: SriovPodNetworks | None) -> tuple[dict[str, int], list[node_pb2.NodeCondition]]:
    """VF capacity by resource, and a condition naming every PF that could not be set up."""
    if networks is None:
        return {}, []
    manager = networks.manager
    problems = [(p.reason, p.message) for p in manager.problems]
    capacity = manager.capacity()
    condition = node_pb2.NodeCondition(
        type="SriovReady",
        status=meta_pb2.CONDITION_STATUS_FALSE if problems else meta_pb2.CONDITION_STATUS_TRUE,
        reason=problems[0][0] if problems else "PFsReady",
        message="; ".join(m for _, m in problems) if problems else "every SR-IOV PF has its VFs",
    )
    return capacity, [condition]
