"""ManifestError, and the field paths it names.

A manifest error must let an operator fix the file without reading a stack
trace, so it is always one line: the file, where in it, and what was expected
versus found. Two flavours share the class:

* text problems (syntax, stray characters, limits) carry a line and column:
  ``apache.json:4:13: non-breaking space (U+00A0) - replace it with a plain space``;
* content problems carry the field path in the document's own shape:
  ``bad.json: spec.containers[0].ports[0].containerPort: expected an integer, got "eighty"``.

It subclasses InvalidArgument so that, wherever it surfaces, it maps to
INVALID_ARGUMENT like any other validation failure.
"""

from __future__ import annotations

import datetime
import json

from atoll import errors


class Key(str):
    """A path element that is a map key (a label name), printed as ``[key]``."""

    __slots__ = ()


PathElem = str | int
Path = tuple[PathElem, ...]


def format_path(path: Path) -> str:
    """``("spec", "containers", 0, "image")`` -> ``spec.containers[0].image``."""
    out: list[str] = []
    for elem in path:
        if isinstance(elem, int | Key):
            out.append(f"[{elem}]")
        else:
            out.append(f".{elem}" if out else elem)
    return "".join(out)


class ManifestError(errors.InvalidArgument):
    """A manifest that cannot become API objects. ``str()`` is the one-line report."""

    def __init__(
        self, source: str, field_path: str, message: str, *, line: int = 0, column: int = 0, subject: str = ""
    ) -> None:
        super().__init__(message, field=field_path)
        self.source = source
        self.field_path = field_path
        self.line = line
        self.column = column
        #: The object the problem is in, ``pod "apache"``, once its kind and name are known
        #: (decode sets it); `report()` names it, ``str()`` does not.
        self.subject = subject

    @property
    def location(self) -> str:
        """``FILE``, ``FILE:LINE`` or ``FILE:LINE:COL``."""
        where = self.source
        if self.line:
            where += f":{self.line}"
            if self.column:
                where += f":{self.column}"
        return where

    def __str__(self) -> str:
        if self.field_path:
            return f"{self.location}: {self.field_path}: {self.message}"
        return f"{self.location}: {self.message}"

    def report(self) -> str:
        """The one line for operators: ``str()`` with the object named after the location, if known.

        ``bad.json: pod "apache": spec.containers[0].ports[0].containerPort: expected an integer, got "eighty"``
        """
        where = f"{self.location}: {self.subject}" if self.subject else self.location
        return (
            f"{where}: {self.field_path}: {self.message}" if self.field_path else f"{where}: {self.message}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Keeps the error picklable (multiprocessing, pytest-xdist) despite the custom __init__.
        return (
            _rebuild,
            (self.source, self.field_path, self.message, self.line, self.column),
            {"subject": self.subject},
        )


def _rebuild(source: str, field_path: str, message: str, line: int, column: int) -> ManifestError:
    return ManifestError(source, field_path, message, line=line, column=column)


def describe(value: object) -> str:
    """How a found value is shown in 'expected X, got Y': short, JSON-flavoured."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:56] + '..."'
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, datetime.datetime | datetime.date):
        return f"the timestamp {value.isoformat()}"
    if isinstance(value, bytes):
        return "binary data"
    return f"a {type(value).__name__}"
