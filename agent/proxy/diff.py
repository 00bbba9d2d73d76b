"""What the kernel holds, as data, and the minimal nft transaction from there to a desired Ruleset.

`TableState` is the table as the diff sees it: chains as their hook and the
fingerprints of their rules (from the rule comments, see agent.proxy.ruleset),
maps as their type and elements. It comes either from `nft -j list table`
(`from_json`, after a restart or a failure) or from the last ruleset applied
(`from_ruleset`), so steady-state updates never read the kernel.

`diff` emits one script for one `nft -f` transaction, in an order the kernel
accepts (a chain can only be deleted once it is empty and nothing points to
it any more):

1. the table and its maps, if they are missing (or the whole table, anew,
   when a map or a base chain has the wrong type: it cannot be changed in place);
2. `add chain` for new chains;
3. `flush chain` for changed chains and for chains to delete;
4. `add rule` for the rules of new and changed chains;
5. map elements: `delete element` for stale keys, then `add element`;
6. `delete chain` for chains nobody wants any more.

A chain whose fingerprints match is not mentioned at all: its rules and
their handles stay, and so does every other service's part of the table.

`only` and `exclude` scope a transaction to some services ("namespace/name"):
the others' chains and elements are left as they are (the fixed part is always
in scope). Each service owns its chains and elements outright, so a scoped
transaction is complete in itself; this is how the proxy applies service by
service when a whole batch fails, and leaves a service nft refuses out of
later batches (agent.proxy.proxy). `TableState.merge` is the table after a
scoped transaction.
Established connections never depend on any of this (their NAT lives in
conntrack), so even a rebuilt table does not cut them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.proxy.ruleset import (
    FAMILY,
    MAP_TYPE,
    TABLE,
    Chain,
    Element,
    Hook,
    Key,
    Ruleset,
    chain_owner,
    fixed_chains,
    key_text,
)

_T = f"{FAMILY} {TABLE}"
_PROTO_NUMBERS = {6: "tcp", 17: "udp", 132: "sctp"}


class TableFormatError(ValueError):
    """`nft -j` output that does not have the expected shape."""


@dataclass
class ChainState:
    hook: Hook | None
    fingerprints: list[str] = field(default_factory=list)


@dataclass
class MapState:
    type: tuple[str, ...]
    verdict: bool
    elements: dict[Key, Element] = field(default_factory=dict)


@dataclass
class TableState:
    exists: bool
    chains: dict[str, ChainState] = field(default_factory=dict)
    maps: dict[str, MapState] = field(default_factory=dict)

    @classmethod
    def absent(cls) -> TableState:
        return cls(exists=False)

    @classmethod
    def from_ruleset(cls, rs: Ruleset) -> TableState:
        """The table as it is right after `rs` was applied."""
        return cls(
            exists=True,
            chains={n: ChainState(c.hook, list(c.fingerprints)) for n, c in rs.chains.items()},
            maps={n: MapState(MAP_TYPE, True, dict(els)) for n, els in rs.maps.items()},
        )

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> TableState:
        """Parse `nft -j list table ip atoll` (None: the table does not exist)."""
        if doc is None:
            return cls.absent()
        try:
            return _parse(doc)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise TableFormatError(f"unexpected nft JSON: {exc!r}") from None

    def owners(self) -> set[str]:
        found = {chain_owner(name) for name in self.chains}
        found |= {e.owner for m in self.maps.values() for e in m.elements.values()}
        found.discard("")
        return found

    def merge(
        self,
        desired: Ruleset,
        *,
        rebuild: bool = False,
        only: frozenset[str] | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> TableState:
        """The table right after `diff(desired, self, only=only, exclude=exclude)` was applied
        (`rebuild`: that plan's): services out of scope keep what they had."""
        wanted = _scope(only, exclude)
        base = TableState.absent() if rebuild else self
        chains = {n: ChainState(c.hook, list(c.fingerprints)) for n, c in base.chains.items()}
        for name in [n for n in chains if wanted(chain_owner(n)) and n not in desired.chains]:
            del chains[name]
        chains.update(
            (n, ChainState(c.hook, list(c.fingerprints)))
            for n, c in desired.chains.items()
            if wanted(c.owner)
        )
        maps: dict[str, MapState] = {}
        for name, want in desired.maps.items():
            have = base.maps.get(name)
            elements = dict(have.elements) if have is not None else {}
            stale, new = _element_changes(want, elements, wanted)
            for key, _ in stale:
                del elements[key]
            elements.update(new)
            maps[name] = MapState(MAP_TYPE, True, elements)
        return TableState(True, chains, maps)


def _scope(only: frozenset[str] | None, exclude: frozenset[str]) -> Callable[[str], bool]:
    """Whether an owner's chains and elements are in a transaction's scope ("": the fixed part)."""
    return lambda owner: not owner or ((only is None or owner in only) and owner not in exclude)


def _element_changes(
    want: Mapping[Key, Element], elements: Mapping[Key, Element], wanted: Callable[[str], bool]
) -> tuple[list[tuple[Key, Element]], list[tuple[Key, Element]]]:
    """(stale, new) elements of one map, in key order. A key changing hands is stale when either
    its old or its new owner is in scope: the kernel holds one verdict per key."""
    stale = sorted(
        (
            (k, e)
            for k, e in elements.items()
            if (k not in want or want[k].target != e.target)
            and (wanted(e.owner) or (k in want and wanted(want[k].owner)))
        ),
        key=_by_key,
    )
    new = sorted(
        (
            (k, e)
            for k, e in want.items()
            if wanted(e.owner) and (k not in elements or elements[k].target != e.target)
        ),
        key=_by_key,
    )
    return stale, new


def _parse(doc: Mapping[str, Any]) -> TableState:
    state = TableState(exists=False)
    for obj in doc["nftables"]:
        if "table" in obj and obj["table"]["name"] == TABLE:
            state.exists = True
        elif "chain" in obj:
            c = obj["chain"]
            hook = (
                Hook(c["type"], c["hook"], int(c["prio"]), c.get("policy", "accept")) if "hook" in c else None
            )
            state.chains.setdefault(c["name"], ChainState(hook)).hook = hook
        elif "rule" in obj:
            r = obj["rule"]
            # A rule without our comment gets an impossible fingerprint: its chain is rewritten.
            state.chains.setdefault(r["chain"], ChainState(None)).fingerprints.append(r.get("comment", "?"))
        elif "map" in obj:
            m = obj["map"]
            typ = m["type"]
            state.maps[m["name"]] = MapState(
                tuple(typ) if isinstance(typ, list) else (typ,),
                m.get("map") == "verdict",
                dict(_element(e) for e in m.get("elem", ())),
            )
    return state


def _element(raw: list[Any]) -> tuple[Key, Element]:
    """One `[key, verdict]` pair of a verdict map's "elem" list."""
    key, verdict = raw
    comment = ""
    if isinstance(key, dict) and "elem" in key:  # elements with a comment
        comment = key["elem"].get("comment", "")
        key = key["elem"]["val"]
    ip, proto, port = key["concat"]
    if isinstance(proto, int):
        proto = _PROTO_NUMBERS.get(proto, str(proto))
    (kind, body) = next(iter(verdict.items()))
    target = body["target"] if kind in ("goto", "jump") else kind
    return (str(ip), str(proto), int(port)), Element(target, comment or chain_owner(target))


@dataclass(frozen=True)
class Plan:
    commands: tuple[str, ...]
    touched: frozenset[str]  # owners ("namespace/name") whose chains or elements change
    rebuild: bool = False  # the table is created (again) from nothing
    fixed_changed: bool = False  # the base chains, reject chain or maps were (re)made

    @property
    def script(self) -> str:
        return "".join(line + "\n" for line in self.commands)

    def __bool__(self) -> bool:
        return bool(self.commands)


def _needs_rebuild(desired: Ruleset, actual: TableState) -> bool:
    """Maps of the wrong type, or a base chain on the wrong hook, cannot be changed in place."""
    for name in desired.maps:
        have = actual.maps.get(name)
        if have is not None and (have.type != MAP_TYPE or not have.verdict):
            return True
    for name, chain in desired.chains.items():
        have_chain = actual.chains.get(name)
        if have_chain is not None and have_chain.hook != chain.hook:
            return True
    return False


def _rule_lines(chain: Chain) -> list[str]:
    return [
        f'add rule {_T} {chain.name} {rule} comment "{fp}"'
        for rule, fp in zip(chain.rules, chain.fingerprints, strict=True)
    ]


def _elements(verb: str, name: str, items: list[tuple[Key, Element]]) -> list[str]:
    if not items:
        return []
    if verb == "delete":
        body = ", ".join(key_text(k) for k, _ in items)
    else:
        body = ", ".join(f'{key_text(k)} comment "{e.owner}" : goto {e.target}' for k, e in items)
    return [f"{verb} element {_T} {name} {{ {body} }}"]


def _by_key(item: tuple[Key, Element]) -> Key:
    return item[0]


def diff(
    desired: Ruleset,
    actual: TableState,
    *,
    only: frozenset[str] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> Plan:
    """The transaction that turns `actual` into `desired`; empty when they already match.

    With `only` (owners), just those services and the fixed part; `exclude`d services never.
    """
    wanted = _scope(only, exclude)
    prelude: list[str] = []
    rebuild = not actual.exists or _needs_rebuild(desired, actual)
    if rebuild:
        if actual.exists:
            prelude.append(f"delete table {_T}")
        actual = TableState.absent()
        prelude.append(f"add table {_T}")
    fixed = {c.name for c in fixed_chains()}
    for name in desired.maps:
        if name not in actual.maps:
            prelude.append(f"add map {_T} {name} {{ type {' . '.join(MAP_TYPE)} : verdict; }}")

    create: list[str] = []
    flush: list[str] = []
    rules: list[str] = []
    remove: list[str] = []
    touched: set[str] = set()
    fixed_changed = bool(prelude)
    for name, chain in desired.chains.items():
        have = actual.chains.get(name)
        if not wanted(chain.owner) or (have is not None and have.fingerprints == list(chain.fingerprints)):
            continue
        if have is None:
            create.append(f"add chain {_T} {name}" + (f" {chain.hook.spec()}" if chain.hook else ""))
        else:
            flush.append(f"flush chain {_T} {name}")
        rules += _rule_lines(chain)
        touched.add(chain.owner)
        fixed_changed |= name in fixed
    for name in actual.chains.keys() - desired.chains.keys():
        if not wanted(chain_owner(name)):
            continue
        # Flushed before deleting: a chain must be empty, and its rules may point
        # at other chains that go in this transaction too.
        flush.append(f"flush chain {_T} {name}")
        remove.append(f"delete chain {_T} {name}")
        touched.add(chain_owner(name))

    drop: list[str] = []
    add: list[str] = []
    for name, want in desired.maps.items():
        have_map = actual.maps.get(name)
        elements = have_map.elements if have_map is not None else {}
        stale, new = _element_changes(want, elements, wanted)
        drop += _elements("delete", name, stale)
        add += _elements("add", name, new)
        touched |= {e.owner for _, e in stale} | {e.owner for _, e in new}

    touched.discard("")
    commands = (*prelude, *create, *sorted(flush), *rules, *drop, *add, *sorted(remove))
    return Plan(tuple(commands), frozenset(touched), rebuild, fixed_changed)


def reset_script() -> str:
    """Remove the table whether or not it exists (nft 1.0.6 has no `destroy table`)."""
    return f"add table {_T}\ndelete table {_T}\n"
