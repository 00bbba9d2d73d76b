"""What a kind needs to be read from and written to manifests.

One `Codec` per kind, defined in that kind's module (pod.py, service.py ...)
and listed in catalog.py. Adding a kind means writing one module with a
CODEC and adding it to that list; decode.py and encode.py do not change.

A kind has one `Shape` per apiVersion it accepts. Shapes other than v1 also
say how to turn a v1 field path (what atoll.validation reports) into a path
in their own document shape, so that a v1beta1 file's errors point into the
v1beta1 file.

Some documents say neither kind nor apiVersion: the first 2014 examples, and
flannel's net-conf.json, which operators keep as it is. A codec's `Sniff`
recognises those by their own fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from atoll import validation
from coordinator.manifests.reader import Value


def same_path(path: str) -> str:
    return path


@dataclass(frozen=True)
class PathRule:
    """Rewrite a v1 path prefix: ``pattern`` is matched at the start, ``replacement`` as in re.sub."""

    pattern: re.Pattern[str]
    replacement: str


def rules(*pairs: tuple[str, str]) -> tuple[PathRule, ...]:
    return tuple(PathRule(re.compile(rf"^{p}(?=$|[.\[])"), r) for p, r in pairs)


def translator(table: Sequence[PathRule]) -> Callable[[str], str]:
    """A path function from rules; the first rule that matches wins."""

    def translate(path: str) -> str:
        for rule in table:
            new, n = rule.pattern.subn(rule.replacement, path, count=1)
            if n:
                return new
        return path

    return translate


@dataclass(frozen=True)
class Shape:
    """How one apiVersion of a kind looks in a manifest."""

    decode: Callable[[Value], Message]
    # v1 field path -> path in this shape (identity for v1-shaped versions).
    path: Callable[[str], str] = same_path
    # When the translation depends on how the document was written (a v1beta1
    # service's single ``port`` or its ``ports`` list): the path function for
    # this document. Takes precedence over ``path``.
    paths_for: Callable[[Value], Callable[[str], str]] | None = None

    def translate_for(self, root: Value) -> Callable[[str], str]:
        return self.paths_for(root) if self.paths_for is not None else self.path


@dataclass(frozen=True)
class Sniff:
    """Recognises a document without ``kind`` by its fields, and says how to read it.

    ``shape`` is used when the document has no ``apiVersion`` either; one
    that has an apiVersion is read by the codec's shape for it.
    """

    test: Callable[[Mapping[str, object]], bool]
    shape: Shape


@dataclass(frozen=True)
class Codec:
    kind: str  # the Kubernetes kind written on output
    message: type[Message]
    shapes: Mapping[str, Shape]  # apiVersion -> shape
    encode: Callable[[Any], dict[str, Any]]
    # Defaults a copy and validates it (atoll.validation); the first problem is reported.
    validate: Callable[[Any], validation.Problems]
    aliases: tuple[str, ...] = field(default=())  # other kind names accepted on input ("Minion")
    sniffs: tuple[Sniff, ...] = field(default=())

    @property
    def kinds(self) -> tuple[str, ...]:
        return (self.kind, *self.aliases)
