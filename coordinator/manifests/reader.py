"""Typed, strict access to one parsed document, with errors that name the field.

Decoders never index raw dicts: they wrap a value in `Value`, which knows its
path, and ask it for what they expect (``.integer()``, ``.fields(SCHEMA)``).
Every mismatch then comes out the same way, ``FILE: PATH: expected X, got Y``,
and unknown fields are refused like kubectl's strict field validation - with
a "did you mean" when a known name is close, because a typo'd field that is
silently dropped is the worst kind of manifest bug.

A null value counts as absent, as in Kubernetes.
"""

from __future__ import annotations

import datetime
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

from google.protobuf import timestamp_pb2

from coordinator.manifests import quantity
from coordinator.manifests.errors import Key, ManifestError, Path, PathElem, describe, format_path

E = TypeVar("E", bound=int)

INT32 = (-(1 << 31), (1 << 31) - 1)
INT64 = (quantity.INT64_MIN, quantity.INT64_MAX)


@dataclass(frozen=True)
class Context:
    """Where a document came from: the error location, and a path prefix for List items."""

    source: str
    line: int = 0
    prefix: Path = ()


@dataclass(frozen=True)
class Schema:
    """The field names a mapping may have.

    ``unsupported`` holds real fields Atoll does not implement, with an
    optional hint; ``origin`` says whose they are (Kubernetes', or flannel's
    for a net-conf.json); ``ignored`` holds read-only fields the system writes
    (status and the like), accepted so that ``get -o yaml`` output can be fed
    back, and dropped.
    """

    known: frozenset[str]
    unsupported: Mapping[str, str] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset()
    origin: str = "Kubernetes"

    @classmethod
    def of(
        cls,
        known: Iterable[str],
        unsupported: Mapping[str, str] | Iterable[str] = (),
        ignored: Iterable[str] = (),
        origin: str = "Kubernetes",
    ) -> Schema:
        hints = dict(unsupported) if isinstance(unsupported, Mapping) else dict.fromkeys(unsupported, "")
        return cls(frozenset(known), hints, frozenset(ignored), origin)


class Value:
    """A value at a path in a document."""

    __slots__ = ("ctx", "path", "raw")

    def __init__(self, raw: object, path: Path, ctx: Context) -> None:
        self.raw = raw
        self.path = path
        self.ctx = ctx

    def child(self, raw: object, elem: PathElem) -> Value:
        return Value(raw, (*self.path, elem), self.ctx)

    def error(self, message: str) -> ManifestError:
        return ManifestError(
            self.ctx.source, format_path(self.ctx.prefix + self.path), message, line=self.ctx.line
        )

    def fail(self, message: str) -> NoReturn:
        raise self.error(message)

    def expected(self, what: str) -> NoReturn:
        hint = ""
        if what.startswith("a string"):
            if isinstance(self.raw, bool):
                hint = "; YAML reads unquoted yes/no/on/off/true/false as booleans, so quote the value"
            elif isinstance(self.raw, int | float):
                hint = "; quote the value to make it text"
        self.fail(f"expected {what}, got {describe(self.raw)}{hint}")

    # -- scalars

    def string(self) -> str:
        if not isinstance(self.raw, str):
            self.expected("a string")
        return self.raw

    def boolean(self) -> bool:
        if not isinstance(self.raw, bool):
            self.expected("true or false")
        return self.raw

    def integer(self, bounds: tuple[int, int] = INT64) -> int:
        raw = self.raw
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int):
            self.expected("an integer")
        low, high = bounds
        if not low <= raw <= high:
            self.fail(f"expected an integer between {low} and {high}, got {raw}")
        return raw

    def int_string(self) -> int:
        """An integer written as a decimal string (resourceVersion) or as a number."""
        if isinstance(self.raw, str):
            if self.raw == "":
                return 0
            if not self.raw.isascii() or not self.raw.isdigit() or len(self.raw) > 19:
                self.expected("a decimal number")
            number = int(self.raw)
            if number > INT64[1]:
                self.fail(f"expected a number below 2^63, got {describe(self.raw)}")
            return number
        return self.integer((0, INT64[1]))

    def word(self, table: Mapping[str, E]) -> E:
        """One of a fixed set of words (an enum), case-sensitive as in Kubernetes."""
        text = self.string()
        if text in table:
            return table[text]
        words = sorted(table)
        near = [w for w in words if w.lower() == text.lower()] or difflib.get_close_matches(text, words, 1)
        hint = f' (did you mean "{near[0]}"?)' if near else ""
        self.fail(f"expected one of {', '.join(words)}, got {describe(text)}{hint}")

    def timestamp(self) -> timestamp_pb2.Timestamp:
        """RFC 3339 text, or the datetime YAML makes of an unquoted one."""
        ts = timestamp_pb2.Timestamp()
        raw = self.raw
        if isinstance(raw, datetime.datetime):
            if raw.tzinfo is None:
                raw = raw.replace(tzinfo=datetime.UTC)
            ts.FromDatetime(raw)
            return ts
        if isinstance(raw, str):
            try:
                ts.FromJsonString(raw)
            except ValueError:
                pass
            else:
                return ts
        self.expected("an RFC 3339 time like 2015-03-01T12:00:00Z")

    def cpu(self) -> int:
        try:
            return quantity.cpu_millis(self.raw)
        except quantity.QuantityError as e:
            self._bad_quantity(e, '"500m", "0.5" or "2"')

    def size(self) -> int:
        try:
            return quantity.whole_units(self.raw)
        except quantity.QuantityError as e:
            self._bad_quantity(e, '"128Mi", "1G" or 1073741824')

    def _bad_quantity(self, e: quantity.QuantityError, examples: str) -> NoReturn:
        if str(e) == "too large":
            self.fail(f"quantity {describe(self.raw)} is too large")
        self.expected(f"a quantity like {examples}")

    # -- collections

    def elements(self) -> list[Value]:
        if self.raw is None:
            return []
        if not isinstance(self.raw, list):
            self.expected("a list")
        return [self.child(item, i) for i, item in enumerate(self.raw)]

    def strings(self) -> list[str]:
        return [item.string() for item in self.elements()]

    def string_map(self) -> dict[str, str]:
        """A map of string to string (labels, annotations, selectors)."""
        if self.raw is None:
            return {}
        if not isinstance(self.raw, dict):
            self.expected("a mapping of strings")
        out: dict[str, str] = {}
        for key, value in self.raw.items():
            if not isinstance(key, str):
                self.fail(f"expected string keys, got {describe(key)}")
            out[key] = self.child(value, Key(key)).string()
        return out

    def mapping(self) -> dict[str, object]:
        if not isinstance(self.raw, dict):
            self.expected("a mapping")
        for key in self.raw:
            if not isinstance(key, str):
                self.fail(f"expected field names, got {describe(key)}")
        return self.raw

    def fields(self, schema: Schema) -> Fields:
        """This mapping, checked against ``schema`` (null reads as an empty mapping)."""
        raw = {} if self.raw is None else self.mapping()
        for name in raw:
            if name in schema.known or name in schema.ignored:
                continue
            where = self.child(raw[name], name)
            if name in schema.unsupported:
                hint = schema.unsupported[name]
                where.fail(
                    f"Atoll does not support this {schema.origin} field" + (f"; {hint}" if hint else "")
                )
            where.fail("unknown field" + _suggest(name, schema.known))
        return Fields(self, raw)


class Fields:
    """A mapping whose names have been checked; ``get`` returns None for absent or null."""

    __slots__ = ("_raw", "value")

    def __init__(self, value: Value, raw: dict[str, object]) -> None:
        self.value = value
        self._raw = raw

    def get(self, name: str) -> Value | None:
        raw = self._raw.get(name)
        return None if raw is None else self.value.child(raw, name)

    def present(self, names: Iterable[str]) -> list[str]:
        """Which of ``names`` appear, even as null: for oneofs, ``emptyDir: {}`` and ``emptyDir:`` both count."""
        return [n for n in names if n in self._raw]

    def child_fields(self, name: str, schema: Schema) -> Fields:
        """The named sub-mapping (empty when absent)."""
        return self.value.child(self._raw.get(name), name).fields(schema)


def _suggest(name: str, known: Iterable[str]) -> str:
    options = sorted(known)
    same = [k for k in options if k.lower() == name.lower()]
    near = same or difflib.get_close_matches(name, options, n=1, cutoff=0.75)
    return f'; did you mean "{near[0]}"?' if near else ""
