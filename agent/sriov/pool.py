"""Which VF belongs to which pod, written down before anything is touched.

Every change of a VF's owner or phase is written to ``<state-dir>/sriov/
allocations.json`` (atomically, fsynced) before the step it announces, so a
crash at any point leaves a record that says what may be half-done:

* ``attaching``: the VF may be partly configured or already in the pod; a
  restarted agent releases it (the pod's sync attaches a clean one again);
* ``attached``: the pod has it; kept while the pod exists, released if not;
* ``releasing``: the VF may be anywhere between the pod and the host; the
  release is finished.

A VF is free only when it has no record, and its record goes only after it
was reset and brought home, so no VF is handed out twice and none is lost.
"""

from __future__ import annotations

import json
import logging
import pathlib
from dataclasses import asdict, dataclass, replace

from agent.sriov.model import Vf
from atoll import errors, files

log = logging.getLogger(__name__)

PHASES = ("attaching", "attached", "releasing")


@dataclass(frozen=True)
class Allocation:
    pci: str
    pf: str
    index: int
    netdev: str  # the VF's name on the host, to give it back under
    resource: str
    pod_uid: str
    pod: str  # namespace/name, for logs and events
    network: str
    ifname: str  # its name in the pod (net1, ...)
    netns: str  # the pod's network namespace (a path), "" before it is known
    phase: str = "attaching"
    addresses: tuple[str, ...] = ()  # CIDRs given to it in the pod
    mac: str = ""  # the MAC the network or the pod chose ("" leaves the VF's own)


class VfPool:
    def __init__(self, state_dir: pathlib.Path) -> None:
        self._path = state_dir / "sriov" / "allocations.json"
        self._inventory: dict[str, list[Vf]] = {}  # resource -> VFs, by PCI address
        self._allocations: dict[str, Allocation] = {}
        self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self._path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            # Refusing to start would strand every pod; treating the file as empty could hand a
            # VF out twice. Keep it aside for a person and let recovery reset VFs found dirty.
            aside = self._path.with_suffix(".unreadable")
            self._path.replace(aside)
            log.error("SR-IOV allocations unreadable (%s); kept as %s, starting from none", exc, aside)
            return
        for item in raw.get("allocations", []):
            allocation = Allocation(**{**item, "addresses": tuple(item.get("addresses", ()))})
            self._allocations[allocation.pci] = allocation

    def _save(self) -> None:
        data = {"allocations": [asdict(a) for a in sorted(self._allocations.values(), key=lambda a: a.pci)]}
        files.write_atomic(self._path, json.dumps(data, indent=1).encode())

    def set_inventory(self, resource: str, vfs: list[Vf]) -> None:
        self._inventory[resource] = sorted(vfs, key=lambda vf: vf.pci)

    def resources(self) -> dict[str, int]:
        """Usable VFs per resource name: node capacity (a VF without a netdev cannot be attached)."""
        return {r: sum(1 for vf in vfs if vf.netdev) for r, vfs in self._inventory.items()}

    def free(self, resource: str) -> list[Vf]:
        return [
            vf for vf in self._inventory.get(resource, []) if vf.netdev and vf.pci not in self._allocations
        ]

    def allocations(self) -> list[Allocation]:
        return sorted(self._allocations.values(), key=lambda a: a.pci)

    def of_pod(self, pod_uid: str) -> list[Allocation]:
        return [a for a in self.allocations() if a.pod_uid == pod_uid]

    def allocate(
        self,
        resource: str,
        *,
        pod_uid: str,
        pod: str,
        network: str,
        ifname: str,
        netns: str,
        addresses: tuple[str, ...] = (),
        mac: str = "",
    ) -> Allocation:
        """Claim the first free VF of `resource`, recorded as attaching before anything is touched."""
        free = self.free(resource)
        if not free:
            raise errors.ResourceExhausted(f"no free VF of {resource} for pod {pod} (network {network})")
        vf = free[0]
        allocation = Allocation(
            pci=vf.pci,
            pf=vf.pf,
            index=vf.index,
            netdev=vf.netdev,
            resource=resource,
            pod_uid=pod_uid,
            pod=pod,
            network=network,
            ifname=ifname,
            netns=netns,
            addresses=addresses,
            mac=mac,
        )
        self._allocations[vf.pci] = allocation
        self._save()
        return allocation

    def mark(self, pci: str, phase: str) -> Allocation:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        allocation = self._allocations[pci] = replace(self._allocations[pci], phase=phase)
        self._save()
        return allocation

    def release(self, pci: str) -> None:
        """The VF is clean and home: it is free again."""
        if self._allocations.pop(pci, None) is not None:
            self._save()
