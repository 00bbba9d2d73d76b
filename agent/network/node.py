"""The agent's side of the cluster network: overlay lease, pod network, and the gate before pods.

Pushed node config drives it. With an overlay configured, the agent prepares
its VXLAN device, acquires (or renews) its lease with the device's MAC and its
underlay address, converges the kernel entries for every peer (agent.network)
and points pods at the engine network on its lease. Without one, pods use the
configured engine network (default `bridge`).

Pods wait at a gate until this decision is made, so that no pod starts on
the wrong network and then restarts. The decision is persisted under the
state dir: a restarted agent opens the gate at once with the same network,
and its kernel entries were never touched by the restart (they are static).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import os
import pathlib
import tempfile
import time
from collections.abc import Awaitable, Callable

from agent.network import DEFAULT_SUBNET_ENV, Firewall, NetlinkDriver, NetlinkFailure, Overlay
from agent.network.model import ReplaceRoute, Route
from agent.pods.syncer import PodSyncer
from agent.runtime.base import ContainerRuntime
from atoll import errors
from atoll.aio import wait_any
from atoll.v1 import network_pb2, node_api_pb2

log = logging.getLogger(__name__)

AcquireLease = Callable[[str, str], Awaitable[node_api_pb2.AcquireLeaseResponse]]


@dataclasses.dataclass
class NetworkRecord:
    pod_network: str
    lease_cidr: str = ""


class NodeNetworking:
    def __init__(
        self,
        *,
        runtime: ContainerRuntime,
        syncer: PodSyncer,
        gate: asyncio.Event,
        state_file: pathlib.Path,
        default_pod_network: str,
        mode: str,
        coordinator_host: str,
        netlink: Callable[[], NetlinkDriver],
        firewall: Callable[[], Firewall],
        iface: str = "",
        public_ip: str = "",
        subnet_env: str = "",
        share_subnet: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._runtime = runtime
        self._syncer = syncer
        # A sandbox just started has a new port on the pod bridge, to put in hairpin mode now;
        # the resync puts any other (plugged by someone else) there within a period.
        self._new_ports = asyncio.Event()
        syncer.on_sandbox_started = self._new_ports.set
        self._hairpin_bridge = ""  # the bridge whose ports were last put in hairpin mode
        self._gate = gate
        self._state_file = state_file
        self._default = default_pod_network
        self._mode = mode
        self._coordinator_host = coordinator_host
        self._make_netlink = netlink
        self._make_firewall = firewall
        self._iface = iface or None
        self._public_ip = public_ip or None
        self._subnet_env = subnet_env
        self._share_subnet = share_subnet
        self._clock = clock
        self.overlay: Overlay | None = None
        self.lease: network_pb2.Subnet | None = None
        # Told how long each overlay apply (a kernel resync) took (metrics).
        self.observe_overlay: Callable[[float], None] = lambda seconds: None
        self._config: node_api_pb2.NodeConfig | None = None
        self._acquire: AcquireLease | None = None
        self._lock = asyncio.Lock()
        self._granted_for = 0.0
        self._netlink: NetlinkDriver | None = None
        self._service_cidr = ""
        # What the state file holds, as last read or written: a resync that changes nothing
        # does not write it again (every 30 s, an fsync each).
        self._saved: NetworkRecord | None = None

    # -- start-up -------------------------------------------------------------------------------

    def restore(self) -> None:
        """Use the persisted decision at once, so a restarted agent keeps its pods where they are."""
        record = self._load()
        if self._mode == "off":
            self._use(self._default)
        elif record is not None:
            self._use(record.pod_network)

    def _load(self) -> NetworkRecord | None:
        try:
            self._saved = NetworkRecord(**json.loads(self._state_file.read_text()))
            return self._saved
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            log.warning("ignoring unreadable %s: %s", self._state_file, exc)
            return None

    def _save(self, record: NetworkRecord) -> None:
        if record == self._saved and self._state_file.exists():
            return
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._state_file.parent, prefix=".network.")
        with os.fdopen(fd, "w") as fh:
            json.dump(dataclasses.asdict(record), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._state_file)
        self._saved = record

    def _use(self, pod_network: str) -> None:
        if self._syncer.ctx.pod_network != pod_network:
            log.info("pods attach to engine network %s", pod_network)
            self._syncer.ctx = dataclasses.replace(self._syncer.ctx, pod_network=pod_network)
        self._gate.set()

    # -- pushed config ----------------------------------------------------------------------------

    async def on_config(self, config: node_api_pb2.NodeConfig, acquire: AcquireLease) -> None:
        self._config = config
        self._acquire = acquire
        try:
            await self._apply(config)
        finally:
            if self.pod_bridge != self._hairpin_bridge:
                # Pods now sit on another bridge (the overlay came up after a restart let pods
                # start on the saved network): its ports, started meanwhile, need hairpin mode.
                self._new_ports.set()

    async def _apply(self, config: node_api_pb2.NodeConfig) -> None:
        async with self._lock:
            if self._mode == "off" or not config.HasField("network"):
                if self.overlay is not None:
                    await self.overlay.disable(config.network)
                    self.overlay = None
                self._use(self._default)
                self._save(NetworkRecord(self._default))
                return
            await self._converge(config)

    async def _converge(self, config: node_api_pb2.NodeConfig) -> None:
        network = config.network
        if self.overlay is None:
            self.overlay = Overlay(
                self._make_netlink(),
                self._make_firewall(),
                self._runtime,
                subnet_env_path=self._subnet_env or DEFAULT_SUBNET_ENV,
                share_subnet=self._share_subnet,
            )
            self.lease = None
        overlay = self.overlay
        if overlay.vtep is None:
            await overlay.prepare(
                network, coordinator_ip=self._coordinator_host, iface=self._iface, public_ip=self._public_ip
            )
        if self.lease is None or self._renewal_due(self.lease):
            await self._acquire_lease()
        assert self.lease is not None
        # The pushed config may predate our (re)newed lease: use ours for our own subnet.
        leases = [lease for lease in config.leases if lease.spec.node_name != self.lease.spec.node_name]
        started = time.perf_counter()
        report = await overlay.apply(network, self.lease, [*leases, self.lease])
        remade = report.network in ("created", "recreated")
        self.observe_overlay(time.perf_counter() - started)
        if report.lease_mismatch:
            log.warning("overlay lease mismatch (%s): preparing and leasing again", report.lease_mismatch)
            await overlay.prepare(
                network, coordinator_ip=self._coordinator_host, iface=self._iface, public_ip=self._public_ip
            )
            await self._acquire_lease()
            report = await overlay.apply(network, self.lease, [*leases, self.lease])
            remade = remade or report.network in ("created", "recreated")
        if report.errors:
            log.warning(
                "overlay apply left %d error(s): %s", len(report.errors), "; ".join(report.errors[:3])
            )
        if remade and self._syncer.sandboxes is not None:
            self._syncer.sandboxes.forget_network(overlay.pod_network_name)  # a new subnet, maybe
        self._use(overlay.pod_network_name)
        self._save(NetworkRecord(overlay.pod_network_name, self.lease.spec.cidr))

    async def _acquire_lease(self) -> None:
        assert self.overlay is not None and self.overlay.vtep is not None and self._acquire is not None
        vtep = self.overlay.vtep
        resp = await self._acquire(vtep.public_ip, vtep.vtep_mac)
        if self.lease is None or self.lease.spec.cidr != resp.lease.spec.cidr:
            log.info(
                "leased subnet %s (public ip %s, vtep %s)",
                resp.lease.spec.cidr,
                vtep.public_ip,
                vtep.vtep_mac,
            )
        self.lease = resp.lease
        self._granted_for = resp.lease.spec.expiration.ToNanoseconds() / 1e9 - self._clock()

    def _margin(self) -> float:
        """Renew within an hour of expiry, as flannel does (at half-life for short leases)."""
        return min(3600.0, max(1.0, self._granted_for / 2))

    def _renewal_due(self, lease: network_pb2.Subnet) -> bool:
        return lease.spec.expiration.ToNanoseconds() / 1e9 - self._clock() < self._margin()

    # -- what services need from the node ----------------------------------------------------------

    @property
    def pod_bridge(self) -> str:
        """The Linux bridge pods sit on: the overlay's, or Docker's default one."""
        return self.overlay.bridge_name if self.overlay is not None else "docker0"

    def _driver(self) -> NetlinkDriver:
        if self._netlink is None:
            self._netlink = self._make_netlink()
        return self._netlink

    async def ensure_service_route(self, cidr: str) -> None:
        """Route the service range when nothing else does, so the host itself can reach cluster IPs.

        Packets the host sends are routed before the proxy's DNAT rewrites them; hosts
        without a default route would drop them. Pods are unaffected (they route via
        their bridge's gateway). The route points into the pod bridge and is only ever a
        fallback: an existing route to the range (a default route) is left alone.
        """
        if not cidr or cidr == self._service_cidr:
            return
        first = str(next(ipaddress.IPv4Network(cidr).hosts()))
        driver = self._driver()
        if await driver.route_get(first) is None:
            failures = await driver.execute(
                [ReplaceRoute(Route(dst=cidr, gateway="", dev=self.pod_bridge, onlink=False))]
            )
            if failures:
                log.warning("cannot route service range %s: %s", cidr, failures)
                return
            log.info("routed service range %s into %s", cidr, self.pod_bridge)
        self._service_cidr = cidr

    async def ensure_hairpin(self) -> None:
        bridge = self.pod_bridge
        try:
            changed = await self._driver().set_hairpin(bridge)
        except (OSError, NetlinkFailure) as exc:
            log.debug("hairpin mode on %s: %s", bridge, exc)
            return
        self._hairpin_bridge = bridge
        if changed:
            log.debug("hairpin mode on %d new port(s) of %s", changed, bridge)

    async def run(self, stop: asyncio.Event, period: float = 30.0) -> None:
        """Renew the lease in time, put new pod ports in hairpin mode, repair the kernel state.
        At rest it wakes once a period (or for the lease), not to poll for ports."""
        next_resync = self._clock() + period
        while not stop.is_set():
            wake = min(self._next_wake(period), max(0.0, next_resync - self._clock()))
            if await wait_any(stop, wake, self._new_ports):
                continue
            if self._new_ports.is_set():
                self._new_ports.clear()
                await self.ensure_hairpin()
            due = self._clock() >= next_resync or (self.lease is not None and self._renewal_due(self.lease))
            if not due:
                continue
            next_resync = self._clock() + period
            await self.ensure_hairpin()
            if self._config is None or self._acquire is None:
                continue
            try:
                await self.on_config(self._config, self._acquire)
            except (errors.AtollError, OSError) as exc:
                log.warning("overlay resync failed: %s", exc)
            except Exception:
                log.exception("overlay resync crashed")

    def _next_wake(self, period: float) -> float:
        if self.lease is None:
            return period
        expires = self.lease.spec.expiration.ToNanoseconds() / 1e9
        return max(0.5, min(period, expires - self._margin() - self._clock() + 0.1))
