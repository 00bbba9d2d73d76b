"""Kubernetes label selectors: parsing and matching.

Syntax: comma-separated requirements, each one of `key=value`, `key==value`,
`key!=value`, `key in (a,b)`, `key notin (a,b)`, `key` (exists) and `!key`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from atoll import errors

_KEY = r"(?:[a-z0-9A-Z.-]+/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?"
_VALUE = r"([a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?)?"
_KEY_RE = re.compile(rf"{_KEY}\Z")
_VALUE_RE = re.compile(rf"{_VALUE}\Z")

_SET_RE = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" match objects without the key, as in Kubernetes.
        return not present or labels[self.key] not in self.values

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!exists":
            return f"!{self.key}"
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{next(iter(self.values))}"
        return f"{self.key} {self.op} ({','.join(sorted(self.values))})"


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    @classmethod
    def from_map(cls, labels: Mapping[str, str]) -> Selector:
        return cls(tuple(Requirement(k, "=", frozenset([v])) for k, v in sorted(labels.items())))


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _check(key: str, values: list[str], text: str) -> None:
    if not _KEY_RE.fullmatch(key) or len(key.rsplit("/", 1)[-1]) > 63:
        raise errors.InvalidArgument(f"invalid label key {key!r} in selector {text!r}", field="labelSelector")
    for value in values:
        if len(value) > 63 or not _VALUE_RE.fullmatch(value):
            raise errors.InvalidArgument(
                f"invalid label value {value!r} in selector {text!r}", field="labelSelector"
            )


def parse(text: str) -> Selector:
    """Parse a selector; raises InvalidArgument (field `labelSelector`) on bad syntax."""
    if not text.strip():
        return Selector()
    reqs = []
    for part in _split_top_level(text):
        if m := _SET_RE.fullmatch(part):
            if m.group(1):
                raise errors.InvalidArgument(f"unexpected '!' in {part.strip()!r}", field="labelSelector")
            values = [v.strip() for v in m.group(4).split(",") if v.strip()]
            _check(m.group(2), values, text)
            reqs.append(Requirement(m.group(2), m.group(3), frozenset(values)))
        elif m := _EQ_RE.fullmatch(part):
            op = "!=" if m.group(2) == "!=" else "="
            _check(m.group(1), [m.group(3)], text)
            reqs.append(Requirement(m.group(1), op, frozenset([m.group(3)])))
        elif m := _EXISTS_RE.fullmatch(part):
            _check(m.group(2), [], text)
            reqs.append(Requirement(m.group(2), "!exists" if m.group(1) else "exists"))
        else:
            raise errors.InvalidArgument(
                f"cannot parse selector {text!r} at {part.strip()!r}", field="labelSelector"
            )
    return Selector(tuple(reqs))


def valid_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return bool(_KEY_RE.fullmatch(key)) and len(name) <= 63 and len(prefix) <= 253


def valid_value(value: str) -> bool:
    return len(value) <= 63 and bool(_VALUE_RE.fullmatch(value))
