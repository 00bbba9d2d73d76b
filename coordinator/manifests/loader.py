"""Manifest text -> plain documents (dicts), with limits and readable errors.

Reading is separate from decoding so that everything that can go wrong with
*text* (size, encoding, syntax, pasted look-alike characters, duplicate keys,
alias bombs, absurd nesting) is reported here as ``FILE:LINE:COL: message``,
and the decoder only ever sees well-formed data.

YAML goes through ``yaml.SafeLoader`` only: no Python object construction,
ever. Its pure-Python parser is used on purpose (not the C one) because its
error marks are exact and identical on every host. JSON goes through the
standard library. Either way the input is bounded before parsing: at most
MAX_BYTES of text, MAX_DEPTH levels of nesting and MAX_DOCUMENTS documents.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Literal

import yaml

from coordinator.manifests import chars
from coordinator.manifests.errors import ManifestError, describe

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
# Documents per file, and objects after expanding `kind: List` (see decode).
MAX_DOCUMENTS = 500
# YAML nodes visited once aliases are expanded: defuses "billion laughs".
MAX_NODES = 100_000
# How many lines above a syntax error a pasted character is still blamed for it.
_BLAME_LINES = 3

Format = Literal["json", "yaml"]


@dataclass(frozen=True)
class Document:
    """One parsed document. ``line`` is its first line in a multi-document file, else 0."""

    source: str
    data: object
    line: int = 0


def read_file(path: str | os.PathLike[str]) -> tuple[str, str]:
    """Read a manifest file (``-`` is standard input) -> (text, source name)."""
    if os.fspath(path) == "-":
        source = "<stdin>"
        data = sys.stdin.buffer.read(MAX_BYTES + 1)
    else:
        source = os.fspath(path)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > MAX_BYTES:
                    raise _too_big(source, f"is {size / (1 << 20):.1f} MiB")
                data = f.read(MAX_BYTES + 1)
        except OSError as e:
            raise ManifestError(source, "", f"cannot read: {e.strerror or e}") from None
    if len(data) > MAX_BYTES:
        raise _too_big(source, "is larger than 1 MiB")
    return decode_bytes(data, source), source


def decode_bytes(data: bytes, source: str) -> str:
    """UTF-8 (with or without a byte order mark) -> str; anything else is refused by position."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ManifestError(source, "", "the file is UTF-16 encoded; save it as UTF-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        line_start = data.rfind(b"\n", 0, e.start) + 1
        column = len(data[line_start : e.start].decode("utf-8", "replace")) + 1
        raise ManifestError(
            source,
            "",
            f"byte 0x{data[e.start]:02x} is not UTF-8; save the file as UTF-8",
            line=line,
            column=column,
        ) from None


def parse(text: str, source: str, *, fmt: Format | None = None) -> list[Document]:
    """Parse manifest text into documents; empty documents are skipped."""
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise _too_big(source, "is larger than 1 MiB")
    text = text.removeprefix("\ufeff")
    fmt = fmt or detect_format(text, source)
    docs = _parse_json(text, source) if fmt == "json" else _parse_yaml(text, source)
    if not docs:
        raise ManifestError(source, "", "no objects found: the file is empty")
    return docs


def detect_format(text: str, source: str) -> Format:
    """By file extension, else by content: JSON starts with '{' or '['."""
    lower = source.lower()
    if lower.endswith(".json"):
        return "json"
    if lower.endswith((".yaml", ".yml")):
        return "yaml"
    return "json" if text.lstrip()[:1] in ("{", "[") else "yaml"


def _too_big(source: str, what: str) -> ManifestError:
    return ManifestError(source, "", f"the manifest {what}; the limit is {MAX_BYTES >> 20} MiB")


def _at(source: str, text: str, index: int, message: str) -> ManifestError:
    line, column = chars.line_col(text, index)
    return ManifestError(source, "", message, line=line, column=column)


def _lookalike_error(source: str, text: str, index: int, *, deliberate_hint: bool = False) -> ManifestError:
    message = chars.describe(text[index])
    if deliberate_hint:
        message += f" (if it is meant, write it as \\u{ord(text[index]):04x} in a double-quoted string)"
    return _at(source, text, index, message)


def _blame(text: str, index: int) -> int | None:
    """The pasted character most likely behind a syntax error at ``index``, if any.

    The error line is searched first, then the few lines above it (a curly
    closing quote lets a string run on, so the parser trips a line or two later).
    """
    index = max(0, min(index, len(text) - 1)) if text else 0
    start, end = chars.line_span(text, index)
    hit = chars.first(text, start, end)
    if hit is not None:
        return hit
    window = start
    for _ in range(_BLAME_LINES):
        if window == 0:
            break
        window = text.rfind("\n", 0, window - 1) + 1
    hits = list(chars.find(text, window, start))
    return hits[-1] if hits else None


# ---------------------------------------------------------------------- JSON

_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:]')


@dataclass
class _Frame:
    is_object: bool
    name: str | None  # the key this container sits under in its parent object
    keys: dict[str, int] = field(default_factory=dict)
    last_key: str | None = None


@dataclass
class _JsonScan:
    duplicate: tuple[int, str, int] | None = None  # (index, key, first index)
    lookalike: int | None = None


def _scan_json(text: str, source: str) -> _JsonScan:
    """One pass over string and bracket tokens: nesting limit, duplicate keys, pasted characters.

    Runs before ``json.loads`` so that a pathological nesting depth never
    reaches the recursive parser. The other findings only count once the text
    has parsed (they would be noise next to a syntax error).
    """
    scan = _JsonScan()
    stack: list[_Frame] = []
    pending: re.Match[str] | None = None  # a string token: key if a ':' follows, else a value

    def value_string(m: re.Match[str]) -> None:
        exempt = bool(stack) and stack[-1].is_object and stack[-1].name == "annotations"
        if not exempt:
            note(m)

    def note(m: re.Match[str]) -> None:
        if scan.lookalike is None:
            hit = chars.first(text, m.start(), m.end())
            if hit is not None:
                scan.lookalike = hit

    for m in _JSON_TOKEN.finditer(text):
        tok = m.group()
        if tok == ":":
            if pending is not None and stack and stack[-1].is_object:
                note(pending)
                frame = stack[-1]
                try:
                    key = json.loads(pending.group())
                except ValueError:
                    key = pending.group()
                if key in frame.keys and scan.duplicate is None:
                    scan.duplicate = (pending.start(), key, frame.keys[key])
                frame.keys.setdefault(key, pending.start())
                frame.last_key = key
            pending = None
            continue
        if pending is not None:
            value_string(pending)
            pending = None
        if tok in ("{", "["):
            parent = stack[-1] if stack else None
            name = parent.last_key if parent is not None and parent.is_object else None
            stack.append(_Frame(tok == "{", name))
            if len(stack) > MAX_DEPTH:
                raise _at(source, text, m.start(), f"nesting deeper than {MAX_DEPTH} levels")
        elif tok in ("}", "]"):
            if stack:
                stack.pop()
        else:
            pending = m
    if pending is not None:
        value_string(pending)
    return scan


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(text: str, source: str) -> list[Document]:
    scan = _scan_json(text, source)
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        hit = _blame(text, e.pos)
        if hit is not None:
            raise _lookalike_error(source, text, hit) from None
        msg = e.msg[:1].lower() + e.msg[1:]
        raise ManifestError(source, "", f"invalid JSON: {msg}", line=e.lineno, column=e.colno) from None
    except (ValueError, RecursionError) as e:
        raise ManifestError(source, "", f"invalid JSON: {e}") from None
    if scan.duplicate is not None:
        index, key, first = scan.duplicate
        first_line, _ = chars.line_col(text, first)
        raise _at(source, text, index, f"duplicate key {describe(key)} (first defined on line {first_line})")
    if scan.lookalike is not None:
        raise _lookalike_error(source, text, scan.lookalike, deliberate_hint=True)
    return [Document(source, data)] if data is not None else []


# ---------------------------------------------------------------------- YAML


def _parse_yaml(text: str, source: str) -> list[Document]:
    roots: list[tuple[yaml.Node, object]] = []
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # checks for unprintable characters right away
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node() promised one
                break
            _check_yaml_tree(node, text, source)
            data = loader.construct_document(node)
            if data is None:
                continue
            if len(roots) == MAX_DOCUMENTS:
                raise _at(
                    source, text, node.start_mark.index, f"more than {MAX_DOCUMENTS} documents in one file"
                )
            roots.append((node, data))
    except yaml.MarkedYAMLError as e:
        raise _yaml_error(e, text, source) from None
    except yaml.reader.ReaderError as e:
        code = e.character if isinstance(e.character, int) else ord(e.character)
        message = f"character U+{code:04X} is not allowed in YAML (control characters must be escaped)"
        raise _at(source, text, e.position, message) from None
    except yaml.YAMLError as e:  # pragma: no cover - every parser error is marked or a reader error
        raise ManifestError(source, "", f"invalid YAML: {e}") from None
    except RecursionError:
        raise ManifestError(source, "", f"nesting deeper than {MAX_DEPTH} levels") from None
    finally:
        if loader is not None:
            loader.dispose()
    multi = len(roots) > 1
    return [Document(source, data, node.start_mark.line + 1 if multi else 0) for node, data in roots]


def _check_yaml_tree(root: yaml.Node, text: str, source: str) -> None:
    """Depth, alias expansion, duplicate keys and pasted characters, before construction."""
    visited = 0
    lookalike: int | None = None
    # (node, depth of enclosing collections, key it sits under, exempt from the character check)
    stack: list[tuple[yaml.Node, int, str | None, bool]] = [(root, 0, None, False)]
    while stack:
        node, depth, name, exempt = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            message = f"more than {MAX_NODES} YAML nodes once aliases are expanded"
            raise _at(source, text, node.start_mark.index, message)
        if isinstance(node, yaml.ScalarNode):
            if not exempt:
                hit = chars.first(text, node.start_mark.index, node.end_mark.index)
                if hit is not None and (lookalike is None or hit < lookalike):
                    lookalike = hit
            continue
        depth += 1
        if depth > MAX_DEPTH:
            raise _at(source, text, node.start_mark.index, f"nesting deeper than {MAX_DEPTH} levels")
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, depth, None, False) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            seen: dict[str, yaml.Node] = {}
            for key, value in node.value:
                key_name = key.value if isinstance(key, yaml.ScalarNode) else None
                if key_name is not None and key.tag != "tag:yaml.org,2002:merge":
                    if key_name in seen:
                        first_line = seen[key_name].start_mark.line + 1
                        message = f"duplicate key {describe(key_name)} (first defined on line {first_line})"
                        raise _at(source, text, key.start_mark.index, message)
                    seen[key_name] = key
                stack.append((key, depth, None, False))
                stack.append((value, depth, key_name, name == "annotations"))
    if lookalike is not None:
        raise _lookalike_error(source, text, lookalike, deliberate_hint=True)


def _yaml_error(e: yaml.MarkedYAMLError, text: str, source: str) -> ManifestError:
    mark = e.problem_mark or e.context_mark
    index = mark.index if mark is not None else len(text)
    if text:
        start, end = chars.line_span(text, min(index, len(text) - 1))
        indent = re.match(r"[ \t]*", text[start:end])
        tab = indent.group().find("\t") if indent else -1
        if 0 <= index < len(text) and text[index] in chars.LOOKALIKES:
            return _lookalike_error(source, text, index)
        if tab >= 0:
            return _at(source, text, start + tab, "tab in indentation — YAML indents with spaces only")
        hit = _blame(text, index)
        if hit is not None:
            return _lookalike_error(source, text, hit)
    problem = e.problem or "invalid YAML"
    if e.context:
        problem = f"{problem} ({e.context})"
    line = mark.line + 1 if mark is not None else 0
    column = mark.column + 1 if mark is not None else 0
    return ManifestError(source, "", f"invalid YAML: {problem}", line=line, column=column)
