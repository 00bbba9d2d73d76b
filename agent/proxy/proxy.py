"""ServiceProxy: kube-proxy's job on an Atoll node, with nftables.

    proxy = ServiceProxy(NftNetfilter(AsyncioRunner()), node_name="vm-1")
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

One service never blocks another. Services whose names or ports cannot be
rendered are refused while resolving (agent.proxy.model). When a whole
transaction fails all the same, the proxy reads the table, applies the fixed
part, then each changed service in a transaction of its own: the services
nft accepts are served, and one it refuses is reported (`ProxyReport.failed`,
and an event through `on_failure`) and left out of later transactions, as it
was in the kernel, until its service changes or `invalidate()` retries it.
Only a failure of the fixed part (or of nft itself) makes `apply` raise.

In noop (dry-run) mode nothing is written: the table is read once, every
apply reports and logs the script it would run, and later applies diff
against that would-be state, so the log shows the same increments a real run
would make.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
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
    # (service, why) not served as asked: refused while resolving, or by nft on its own.
    failed: tuple[tuple[str, str], ...] = ()

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
        on_failure: Callable[[str, str], None] | None = None,
    ) -> None:
        """`node_name` tells local endpoints from remote ones (EndpointAddress.node_name).

        Without it every endpoint counts as remote, which only means that
        traffic to external IPs is always masqueraded. `reserved_ports` are
        never programmed on external IPs (sshd's, the agent's, the coordinator's).
        `on_failure(service, why)` is called once per service and reason when a
        service is not served (the agent turns it into an event).
        """
        self._on_failure = on_failure
        # Services nft refused on their own: their ports as refused, and why. Left out of
        # transactions while their ports stay the same.
        self._quarantine: dict[str, tuple[tuple[ServicePort, ...], str]] = {}
        self._reported: dict[str, str] = {}
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
        """Read the kernel's table again on the next apply (repairs changes made behind our back),
        and try again the services nft refused."""
        self._current = None
        self._quarantine.clear()

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
        by_owner: dict[str, list[ServicePort]] = {}
        for port in resolved.ports:
            by_owner.setdefault(port.owner, []).append(port)
        self._quarantine = {
            owner: (ports, why)
            for owner, (ports, why) in self._quarantine.items()
            if tuple(by_owner.get(owner, ())) == ports
        }
        held = frozenset(self._quarantine)
        plan = await asyncio.to_thread(diff, desired, current, exclude=held)
        before, after = current.owners(), desired.owners()
        failed: dict[str, str] = {}
        if plan and not self._noop:
            try:
                await self._nf.apply(plan.script)
            except NetfilterError as exc:
                self._current = None  # atomic, so unchanged; but read it again to be sure
                log.warning("service proxy: transaction failed (%s); applying service by service", exc)
                self._current, failed = await self._apply_each(desired, held)
                for owner, why in failed.items():
                    self._quarantine[owner] = (tuple(by_owner.get(owner, ())), why)
            else:
                self._current = self._after(current, desired, plan.rebuild, held)
        else:
            self._current = self._after(current, desired, plan.rebuild, held)
        self._report_failures(resolved, failed)
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
            failed=(
                *resolved.refused,
                *sorted(failed.items()),
                *((o, why) for o, (_, why) in sorted(self._quarantine.items()) if o not in failed),
            ),
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

    @staticmethod
    def _after(current: TableState, desired: Ruleset, rebuild: bool, held: frozenset[str]) -> TableState:
        if not held:
            return TableState.from_ruleset(desired)  # the common case, and the cheaper one
        return current.merge(desired, rebuild=rebuild, exclude=held)

    async def _apply_each(self, desired: Ruleset, held: frozenset[str]) -> tuple[TableState, dict[str, str]]:
        """After a failed transaction: the fixed part, then one transaction per changed service.

        Returns the table as it then is and the services nft refused (with its message).
        Raises NetfilterError when the table cannot be read or its fixed part not applied.
        """
        state = TableState.from_json(await self._nf.list_table())
        base = diff(desired, state, only=frozenset())
        if base:
            await self._nf.apply(base.script)
        state = state.merge(desired, rebuild=base.rebuild, only=frozenset())
        failed: dict[str, str] = {}
        for owner in sorted(diff(desired, state, exclude=held).touched):
            step = diff(desired, state, only=frozenset({owner}))
            if not step:
                continue
            try:
                await self._nf.apply(step.script)
            except NetfilterError as exc:
                failed[owner] = str(exc)
                continue
            state = state.merge(desired, only=frozenset({owner}))
        return state, failed

    def _report_failures(self, resolved: Resolved, failed: dict[str, str]) -> None:
        """One `on_failure` call per service and reason while it lasts; logged as a warning too."""
        now = dict(resolved.refused)
        now.update((owner, why) for owner, (_, why) in self._quarantine.items())
        now.update(failed)
        for owner, why in sorted(now.items()):
            if self._reported.get(owner) != why:
                log.warning("service proxy: service %r not served: %s", owner, why)
                if self._on_failure is not None:
                    self._on_failure(owner, why)
        self._reported = now

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
