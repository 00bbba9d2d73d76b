"""What every table and description shares: ages, label lists, column layout, times."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from atoll.v1 import meta_pb2

PROTOCOLS: dict[int, str] = {meta_pb2.PROTOCOL_UDP: "UDP", meta_pb2.PROTOCOL_SCTP: "SCTP"}


def age(ts: Timestamp, now: float | None = None) -> str:
    if not ts.seconds:
        return "<unknown>"
    return duration(max(0, int((now or time.time()) - ts.seconds)))


def duration(seconds: int) -> str:
    """kubectl's short durations: 45s, 5m, 3h, 2d."""
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def labels_text(labels: Mapping[str, str]) -> str:
    items = sorted(labels.items())
    return ",".join(f"{k}={v}" for k, v in items) or "<none>"


def list_text(values: Sequence[str]) -> str:
    return ",".join(values) or "<none>"


def protocol(value: int) -> str:
    return PROTOCOLS.get(value, "TCP")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    ]
    return "\n".join(lines)


def timestamp(ts: Timestamp) -> str:
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC") if ts.seconds else "<none>"


def fields(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """``Name:  value`` lines with the values in one column, as kubectl describe aligns them."""
    width = max((len(key) for key, _ in pairs), default=0) + 3
    return [f"{key + ':':<{width}}{value}".rstrip() for key, value in pairs]
