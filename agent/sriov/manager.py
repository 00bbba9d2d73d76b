"""The agent's SR-IOV: size the PFs, count VFs as resources, attach VFs to pods and take them back clean.

Three side effects sit behind Protocols, each with a real driver (sysfs,
netlink on the PF, netlink across namespaces) and a fake (agent.sriov.fake):
`SriovDevices`, `VfConfigurator` and `VfLinks`. Every blocking call runs in
a thread with a timeout. The order of steps is what keeps VFs clean:

attach:  record "attaching" -> program the VF through the PF -> move it into
         the pod, rename, address, up -> record "attached";
release: record "releasing" -> program the clean settings (VLAN 0, MAC
         cleared, spoofchk on, trust off, link auto, no rate) -> bring it home
         under its own name, no addresses, down -> forget the record.

A step that fails during attach releases the VF at once; `recover` finishes
whatever a crash interrupted, and releases the VFs of pods that are gone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from agent.sriov.model import CLEAN, PfSpec, VfSettings
from agent.sriov.pool import Allocation, VfPool
from agent.sriov.sysfs import SriovDevices, ensure_num_vfs
from atoll import errors

log = logging.getLogger(__name__)
T = TypeVar("T")


class VfConfigurator(Protocol):
    def configure(self, pf: str, index: int, settings: VfSettings) -> None: ...

    def read(self, pf: str, index: int) -> VfSettings: ...


class VfLinks(Protocol):
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
        """Move the host netdev `netdev` into `netns`, rename it `ifname`, add `addresses`, set it up,
        add `routes` (destination, gateway) through it."""
        ...

    def to_host(self, pci: str, netdev: str, netns: str) -> None:
        """Wherever the VF is (in the pod's `netns`, or already home under another name), bring it
        home as `netdev`, down, without addresses. Idempotent."""
        ...


@dataclass(frozen=True)
class VfRequest:
    network: str
    resource: str
    settings: VfSettings
    ifname: str
    addresses: tuple[str, ...] = ()
    routes: tuple[tuple[str, str], ...] = ()  # (destination CIDR, gateway or "") through the VF


@dataclass(frozen=True)
class PfProblem:
    pf: str
    reason: str  # PFNotFound, TooFewVFs, SetupFailed
    message: str


class SriovManager:
    def __init__(
        self,
        pfs: Sequence[PfSpec],
        devices: SriovDevices,
        configurator: VfConfigurator,
        links: VfLinks,
        state_dir: pathlib.Path,
        *,
        call_timeout: float = 10.0,
    ) -> None:
        self._pfs = list(pfs)
        self._devices = devices
        self._configurator = configurator
        self._links = links
        self.pool = VfPool(state_dir)
        self._timeout = call_timeout
        self._lock = asyncio.Lock()  # one pool change at a time: no VF handed out twice
        self.problems: list[PfProblem] = []

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), self._timeout)

    async def setup(self) -> list[PfProblem]:
        """Give every PF its VFs and take stock; a PF that cannot is a problem, never a crash."""
        problems = []
        for spec in self._pfs:
            try:
                if not await self._call(self._devices.has_pf, spec.name):
                    problems.append(
                        PfProblem(spec.name, "PFNotFound", f"no SR-IOV PF {spec.name} on this host")
                    )
                    self.pool.set_inventory(spec.resource_name, [])
                    continue
                total = await self._call(self._devices.total_vfs, spec.name)
                if total < spec.num_vfs:
                    problems.append(
                        PfProblem(
                            spec.name, "TooFewVFs", f"{spec.name} supports {total} VFs, {spec.num_vfs} asked"
                        )
                    )
                    self.pool.set_inventory(spec.resource_name, [])
                    continue
                busy = [a for a in self.pool.allocations() if a.pf == spec.name]
                if busy and await self._call(self._devices.num_vfs, spec.name) != spec.num_vfs:
                    # Re-sizing destroys every VF, also the ones pods hold: keep the PF as it is.
                    problems.append(
                        PfProblem(
                            spec.name,
                            "SetupFailed",
                            f"{spec.name}: {len(busy)} VFs in use; numVfs not changed",
                        )
                    )
                else:
                    await self._call(ensure_num_vfs, self._devices, spec.name, spec.num_vfs)
                vfs = await self._call(self._devices.vfs, spec.name)
                self.pool.set_inventory(spec.resource_name, vfs)
            except (OSError, ValueError, TimeoutError) as exc:
                problems.append(PfProblem(spec.name, "SetupFailed", f"{spec.name}: {exc}"))
                self.pool.set_inventory(spec.resource_name, [])
        for problem in problems:
            log.warning("SR-IOV PF %s: %s", problem.pf, problem.message)
        self.problems = problems
        return problems

    def capacity(self) -> dict[str, int]:
        return self.pool.resources()

    async def attach(
        self, pod_uid: str, pod: str, netns: str, requests: Sequence[VfRequest]
    ) -> list[Allocation]:
        """Attach one VF per request not attached yet (by interface); all or none: a failure releases
        what this call attached."""
        done: list[Allocation] = []
        async with self._lock:
            held = {a.ifname for a in self.pool.of_pod(pod_uid) if a.phase == "attached"}
            try:
                for request in requests:
                    if request.ifname in held:
                        continue
                    allocation = self.pool.allocate(
                        request.resource,
                        pod_uid=pod_uid,
                        pod=pod,
                        network=request.network,
                        ifname=request.ifname,
                        netns=netns,
                        addresses=request.addresses,
                        mac=request.settings.mac,
                    )
                    await self._call(
                        self._configurator.configure, allocation.pf, allocation.index, request.settings
                    )
                    move = functools.partial(
                        self._links.to_pod, addresses=request.addresses, routes=request.routes
                    )
                    await self._call(move, allocation.pci, allocation.netdev, netns, request.ifname)
                    done.append(self.pool.mark(allocation.pci, "attached"))
            except BaseException:
                for allocation in self.pool.of_pod(pod_uid):
                    if allocation.phase == "attaching" or allocation in done:
                        await self._release(allocation)
                raise
        return done

    async def release_pod(self, pod_uid: str, *, keep_netns: str = "") -> None:
        """Release the pod's VFs; with `keep_netns`, only those held for another (older) sandbox."""
        async with self._lock:
            for allocation in self.pool.of_pod(pod_uid):
                if not keep_netns or allocation.netns != keep_netns:
                    await self._release(allocation)

    async def _release(self, allocation: Allocation) -> None:
        allocation = self.pool.mark(allocation.pci, "releasing")
        try:
            await self._call(self._configurator.configure, allocation.pf, allocation.index, CLEAN)
            await self._call(self._links.to_host, allocation.pci, allocation.netdev, allocation.netns)
        except (OSError, TimeoutError) as exc:
            # The record stays "releasing": the VF is not handed out until a later recover finishes.
            log.error(
                "SR-IOV: releasing VF %s of pod %s failed: %s",
                allocation.pci,
                allocation.pod,
                exc,
                extra=_context(allocation),
            )
            raise errors.Unavailable(f"VF {allocation.pci} could not be released: {exc}") from exc
        self.pool.release(allocation.pci)
        log.info(
            "SR-IOV: VF %s (%s) of pod %s released clean",
            allocation.pci,
            allocation.netdev,
            allocation.pod,
            extra=_context(allocation),
        )

    async def recover(self, pod_alive: Callable[[str], bool]) -> list[str]:
        """After a (re)start: finish interrupted steps and release the VFs of pods that are gone.

        Returns the PCI addresses released. A VF whose release fails again
        keeps its record and is retried by the next call.
        """
        released = []
        async with self._lock:
            for allocation in self.pool.allocations():
                if allocation.phase == "attached" and pod_alive(allocation.pod_uid):
                    continue
                try:
                    await self._release(allocation)
                    released.append(allocation.pci)
                except errors.Unavailable:
                    continue
        return released


def _context(allocation: Allocation) -> dict[str, str]:
    """The log context of a VF's pod (its record holds namespace/name and the uid)."""
    namespace, _, name = allocation.pod.rpartition("/")
    return {"pod": name, "namespace": namespace, "uid": allocation.pod_uid, "vf": allocation.pci}
