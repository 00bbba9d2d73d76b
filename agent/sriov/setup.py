"""Build the agent's SR-IOV parts from its config: the real drivers, or the fake NIC.

``--sriov-driver fake`` (Ironic's fake-hardware, for SR-IOV): no NIC with
SR-IOV exists, so the agent builds a fake sysfs tree under ``--sysfs-root``
for each configured PF that lacks one, and keeps VF attributes and
placements in memory. Everything above the drivers is the real code: VFs
are counted and reported as node resources, scheduled, attached to pods,
released and recovered exactly as with a NIC.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.sriov.fake import FakeSriovHardware, FakeVfLinks, RecordingVfConfigurator
from agent.sriov.ipam import HostLocalIpam
from agent.sriov.manager import SriovManager, VfConfigurator, VfLinks
from agent.sriov.model import PfSpec, VfSettings
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
    if cfg.sriov_driver == "fake":
        hardware = FakeSriovHardware(cfg.sysfs_root)
        for bus, pf in enumerate(pfs, start=3):
            if not hardware.has_pf(pf.name):
                hardware.add_pf(pf.name, max(pf.num_vfs, FAKE_TOTAL_VFS), bus=bus)
        root = hardware.root
        configurator = RecordingVfConfigurator(state_file=root / "atoll-fake-vf-settings.json")
        links = FakeVfLinks(state_file=root / "atoll-fake-vf-places.json")
        devices = hardware
    else:
        devices = SysfsDevices(cfg.sysfs_root)
        configurator = links = _NoNetlinkDriver()
    manager = SriovManager(pfs, devices, configurator, links, cfg.state_path)
    return SriovPodNetworks(manager, HostLocalIpam(cfg.state_path), attach_ready=cfg.sriov_driver == "fake")


class _NoNetlinkDriver:
    """The PF/VF netlink drivers are not written yet: PFs are sized and VFs counted from sysfs, but
    none is offered to pods (capacity 0, SriovReady False) rather than failing every attach."""

    MESSAGE = "attaching VFs through a real PF is not implemented yet (use --sriov-driver fake to try it)"

    def configure(self, pf: str, index: int, settings: VfSettings) -> None:
        raise OSError(95, self.MESSAGE)  # EOPNOTSUPP

    def read(self, pf: str, index: int) -> VfSettings:
        raise OSError(95, self.MESSAGE)

    def to_pod(self, pci: str, netdev: str, netns: str, ifname: str, addresses: Sequence[str]) -> None:
        raise OSError(95, self.MESSAGE)

    def to_host(self, pci: str, netdev: str) -> None:
        raise OSError(95, self.MESSAGE)


def status_parts(networks: SriovPodNetworks | None) -> tuple[dict[str, int], list[node_pb2.NodeCondition]]:
    """VF capacity by resource, and a condition naming every PF that could not be set up."""
    if networks is None:
        return {}, []
    manager = networks.manager
    problems = [(p.reason, p.message) for p in manager.problems]
    capacity = manager.capacity()
    if not networks.attach_ready:
        problems.append(("DriverNotReady", _NoNetlinkDriver.MESSAGE))
        capacity = dict.fromkeys(capacity, 0)
    condition = node_pb2.NodeCondition(
        type="SriovReady",
        status=meta_pb2.CONDITION_STATUS_FALSE if problems else meta_pb2.CONDITION_STATUS_TRUE,
        reason=problems[0][0] if problems else "PFsReady",
        message="; ".join(m for _, m in problems) if problems else "every SR-IOV PF has its VFs",
    )
    return capacity, [condition]
