"""Reading and sizing SR-IOV PFs through sysfs, under a configurable root.

The layout is the kernel's: ``<root>/class/net/<pf>/device`` links to the
PF's PCI device, which holds ``sriov_totalvfs``, ``sriov_numvfs`` and one
``virtfnN`` link per VF to the VF's PCI device; a VF bound to a network
driver has its netdev under ``<vf device>/net/<name>``. The real driver reads
``/sys``; tests point the same code at a fake tree (agent.sriov.fake).
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Protocol

from agent.sriov.model import Vf

_VIRTFN = re.compile(r"virtfn(\d+)")


class SriovDevices(Protocol):
    def has_pf(self, pf: str) -> bool: ...

    def total_vfs(self, pf: str) -> int: ...

    def num_vfs(self, pf: str) -> int: ...

    def write_num_vfs(self, pf: str, count: int) -> None:
        """One write of ``sriov_numvfs``; the caller goes through 0 when the count changes."""
        ...

    def vfs(self, pf: str) -> list[Vf]:
        """The PF's VFs in index order, with their PCI address and current host netdev name."""
        ...


class SysfsDevices:
    def __init__(self, root: pathlib.Path | str = "/sys") -> None:
        self.root = pathlib.Path(root)

    def device(self, pf: str) -> pathlib.Path:
        return self.root / "class" / "net" / pf / "device"

    def has_pf(self, pf: str) -> bool:
        return (self.device(pf) / "sriov_totalvfs").exists()

    def total_vfs(self, pf: str) -> int:
        return int((self.device(pf) / "sriov_totalvfs").read_text().strip() or 0)

    def num_vfs(self, pf: str) -> int:
        return int((self.device(pf) / "sriov_numvfs").read_text().strip() or 0)

    def write_num_vfs(self, pf: str, count: int) -> None:
        (self.device(pf) / "sriov_numvfs").write_text(f"{count}\n")

    def vfs(self, pf: str) -> list[Vf]:
        device = self.device(pf)
        found = []
        for entry in os.listdir(device):
            match = _VIRTFN.fullmatch(entry)
            if not match:
                continue
            link = device / entry
            pci = os.path.basename(os.readlink(link))
            net = link / "net"
            names = sorted(os.listdir(net)) if net.is_dir() else []
            found.append(Vf(pf, int(match.group(1)), pci, names[0] if names else ""))
        return sorted(found, key=lambda vf: vf.index)


def ensure_num_vfs(devices: SriovDevices, pf: str, wanted: int) -> None:
    """Give `pf` `wanted` VFs; drivers refuse to change a non-zero count except through 0."""
    current = devices.num_vfs(pf)
    if current == wanted:
        return
    if current:
        devices.write_num_vfs(pf, 0)
    if wanted:
        devices.write_num_vfs(pf, wanted)
