"""ServiceProxy: kube-proxy's job on an Atoll node, with nftables.

    proxy = ServiceProxy(NftNetfilter(), node_name="vm-1")
    report = await proxy.apply(state, {"198.51.100.10", "10.100.7.1"})   # every WatchServices push
    await proxy.reset()                                                 # uninstall

Each `apply` resolves the pushed ServiceState against this node
(agent.proxy.model), renders the whole desired table as data
(agent.proxy.ruleset), diffs it against what the kernel holds
(agent.proxy.diff) and applies the difference as one `nft -f` transaction.
What the kernel holds is read with `nft -j list table` only when the proxy
does not know it: on the first apply (an agent restart finds the old table
and keeps every chain that is still right), after a failed apply, and after
`invalidate()` (a periodic resync). Otherwise it is the last ruleset applied.

In noop (dry-run) mode nothing is written: the table is read once, every
apply reports and logs the script it would run, and later applies diff
against that would-be state, so the log shows the same increments a real run
would make.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from agent.proxy.diff import TableState, diff, reset_script
from agent.proxy.model import Resolved, ServicePort, resolve
from agent.proxy.netfilter import Netfilter, NetfilterError
from agent.proxy.ruleset import MASQ_MARK, Chain, Ruleset, render
from atoll.v1 import node_api_pb2

log = logging.getLogger(__name__)

_BRIDGE_NF = "/proc/sys/net/bridge/bridge-nf-call-iptables"


@dataclass(frozen=True)
class ProxyReport:
    """What one apply did, by service ("namespace/name")."""

    generation: int
    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    script: str = ""  # the transaction run (or, in noop mode, that would have run); "" if none
    applied: bool = False  # a transaction reached the kernel
    rebuilt: bool = False  # the table was created from nothing (first start, or a broken table)
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.script)


class ServiceProxy:
    def __init__(
        self,
        netfilter: Netfilter,
        *,
        node_name: str = "",
        noop: bool = False,
        mark: int = MASQ_MARK,
        reserved_ports: frozenset[int] = frozenset(),
    ) -> None:
        """`node_name` tells local endpoints from remote ones (EndpointAddress.node_name).

        Without it every endpoint counts as remote, which only means that
        traffic to external IPs is always masqueraded. `reserved_ports` are
        never programmed on external IPs (sshd's, the agent's, the coordinator's).
        """
        self._reserved_ports = reserved_ports
        self._nf = netfilter
        self._node_name = node_name
        self._noop = noop
        self._mark = mark
        self._current: TableState | None = None  # None: unknown, read the kernel first
        self._affinity_logged: set[str] = set()
        self._warned: set[str] = set()
        self._render_cache: dict[tuple[ServicePort, int], list[Chain]] = {}
        self._checked_bridge = False
        self.last_report: ProxyReport | None = None
        self._lock = asyncio.Lock()  # one transaction at a time, each diffed against the last

    @property
    def noop(self) -> bool:
        return self._noop

    def invalidate(self) -> None:
        """Read the kernel's table again on the next apply (repairs changes made behind our back)."""
        self._current = None

    async def apply(self, state: node_api_pb2.ServiceState, local_addresses: Iterable[str]) -> ProxyReport:
        """Make the table serve `state` on this node; `local_addresses` are the node's own IPs.

        Raises NetfilterError when nft fails; the table is then as it was
        (transactions are atomic) and the next apply reads it again.
        """
        async with self._lock:
            return await self._apply(state, local_addresses)

    async def _apply(self, state: node_api_pb2.ServiceState, local_addresses: Iterable[str]) -> ProxyReport:
        start = time.monotonic()
        self._check_bridge_netfilter()
        # Pure CPU (tens of ms per 1,000 services): on a worker thread, so the agent's other
        # tasks (heartbeats, the pod syncer) keep getting turns meanwhile.
        addresses = frozenset(local_addresses)
        resolved, desired = await asyncio.to_thread(self._render, state, addresses)
        for owner in resolved.affinity_ignored:
            if owner not in self._affinity_logged:
                self._affinity_logged.add(owner)
                log.warning(
                    "service %s: sessionAffinity ClientIP is not supported; balancing randomly", owner
                )
        warnings = (*resolved.warnings, *desired.warnings)
        for warning in warnings:
            if warning not in self._warned:  # every push repeats them: say each once while it lasts
                log.warning("service proxy: %s", warning)
        self._warned = set(warnings)

        current = await self._actual()
        plan = await asyncio.to_thread(diff, desired, current)
        before, after = current.owners(), desired.owners()
        if plan and not self._noop:
            try:
                await self._nf.apply(plan.script)
            except NetfilterError:
                self._current = None  # atomic, so unchanged; but read it again to be sure
                raise
        self._current = TableState.from_ruleset(desired)
        both = before & after
        report = ProxyReport(
            generation=state.generation,
            added=tuple(sorted(after - before)),
            updated=tuple(sorted(both & plan.touched)),
            removed=tuple(sorted(before - after)),
            kept=tuple(sorted(both - plan.touched)),
            script=plan.script,
            applied=bool(plan) and not self._noop,
            rebuilt=plan.rebuild,
            warnings=warnings,
            seconds=time.monotonic() - start,
        )
        if plan:
            log.info(
                "service proxy%s: generation %d: +%d ~%d -%d =%d services, %d nft commands in %.3fs",
                " (noop, not applied)" if self._noop else "",
                report.generation,
                len(report.added),
                len(report.updated),
                len(report.removed),
                len(report.kept),
                len(plan.commands),
                report.seconds,
            )
            # In noop mode the script is the point of running at all.
            log.log(
                logging.INFO if self._noop else logging.DEBUG, "service proxy transaction:\n%s", plan.script
            )
        self.last_report = report
        return report

    def _render(
        self, state: node_api_pb2.ServiceState, addresses: frozenset[str]
    ) -> tuple[Resolved, Ruleset]:
        resolved = resolve(state, addresses, self._node_name, self._reserved_ports)
        return resolved, render(resolved.ports, mark=self._mark, cache=self._render_cache)

    async def reset(self) -> None:
        """Remove Atoll's table (uninstall, tests). Connections already NATed keep working."""
        async with self._lock:
            if not self._noop:
                try:
                    await self._nf.apply(reset_script())
                except NetfilterError:
                    self._current = None
                    raise
            self._current = TableState.absent()

    async def _actual(self) -> TableState:
        if self._current is None:
            try:
                self._current = TableState.from_json(await self._nf.list_table())
            except NetfilterError:
                if not self._noop:
                    raise
                log.warning("service proxy (noop): cannot read the table; assuming there is none")
                self._current = TableState.absent()
        return self._current

    def _check_bridge_netfilter(self) -> None:
        """Warn once if bridged replies would skip conntrack (kube-proxy's same warning)."""
        if self._checked_bridge:
            return
        self._checked_bridge = True
        try:
            with open(_BRIDGE_NF) as f:
                enabled = f.read().strip() == "1"
        except OSError:
            enabled = False
        if not enabled:
            log.warning(
                "%s is not 1 (br_netfilter missing?): a pod reaching a service endpoint on its own "
                "bridge will get answers from the wrong address",
                _BRIDGE_NF,
            )
