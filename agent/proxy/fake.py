"""FakeNetfilter: records every script and keeps the table the way the kernel would.

It understands the statements agent.proxy.diff emits, applies a script
all-or-nothing, and refuses what nf_tables refuses (deleting a chain that is
not empty or still referenced, a goto to a missing chain, adding a map
element whose key holds another verdict, deleting what is not there), so
unit tests catch transactions in the wrong order. `list_table` answers in the
shape of `nft -j list table`, with rule handles that stay put for rules that
were not touched.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.proxy.netfilter import NetfilterError
from agent.proxy.ruleset import FAMILY, TABLE

_T = f"{FAMILY} {TABLE}"
_STMT = re.compile(rf"^(add|delete|flush) (table|chain|map|rule|element) {_T}(?: (\S+))?(?: (.*))?$")
_HOOK = re.compile(r"^\{ type (\w+) hook (\w+) priority (-?\d+); policy (\w+); \}$")
_MAP = re.compile(r"^\{ type (.+) : verdict; \}$")
_COMMENT = re.compile(r'^(.*) comment "([^"]*)"$')
_ELEMENT = re.compile(r'^(.+?)(?: comment "([^"]*)")? : (goto|jump) (\S+)$')
_REFERENCE = re.compile(r"\b(?:goto|jump) ([^\s,}]+)")


@dataclass
class _Rule:
    handle: int
    text: str
    comment: str


@dataclass
class _Chain:
    handle: int
    hook: tuple[str, str, int, str] | None
    rules: list[_Rule] = field(default_factory=list)


@dataclass
class _Map:
    handle: int
    type: tuple[str, ...]
    elements: dict[tuple[str, str, int], tuple[str, str, str]] = field(default_factory=dict)


@dataclass
class _Table:
    chains: dict[str, _Chain] = field(default_factory=dict)
    maps: dict[str, _Map] = field(default_factory=dict)


class FakeNetfilter:
    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.lists = 0
        self.fail_next: str | None = None  # the next apply fails with this message
        # Every apply whose script contains one of these fails, as nft refusing one service would.
        self.refuse: set[str] = set()
        self.table: _Table | None = None
        self._handle = 0

    # -- the Netfilter protocol ------------------------------------------------------------

    async def list_table(self) -> Mapping[str, Any] | None:
        self.lists += 1
        return None if self.table is None else self.dump()

    async def apply(self, script: str) -> None:
        self.scripts.append(script)
        if self.fail_next is not None:
            message, self.fail_next = self.fail_next, None
            raise NetfilterError(message)
        if bad := sorted(s for s in self.refuse if s in script):
            raise NetfilterError(f"Error: Could not process rule: Invalid argument ({bad[0]})")
        work = copy.deepcopy(self.table)
        handle = self._handle
        for number, line in enumerate(script.splitlines(), 1):
            if line.strip():
                try:
                    work, handle = self._execute(work, handle, line.strip())
                except NetfilterError as exc:
                    raise NetfilterError(f"line {number}: {exc}: {line}") from None
        self.table, self._handle = work, handle  # all or nothing, like one nft transaction

    # -- for tests -------------------------------------------------------------------------

    def rule_handles(self) -> dict[str, list[int]]:
        assert self.table is not None
        return {name: [r.handle for r in c.rules] for name, c in self.table.chains.items()}

    def chain_rules(self, name: str) -> list[str]:
        assert self.table is not None
        return [r.text for r in self.table.chains[name].rules]

    def elements(self, name: str) -> dict[tuple[str, str, int], str]:
        assert self.table is not None
        return {k: v[1] for k, v in self.table.maps[name].elements.items()}

    def dump(self) -> dict[str, Any]:
        """The table in the shape `nft -j list table ip atoll` prints it (the parts we read)."""
        assert self.table is not None
        out: list[dict[str, Any]] = [
            {"metainfo": {"version": "fake", "json_schema_version": 1}},
            {"table": {"family": FAMILY, "name": TABLE, "handle": 1}},
        ]
        for name, m in self.table.maps.items():
            elem = [
                [
                    {"elem": {"val": {"concat": list(k)}, "comment": comment}}
                    if comment
                    else {"concat": list(k)},
                    {kind: {"target": target}},
                ]
                for k, (kind, target, comment) in m.elements.items()
            ]
            body: dict[str, Any] = {"family": FAMILY, "name": name, "table": TABLE, "type": list(m.type)}
            body |= {"handle": m.handle, "map": "verdict"} | ({"elem": elem} if elem else {})
            out.append({"map": body})
        for name, c in self.table.chains.items():
            chain: dict[str, Any] = {"family": FAMILY, "table": TABLE, "name": name, "handle": c.handle}
            if c.hook is not None:
                chain |= dict(zip(("type", "hook", "prio", "policy"), c.hook, strict=True))
            out.append({"chain": chain})
        for name, c in self.table.chains.items():
            for r in c.rules:
                rule = {"family": FAMILY, "table": TABLE, "chain": name, "handle": r.handle, "expr": []}
                out.append({"rule": rule | ({"comment": r.comment} if r.comment else {})})
        return {"nftables": out}

    # -- the interpreter -------------------------------------------------------------------

    def _execute(self, table: _Table | None, handle: int, line: str) -> tuple[_Table | None, int]:
        m = _STMT.match(line)
        if m is None:
            raise NetfilterError("syntax error")
        verb, kind, name, rest = m.group(1), m.group(2), m.group(3), m.group(4) or ""
        if kind == "table":
            if verb == "add":
                return table or _Table(), handle
            if verb == "delete" and table is not None:
                return None, handle
            raise NetfilterError("No such file or directory")
        if table is None or name is None:
            raise NetfilterError("No such file or directory")
        handle += 1
        if kind == "map":
            mm = _MAP.match(rest)
            if verb != "add" or mm is None:
                raise NetfilterError("syntax error")
            typ = tuple(mm.group(1).split(" . "))
            have = table.maps.get(name)
            if have is not None and have.type != typ:
                raise NetfilterError("File exists")
            table.maps.setdefault(name, _Map(handle, typ))
        elif kind == "chain":
            self._chain(table, handle, verb, name, rest)
        elif kind == "rule":
            chain = table.chains.get(name)
            if verb != "add" or chain is None:
                raise NetfilterError("No such file or directory")
            cm = _COMMENT.match(rest)
            text, comment = (cm.group(1), cm.group(2)) if cm else (rest, "")
            for target in _REFERENCE.findall(text):
                if target not in table.chains:
                    raise NetfilterError(f"Could not process rule: No such file or directory ({target})")
            for ref in re.findall(r"@(\S+)", text):
                if ref not in table.maps:
                    raise NetfilterError("Could not process rule: No such file or directory")
            chain.rules.append(_Rule(handle, text, comment))
        else:
            self._element(table, verb, name, rest)
        return table, handle

    @staticmethod
    def _chain(table: _Table, handle: int, verb: str, name: str, rest: str) -> None:
        have = table.chains.get(name)
        if verb == "add":
            hook = None
            if rest:
                hm = _HOOK.match(rest)
                if hm is None:
                    raise NetfilterError("syntax error")
                hook = (hm.group(1), hm.group(2), int(hm.group(3)), hm.group(4))
            if have is not None and have.hook != hook:
                raise NetfilterError("Operation not supported")
            table.chains.setdefault(name, _Chain(handle, hook))
        elif have is None:
            raise NetfilterError("No such file or directory")
        elif verb == "flush":
            have.rules.clear()
        elif verb == "delete":
            referenced = any(
                name in _REFERENCE.findall(r.text) for c in table.chains.values() for r in c.rules
            ) or any(name == e[1] for m in table.maps.values() for e in m.elements.values())
            if have.rules or referenced:
                raise NetfilterError("Could not process rule: Device or resource busy")
            del table.chains[name]

    @staticmethod
    def _element(table: _Table, verb: str, name: str, rest: str) -> None:
        target_map = table.maps.get(name)
        if target_map is None or not (rest.startswith("{ ") and rest.endswith(" }")):
            raise NetfilterError("No such file or directory")
        for item in rest[2:-2].split(", "):
            if verb == "delete":
                key = _key(item)
                if key not in target_map.elements:
                    raise NetfilterError("Could not process rule: No such file or directory")
                del target_map.elements[key]
                continue
            em = _ELEMENT.match(item)
            if verb != "add" or em is None:
                raise NetfilterError("syntax error")
            key, value = _key(em.group(1)), (em.group(3), em.group(4), em.group(2) or "")
            if value[1] not in table.chains:
                raise NetfilterError("Could not process rule: No such file or directory")
            if key in target_map.elements and target_map.elements[key][:2] != value[:2]:
                raise NetfilterError("Could not process rule: File exists")
            target_map.elements[key] = value


def _key(text: str) -> tuple[str, str, int]:
    parts = text.split(" . ")
    if len(parts) != 3:
        raise NetfilterError("syntax error")
    return parts[0], parts[1], int(parts[2])
