"""The agent's flannel-compatible VXLAN data path.

Design (flannel's backend/vxlan/vxlan.go, "v2" scheme, kept on purpose):

    Each node has one VXLAN device, flannel.<VNI>, with learning off and the
    address <own subnet>.0/32. For every other node's lease the agent writes
    three static kernel entries on that device:

        route  <peer subnet> via <peer subnet>.0 dev flannel.<VNI> onlink
        neigh  <peer subnet>.0 lladdr <peer VTEP MAC> nud permanent
        fdb    <peer VTEP MAC> dst <peer public IP> self permanent

    so the kernel resolves everything itself: no L2/L3-miss netlink callouts
    to a daemon, no multicast group, no learning. Therefore the data path does
    not depend on the agent running: kernel state survives an agent crash or
    upgrade, and a restarted agent re-renders the same desired state, diffs it
    against a dump of the kernel and writes nothing when it already matches,
    so existing entries are never flapped (deleted and re-added). The price is
    O(peers) entries per node, refreshed whole on every lease change, which a
    diff keeps cheap: a NodeConfig push that changes nothing costs one dump.

Everything else follows the same render-diff-apply shape: the desired state
is plain data (agent.network.plan, agent.network.firewall), the side effects
sit behind injected drivers (NetlinkDriver, Firewall, ContainerRuntime), and
with `noop=True` the would-be writes are logged as "NOOP: ..." instead.

What an apply() checks besides the kernel entries (net.ipv4.ip_forward, the
firewall rules, the engine's pod network and subnet.env) is checked when
the network or lease changed and otherwise every `recheck_interval` seconds,
so that something removed behind our back comes back without a pushed change.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.network import firewall as fw
from agent.network import plan as planner
from agent.network.model import (
    SYSCTLS,
    DeleteLink,
    KernelState,
    Lease,
    Op,
    OverlayConfig,
    OverlayError,
    Underlay,
    VtepInfo,
    VxlanSpec,
    first_host,
)
from agent.network.netlink import NetlinkDriver
from agent.network.sandbox import engine_share
from agent.network.underlay import detect_underlay
from agent.runtime.base import ContainerRuntime, NetworkResult, PodNetworkSpec
from atoll import errors, files
from atoll.v1 import network_pb2

log = logging.getLogger(__name__)

DEFAULT_SUBNET_ENV = pathlib.Path("/run/flannel/subnet.env")
DEFAULT_POD_NETWORK = "atoll"
DEFAULT_BRIDGE = "atoll0"


@dataclass(frozen=True)
class ApplyReport:
    """What one apply() found and did (in noop mode: would have done)."""

    added: int = 0
    removed: int = 0
    updated: int = 0
    kept: int = 0
    commands: tuple[str, ...] = ()  # kernel writes, as ip/bridge commands
    firewall: tuple[str, ...] = ()  # iptables-restore lines
    network: NetworkResult | None = None  # the engine network, when it was checked
    subnet_env_written: bool = False
    skipped: tuple[str, ...] = ()  # leases ignored, and why
    errors: tuple[str, ...] = ()
    # Non-empty when our lease in the coordinator no longer matches this node
    # (VTEP MAC or public IP): the agent should acquire its lease again.
    lease_mismatch: str = ""
    noop: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def changed(self) -> bool:
        return bool(self.commands or self.firewall or self.subnet_env_written) or self.network in (
            "created",
            "recreated",
        )


def render_subnet_env(config: OverlayConfig, own: Lease, mtu: int) -> str:
    """flannel's /run/flannel/subnet.env, for tools (and CNI configs) that read it."""
    return (
        f"FLANNEL_NETWORK={config.network}\n"
        f"FLANNEL_SUBNET={first_host(own.subnet)}/{own.subnet.prefixlen}\n"
        f"FLANNEL_MTU={mtu}\n"
        f"FLANNEL_IPMASQ={'true' if config.ip_masq else 'false'}\n"
    )


def write_atomically(path: pathlib.Path, text: str) -> bool:
    """Replace `path` with `text` unless it already holds exactly that; True if written."""
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    files.public_dirs(path.parent)  # /run/flannel: CNI plugins and other users read subnet.env
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return True


NetworkArg = network_pb2.NetworkSpec | OverlayConfig
LeaseArg = network_pb2.Subnet | Lease


def _config(network: NetworkArg) -> OverlayConfig:
    return network if isinstance(network, OverlayConfig) else OverlayConfig.from_proto(network)


def _lease(lease: LeaseArg) -> Lease:
    return lease if isinstance(lease, Lease) else Lease.from_proto(lease)


class Overlay:
    """Keeps this node's part of the overlay converged with the cluster's leases."""

    def __init__(
        self,
        netlink: NetlinkDriver,
        firewall: fw.Firewall,
        runtime: ContainerRuntime,
        *,
        subnet_env_path: pathlib.Path | str = DEFAULT_SUBNET_ENV,
        noop: bool = False,
        pod_network: str = DEFAULT_POD_NETWORK,
        bridge_name: str = DEFAULT_BRIDGE,
        share_subnet: bool = False,
        recheck_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._netlink = netlink
        self._firewall = firewall
        self._runtime = runtime
        self.subnet_env_path = pathlib.Path(subnet_env_path)
        self.noop = noop
        self._pod_network = pod_network
        self._bridge = bridge_name
        # The engine network leaves the upper half of the lease to the agent's sandbox networks.
        self._share_subnet = share_subnet
        self._recheck = recheck_interval
        self._clock = clock
        self._lock = asyncio.Lock()
        self._underlay: Underlay | None = None
        self._vtep: VtepInfo | None = None
        self._device_name: str | None = None
        self._extras_key: object = None
        self._extras_at = 0.0

    @property
    def bridge_name(self) -> str:
        """The Linux bridge of the pod network (Docker creates it for the network)."""
        return self._bridge

    @property
    def pod_network_name(self) -> str:
        """The engine network pods' infra containers attach to."""
        return self._pod_network

    @property
    def vtep(self) -> VtepInfo | None:
        """This node's VTEP as of the last prepare()/apply() (None before prepare())."""
        return self._vtep

    # -- prepare --------------------------------------------------------------------------------

    async def prepare(
        self,
        network: NetworkArg,
        *,
        coordinator_ip: str,
        iface: str | None = None,
        public_ip: str | None = None,
    ) -> VtepInfo:
        """Find the underlay and converge the VXLAN device, before the node has a lease.

        Returns what goes into AcquireLease (public IP, VTEP MAC). Peer entries
        left by a previous run are not touched here: apply() owns them.
        """
        config = _config(network)
        async with self._lock:
            underlay = await detect_underlay(self._netlink, coordinator_ip, iface=iface, public_ip=public_ip)
            self._underlay = underlay
            state = await self._netlink.dump(config.device)
            device = self._device(config, underlay, state)
            diff = planner.diff(planner.device_plan(config, device), state)
            ops = self._retire_old_device(config) + diff.ops()
            failures = await self._execute(ops)
            if failures:
                raise OverlayError(f"cannot set up {config.device}: {'; '.join(failures)}")
            await self._ensure_sysctls()
            self._vtep = VtepInfo(
                public_ip=underlay.public_ip,
                iface=underlay.iface,
                mtu=device.mtu,
                vtep_mac=device.mac,
                device=device.name,
            )
            self._device_name = device.name
            log.info(
                "overlay device %s %s: vni %d, local %s dev %s, port %d, mtu %d, mac %s",
                device.name,
                diff.changes[0].action if diff.changes[0].action != "keep" else "kept",
                device.vni,
                device.local,
                device.underlay,
                device.port,
                device.mtu,
                device.mac,
            )
            return self._vtep

    def _device(self, config: OverlayConfig, underlay: Underlay, state: KernelState) -> VxlanSpec:
        # An existing device keeps its MAC (peers know it); a new one gets the stable derived MAC.
        mac = (state.link.mac if state.link else "") or planner.vtep_mac(underlay.public_ip, config.vni)
        return planner.render_device(config, underlay, mac)

    def _retire_old_device(self, config: OverlayConfig) -> list[Op]:
        if self._device_name and self._device_name != config.device:
            log.warning("overlay VNI changed: removing %s for %s", self._device_name, config.device)
            return [DeleteLink(self._device_name)]
        return []

    # -- apply ----------------------------------------------------------------------------------

    async def apply(self, network: NetworkArg, own: LeaseArg, leases: Sequence[LeaseArg]) -> ApplyReport:
        """Converge the kernel (and firewall, engine network, subnet.env) with the leases.

        Safe to call on every NodeConfig push and periodically: when nothing
        changed it costs one kernel dump and writes nothing. A write that fails
        is reported in `errors` (the rest still happens) and retried by the next
        call; NetlinkFailure or OverlayError mean it could not even look.
        """
        config, mine = _config(network), _lease(own)
        others = [_lease(le) for le in leases]
        async with self._lock:
            if self._underlay is None:
                raise OverlayError("Overlay.apply() before prepare(): the underlay is not known yet")
            started = time.monotonic()
            state = await self._netlink.dump(config.device)
            device = self._device(config, self._underlay, state)
            plan = planner.render(config, device, mine, others, self._underlay.public_ip)
            diff = planner.diff(plan, state)
            ops = self._retire_old_device(config) + diff.ops()
            problems = await self._execute(ops)
            self._device_name = device.name
            self._vtep = VtepInfo(
                public_ip=self._underlay.public_ip,
                iface=self._underlay.iface,
                mtu=device.mtu,
                vtep_mac=device.mac,
                device=device.name,
            )
            extras = await self._ensure_extras(config, mine, device.mtu)
            problems += extras.errors
            mismatch = self._lease_mismatch(mine)
            report = ApplyReport(
                added=diff.count("add"),
                removed=diff.count("remove"),
                updated=diff.count("update"),
                kept=diff.count("keep"),
                commands=tuple(op.command() for op in ops),
                firewall=extras.firewall,
                network=extras.network,
                subnet_env_written=extras.subnet_env_written,
                skipped=plan.skipped,
                errors=tuple(problems),
                lease_mismatch=mismatch,
                noop=self.noop,
                seconds=time.monotonic() - started,
            )
        self._log(report)
        return report

    def _lease_mismatch(self, own: Lease) -> str:
        assert self._vtep is not None
        wrong = []
        if own.vtep_mac and own.vtep_mac.lower() != self._vtep.vtep_mac:
            wrong.append(f"VTEP MAC {own.vtep_mac} (device has {self._vtep.vtep_mac})")
        if own.public_ip and own.public_ip != self._vtep.public_ip:
            wrong.append(f"public IP {own.public_ip} (node has {self._vtep.public_ip})")
        return "; ".join(wrong)

    def _log(self, report: ApplyReport) -> None:
        for reason in report.skipped:
            log.warning("overlay: ignoring %s", reason)
        for error in report.errors:
            log.error("overlay: %s", error)
        if report.lease_mismatch:
            log.warning("overlay: our lease is stale: %s", report.lease_mismatch)
        level = logging.INFO if report.changed else logging.DEBUG
        log.log(
            level,
            "overlay%s: %d added, %d removed, %d updated, %d kept in %.1f ms",
            " (noop)" if report.noop else "",
            report.added,
            report.removed,
            report.updated,
            report.kept,
            report.seconds * 1000,
        )

    async def _execute(self, ops: Sequence[Op]) -> list[str]:
        if not ops:
            return []
        if self.noop:
            for op in ops:
                log.info("NOOP: %s", op.command())
            return []
        for op in ops:
            log.debug("overlay: %s", op.command())
        return [str(failure) for failure in await self._netlink.execute(ops)]

    async def _ensure_sysctls(self) -> None:
        for name, value in SYSCTLS.items():
            if await self._netlink.read_sysctl(name) == value:
                continue
            if self.noop:
                log.info("NOOP: sysctl -w %s=%s", name, value)
            else:
                log.info("overlay: sysctl -w %s=%s", name, value)
                await self._netlink.write_sysctl(name, value)

    # -- firewall, engine network, subnet.env -------------------------------------------------

    @dataclass(frozen=True)
    class _Extras:
        firewall: tuple[str, ...] = ()
        network: NetworkResult | None = None
        subnet_env_written: bool = False
        errors: tuple[str, ...] = ()

    async def _ensure_extras(self, config: OverlayConfig, own: Lease, mtu: int) -> Overlay._Extras:
        key = (config, own.subnet, mtu, self._pod_network, self._bridge)
        now = self._clock()
        if key == self._extras_key and now - self._extras_at < self._recheck:
            return self._Extras()
        problems: list[str] = []
        lines: tuple[str, ...] = ()
        result: NetworkResult | None = None
        written = False
        try:
            await self._ensure_sysctls()
        except errors.AtollError as exc:
            problems.append(f"sysctl: {exc}")
        try:
            lines = await self._ensure_firewall(config, own)
        except errors.AtollError as exc:
            problems.append(f"firewall: {exc}")
        spec = PodNetworkSpec(
            name=self._pod_network,
            subnet=str(own.subnet),
            gateway=str(first_host(own.subnet)),
            mtu=mtu,
            bridge_name=self._bridge,
            masquerade=False,
            ip_range=engine_share(str(own.subnet)) if self._share_subnet else "",
        )
        if self.noop:
            log.info(
                "NOOP: ensure engine network %s: %s via %s, mtu %d", spec.name, spec.subnet, spec.gateway, mtu
            )
        else:
            try:
                result = await self._runtime.ensure_network(spec)
            except errors.AtollError as exc:
                problems.append(f"engine network {spec.name}: {exc}")
            if result == "in-use-mismatch":
                problems.append(
                    f"engine network {spec.name} does not match the lease {own.subnet} but is in use"
                )
        text = render_subnet_env(config, own, mtu)
        try:
            written = await self._write_subnet_env(text)
        except OSError as exc:
            problems.append(f"{self.subnet_env_path}: {exc}")
        if not problems:
            self._extras_key, self._extras_at = key, now
        return self._Extras(
            firewall=lines, network=result, subnet_env_written=written, errors=tuple(problems)
        )

    async def _ensure_firewall(self, config: OverlayConfig, own: Lease | None) -> tuple[str, ...]:
        desired = fw.render_firewall(config.network, own.subnet if own else None, config.ip_masq)
        ops = fw.diff_firewall(desired, await self._firewall.dump())
        lines = tuple(f"{op.table}: {op.line()}" for op in ops)
        if not ops:
            return ()
        if self.noop:
            for line in lines:
                log.info("NOOP: iptables %s", line)
        else:
            log.info("overlay: firewall: %s", "; ".join(lines))
            await self._firewall.apply(ops)
        return lines

    async def _write_subnet_env(self, text: str) -> bool:
        if self.noop:
            try:
                same = self.subnet_env_path.read_text() == text
            except OSError:
                same = False
            if not same:
                log.info("NOOP: write %s: %s", self.subnet_env_path, text.replace("\n", " ").strip())
            return False
        return await asyncio.to_thread(write_atomically, self.subnet_env_path, text)

    # -- teardown -------------------------------------------------------------------------------

    async def disable(self, network: NetworkArg) -> ApplyReport:
        """The cluster dropped its overlay: remove the device (and its entries), rules, subnet.env.

        The engine network stays: it may still hold containers.
        """
        config = _config(network)
        async with self._lock:
            state = await self._netlink.dump(config.device)
            ops: list[Op] = [DeleteLink(config.device)] if state.link is not None else []
            problems = await self._execute(ops)
            fw_ops = fw.teardown_firewall(await self._firewall.dump())
            lines = tuple(f"{op.table}: {op.line()}" for op in fw_ops)
            if fw_ops and self.noop:
                for line in lines:
                    log.info("NOOP: iptables %s", line)
            elif fw_ops:
                await self._firewall.apply(fw_ops)
            if not self.noop:
                self.subnet_env_path.unlink(missing_ok=True)
            self._vtep = None
            self._device_name = None
            self._extras_key = None
            return ApplyReport(
                removed=len(ops),
                commands=tuple(op.command() for op in ops),
                firewall=lines,
                errors=tuple(problems),
                noop=self.noop,
            )
