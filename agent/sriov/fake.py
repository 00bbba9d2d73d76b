"""Fake SR-IOV hardware: a sysfs tree, a PF that programs VFs, and VF links that move between namespaces.

SR-IOV NICs cannot exist on the machines Atoll is developed and tested on, so
these stand in for them, like Ironic's fake-hardware. Only the hardware is
fake: the agent reads the fake sysfs tree with the same code that reads
``/sys`` (`SysfsDevices`), and sizes, allocates, attaches and releases VFs
with the same manager; a write of ``sriov_numvfs`` here creates the VF
entries the kernel would. `RecordingVfConfigurator` keeps each VF's
attributes as a NIC would (and records every call); `FakeVfLinks` keeps
where each VF netdev is and under which name.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from agent.sriov.model import CLEAN, VfSettings
from agent.sriov.sysfs import SysfsDevices
from atoll import files


class FakeSriovHardware(SysfsDevices):
    """A fake sysfs tree under `root` (the layout of /sys) whose PFs make VFs when told to.

    Fake: no SR-IOV hardware exists here. PFs are added with `add_pf`; writing
    ``sriov_numvfs`` removes every VF and creates the new ones, each with a PCI
    address on the PF's bus and a netdev ``<pf>v<N>``, as a driver would.
    """

    def __init__(self, root: pathlib.Path | str) -> None:
        super().__init__(root)
        self.writes: list[tuple[str, int]] = []

    def add_pf(self, name: str, total_vfs: int, *, bus: int = 3) -> None:
        pci = f"0000:{bus:02x}:00.0"
        dev = self.root / "devices" / pci
        dev.mkdir(parents=True, exist_ok=True)
        (dev / "sriov_totalvfs").write_text(f"{total_vfs}\n")
        if not (dev / "sriov_numvfs").exists():
            (dev / "sriov_numvfs").write_text("0\n")
        (dev / "net" / name).mkdir(parents=True, exist_ok=True)
        net = self.root / "class" / "net" / name
        net.mkdir(parents=True, exist_ok=True)
        if not (net / "device").exists():
            os.symlink(os.path.relpath(dev, net), net / "device")

    def write_num_vfs(self, pf: str, count: int) -> None:
        device = self.device(pf)
        total = self.total_vfs(pf)
        current = self.num_vfs(pf)
        if count > total:
            raise OSError(34, f"{pf}: {count} VFs asked, the device has {total}")  # ERANGE
        if current and count:
            raise OSError(16, f"{pf}: change sriov_numvfs from {current} through 0")  # EBUSY, as drivers do
        self.writes.append((pf, count))
        pf_pci = os.path.basename(os.path.realpath(device))
        domain, bus, _ = pf_pci.split(":", 2)
        for entry in os.listdir(device):
            if entry.startswith("virtfn"):
                shutil.rmtree(os.path.realpath(device / entry), ignore_errors=True)
                (device / entry).unlink()
        for index in range(count):
            vf_pci = f"{domain}:{bus}:{0x10 + index // 8:02x}.{index % 8}"
            vf_dev = self.root / "devices" / vf_pci
            (vf_dev / "net" / f"{pf}v{index}").mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(vf_dev, os.path.realpath(device)), device / f"virtfn{index}")
        super().write_num_vfs(pf, count)


@dataclass
class RecordingVfConfigurator:
    """A PF's VF table, as the NIC keeps it. Fake: no SR-IOV hardware exists here.

    With `state_file` the table outlives the agent, as a NIC's does (``--sriov-driver fake``).
    """

    settings: dict[tuple[str, int], VfSettings] = field(default_factory=dict)
    calls: list[tuple[str, int, VfSettings]] = field(default_factory=list)
    state_file: pathlib.Path | None = None

    def __post_init__(self) -> None:
        if self.state_file is not None and self.state_file.exists():
            for item in json.loads(self.state_file.read_text()):
                self.settings[(item["pf"], item["index"])] = VfSettings(**item["settings"])

    def configure(self, pf: str, index: int, settings: VfSettings) -> None:
        self.calls.append((pf, index, settings))
        self.settings[(pf, index)] = settings
        if self.state_file is not None:
            items = [
                {"pf": k[0], "index": k[1], "settings": asdict(v)} for k, v in sorted(self.settings.items())
            ]
            files.write_atomic(self.state_file, json.dumps(items).encode())

    def read(self, pf: str, index: int) -> VfSettings:
        return self.settings.get((pf, index), CLEAN)


@dataclass
class LinkPlace:
    netns: str  # "" for the host
    name: str
    addresses: tuple[str, ...] = ()
    up: bool = False
    routes: tuple[tuple[str, str], ...] = ()


@dataclass
class FakeVfLinks:
    """Where each VF netdev is, keyed by the VF's PCI address. Fake: no SR-IOV hardware exists here.

    A pod namespace that vanishes (`drop_netns`) sends its VFs back to the
    host under their current names, as the kernel does with physical devices.
    """

    places: dict[str, LinkPlace] = field(default_factory=dict)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    state_file: pathlib.Path | None = None  # placements outlive the agent, as the kernel's do

    def __post_init__(self) -> None:
        if self.state_file is not None and self.state_file.exists():
            for pci, place in json.loads(self.state_file.read_text()).items():
                routes = tuple((str(d), str(g)) for d, g in place.get("routes", ()))
                self.places[pci] = LinkPlace(
                    place["netns"], place["name"], tuple(place["addresses"]), place["up"], routes
                )

    def _save(self) -> None:
        if self.state_file is not None:
            data = {pci: asdict(place) for pci, place in sorted(self.places.items())}
            files.write_atomic(self.state_file, json.dumps(data).encode())

    def plug(self, pci: str, netdev: str) -> None:
        self.places.setdefault(pci, LinkPlace("", netdev))

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
        place = self.places.setdefault(pci, LinkPlace("", netdev))  # never seen: at home, as created
        if place.netns == "" and place.name != netdev:
            raise OSError(19, f"no VF netdev {netdev} on the host")  # ENODEV
        self.calls.append(("to_pod", pci, netns, ifname))
        self.places[pci] = LinkPlace(netns, ifname, tuple(addresses), up=True, routes=tuple(routes))
        self._save()

    def to_host(self, pci: str, netdev: str, netns: str = "") -> None:
        self.calls.append(("to_host", pci, netdev))
        self.places[pci] = LinkPlace("", netdev)
        self._save()

    def where(self, pci: str) -> LinkPlace:
        return self.places[pci]

    def drop_netns(self, netns: str) -> None:
        for pci, place in self.places.items():
            if place.netns == netns:
                self.places[pci] = LinkPlace("", place.name)
        self._save()
