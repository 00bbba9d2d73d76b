"""Masquerade and forwarding rules for the overlay, as data, and the iptables driver.

Rules (flannel's, in chains of our own):

    nat    POSTROUTING -> ATOLL-POSTRTG   (only with ip_masq)
             -s NET -d NET                  RETURN      pods see each other's real address
             -s NET ! -d 224.0.0.0/4        MASQUERADE  pods reaching outside the overlay
             ! -s NET -d OWN                RETURN      e.g. host ports to local pods
             ! -s NET -d NET                MASQUERADE  host (or docker0) to remote pods,
                                                        so that the answer comes back here
    filter DOCKER-USER -> ATOLL-FORWARD
             -s NET ACCEPT, -d NET ACCEPT

Why iptables (the iptables-nft front end on this Debian) for all of it, and
not a table of our own in nft:

* dockerd owns iptables' filter table, sets FORWARD's policy to DROP and
  offers DOCKER-USER as the place for user rules. With nftables every table
  hooked at FORWARD runs and a drop in any of them is final, so an accept in
  an Atoll-owned nft table could never override docker's policy: the accept
  rules *must* be iptables rules in DOCKER-USER.
* NAT would work from our own nft table (the first NAT decision of a
  connection wins, across tables), but then the overlay's rules would be
  split over two tools and two views. In iptables, `iptables -t nat -S`
  shows ours beside docker's, as operators used to flannel expect, and one
  parser, one writer and one fake cover both tables.

Every rule carries the comment `atoll-overlay`, and the two chains are
Atoll's alone, so re-applying adds nothing twice and nothing else is touched.
Each change is one `iptables-restore --noflush` transaction (declaring an
existing chain in it flushes that chain, which rewrites ours atomically).
Commands run through the injected agent.execute.CommandRunner (the agent's
one way of starting a process); `command_prefix` (e.g. nsenter) lets tests aim
them at a test namespace.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from agent.execute import CommandRunner
from atoll import errors

log = logging.getLogger(__name__)

COMMENT = "atoll-overlay"
NAT_CHAIN = "ATOLL-POSTRTG"
FILTER_CHAIN = "ATOLL-FORWARD"
DOCKER_USER = "DOCKER-USER"
_MARK = f"-m comment --comment {COMMENT}"

#: table -> chain -> rule specs (what follows "-A CHAIN " in iptables-save), in order.
Tables = Mapping[str, Mapping[str, Sequence[str]]]


class FirewallFailure(errors.Unavailable):
    """An iptables command failed or did not answer in time."""


@dataclass(frozen=True)
class FirewallPlan:
    nat: tuple[str, ...]  # rules of NAT_CHAIN; empty: no masquerading, chain and jump removed
    forward: tuple[str, ...]  # rules of FILTER_CHAIN


def render_firewall(
    network: ipaddress.IPv4Network, own: ipaddress.IPv4Network | None, ip_masq: bool
) -> FirewallPlan:
    """The rules in the exact form iptables-save prints them, so that a dump compares equal."""
    net = str(network)
    nat: tuple[str, ...] = ()
    if ip_masq:
        nat = (
            f"-s {net} -d {net} {_MARK} -j RETURN",
            f"-s {net} ! -d 224.0.0.0/4 {_MARK} -j MASQUERADE",
        )
        if own is not None:
            nat += (f"! -s {net} -d {own} {_MARK} -j RETURN",)
        nat += (f"! -s {net} -d {net} {_MARK} -j MASQUERADE",)
    forward = (f"-s {net} {_MARK} -j ACCEPT", f"-d {net} {_MARK} -j ACCEPT")
    return FirewallPlan(nat=nat, forward=forward)


@dataclass(frozen=True)
class FwOp:
    """One line of an iptables-restore transaction."""

    table: str
    action: Literal["declare", "insert", "append", "delete", "remove_chain"]
    chain: str
    rule: str = ""

    def line(self) -> str:
        match self.action:
            case "declare":  # creates the chain, or flushes it if it exists
                return f":{self.chain} - [0:0]"
            case "insert":
                return f"-I {self.chain} 1 {self.rule}"
            case "append":
                return f"-A {self.chain} {self.rule}"
            case "delete":
                return f"-D {self.chain} {self.rule}"
            case "remove_chain":
                return f"-X {self.chain}"
        raise AssertionError(self.action)


def _jump(chain: str) -> str:
    return f"{_MARK} -j {chain}"


def diff_firewall(plan: FirewallPlan, tables: Tables) -> list[FwOp]:
    """The restore lines that turn `tables` into `plan`; empty when they already match."""
    ops: list[FwOp] = []
    nat = tables.get("nat", {})
    postrouting = list(nat.get("POSTROUTING", ()))
    jumps = postrouting.count(_jump(NAT_CHAIN))
    if plan.nat:
        if list(nat.get(NAT_CHAIN, [None])) != list(plan.nat):
            ops.append(FwOp("nat", "declare", NAT_CHAIN))
            ops += [FwOp("nat", "append", NAT_CHAIN, rule) for rule in plan.nat]
        ops += _one_jump("nat", "POSTROUTING", NAT_CHAIN, jumps)
    else:
        ops += _remove("nat", "POSTROUTING", NAT_CHAIN, nat)

    filt = tables.get("filter", {})
    if list(filt.get(FILTER_CHAIN, [None])) != list(plan.forward):
        ops.append(FwOp("filter", "declare", FILTER_CHAIN))
        ops += [FwOp("filter", "append", FILTER_CHAIN, rule) for rule in plan.forward]
    if DOCKER_USER not in filt:
        # No dockerd (yet): make its hook the way dockerd would, so that a dockerd
        # starting later finds and keeps it (and its `-j DOCKER-USER` stays single).
        ops.append(FwOp("filter", "declare", DOCKER_USER))
        if f"-j {DOCKER_USER}" not in filt.get("FORWARD", ()):
            ops.append(FwOp("filter", "insert", "FORWARD", f"-j {DOCKER_USER}"))
    ops += _one_jump(
        "filter", DOCKER_USER, FILTER_CHAIN, list(filt.get(DOCKER_USER, ())).count(_jump(FILTER_CHAIN))
    )
    return ops


def teardown_firewall(tables: Tables) -> list[FwOp]:
    """Remove our chains and the jumps into them (the overlay was switched off)."""
    return _remove("nat", "POSTROUTING", NAT_CHAIN, tables.get("nat", {})) + _remove(
        "filter", DOCKER_USER, FILTER_CHAIN, tables.get("filter", {})
    )


def _remove(table: str, parent: str, chain: str, chains: Mapping[str, Sequence[str]]) -> list[FwOp]:
    ops = [FwOp(table, "delete", parent, _jump(chain))] * list(chains.get(parent, ())).count(_jump(chain))
    if chain in chains:
        ops += [FwOp(table, "declare", chain), FwOp(table, "remove_chain", chain)]
    return ops


def _one_jump(table: str, chain: str, target: str, present: int) -> list[FwOp]:
    if present == 0:
        return [FwOp(table, "insert", chain, _jump(target))]
    return [FwOp(table, "delete", chain, _jump(target))] * (present - 1)


def restore_text(ops: Sequence[FwOp]) -> str:
    """ops as iptables-restore input, one transaction per table (declarations first)."""
    out = []
    for table in dict.fromkeys(op.table for op in ops):
        mine = [op for op in ops if op.table == table]
        out.append(f"*{table}")
        out += [op.line() for op in mine if op.action == "declare"]
        out += [op.line() for op in mine if op.action != "declare"]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def parse_save(text: str) -> dict[str, dict[str, list[str]]]:
    """iptables-save output as table -> chain -> rule specs (every declared chain is present)."""
    tables: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = tables.setdefault(line[1:], {})
        elif current is None or line == "COMMIT":
            continue
        elif line.startswith(":"):
            current.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            chain, _, rule = line[3:].partition(" ")
            current.setdefault(chain, []).append(rule)
    return tables


class Firewall(Protocol):
    async def dump(self) -> Tables:
        """The filter and nat tables (absent tables are empty)."""
        ...

    async def apply(self, ops: Sequence[FwOp]) -> None:
        """Apply `ops` as one transaction per table; raises FirewallFailure."""
        ...


class IptablesFirewall:
    def __init__(
        self,
        runner: CommandRunner,
        *,
        command_prefix: Sequence[str] = (),
        save: str = "iptables-save",
        restore: str = "iptables-restore",
        timeout: float = 15.0,
    ) -> None:
        self._runner = runner
        self._prefix = list(command_prefix)
        self._save = save
        self._restore = restore
        self._timeout = timeout

    async def _run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        try:
            res = await self._runner.run([*self._prefix, *argv], input=stdin, timeout=self._timeout)
        except errors.CommandFailed as exc:
            raise FirewallFailure(exc.message) from exc
        return res.stdout

    async def dump(self) -> Tables:
        text = await self._run([self._save])
        tables = parse_save(text)
        return {name: tables.get(name, {}) for name in ("filter", "nat")}

    async def apply(self, ops: Sequence[FwOp]) -> None:
        if ops:
            await self._run([self._restore, "--noflush", "--wait", "5"], stdin=restore_text(ops))
