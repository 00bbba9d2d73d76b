"""The daemons' main log: plain text (as always) or JSON lines, set up once at start.

`--log-format json` writes one JSON object per record and line: ``ts`` (RFC 3339,
UTC), ``level``, ``logger``, ``message`` (the %-formatted message), ``exception``
and ``stack`` when there are any, and the record's context fields as top-level
keys. Context is what a call passes in ``extra=`` (``log.info("bound pod %s",
key, extra={"pod": name, "namespace": ns})``) plus the fields `setup` gives every
record (the agent's ``node``). The audit trail is another stream
(coordinator.auth.audit) and never goes through here.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, Protocol, TextIO

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What every LogRecord has; anything else on a record came from extra= (or a filter) and is context.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",  # Python 3.12+
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            # Cached on the record like logging.Formatter does, so other handlers reuse the text.
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in entry and not key.startswith("_"):
                entry[key] = value
        # ASCII with \u escapes: valid JSON whatever stderr's encoding (a C locale, a lone surrogate
        # from a file name); anything JSON has no type for is written as its str().
        return json.dumps(entry, default=str, separators=(",", ":"))


class _Fields(logging.Filter):
    """Adds fixed context (the agent's node) to records that do not carry the key already."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        super().__init__()
        self._fields = dict(fields)

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self._fields.items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


class ObjectMeta(Protocol):
    """What `pod` reads of an object's metadata (atoll.v1's ObjectMeta has it)."""

    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def uid(self) -> str: ...


def pod(meta: ObjectMeta | None, uid: str = "", **more: Any) -> dict[str, Any]:
    """The ``extra=`` of a record about a pod: ``pod`` (its name), ``namespace`` and ``uid`` as far as
    they are known (the agent may know only the uid of a pod being removed), plus `more` (``node=``)."""
    fields: dict[str, Any] = {}
    if meta is not None:
        fields.update(pod=meta.name, namespace=meta.namespace)
        uid = meta.uid or uid
    if uid:
        fields["uid"] = uid
    fields.update(more)
    return fields


def _rfc3339(created: float) -> str:
    moment = datetime.datetime.fromtimestamp(created, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def handler(
    fmt: str, stream: TextIO | None = None, fields: Mapping[str, Any] | None = None
) -> logging.Handler:
    """A stream handler (stderr by default) writing `fmt` ("text" or "json")."""
    out = logging.StreamHandler(stream if stream is not None else sys.stderr)
    out.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    if fields:
        out.addFilter(_Fields(fields))
    return out


def setup(
    level: str, fmt: str = "text", *, stream: TextIO | None = None, fields: Mapping[str, Any] | None = None
) -> None:
    """Configure the root logger of a daemon, once at start (like logging.basicConfig: a no-op when
    the root logger has handlers already). `fields` go on every record that lacks them."""
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler(fmt, stream, fields)])
