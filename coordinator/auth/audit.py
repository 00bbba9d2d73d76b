"""The audit trail: one JSON line per denied call and per accepted call that changes state.

Lines go to the `atoll.audit` logger (INFO) and, with `--audit-log PATH`, to
that file (JSON lines, mode 0600, appended and flushed line by line). A line
says who (user, role, how authenticated, peer address), what (method, verb,
resource, namespace, name), when (UTC) and the result (a gRPC status name and,
for refusals, the reason). Request bodies and credentials are never written:
a token appears as its id only.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import pathlib
import threading
from typing import IO, Any

log = logging.getLogger("atoll.audit")


class AuditLog:
    def __init__(self, path: str = "") -> None:
        self._file: IO[str] | None = None
        self._lock = threading.Lock()
        if path:
            target = pathlib.Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._file = os.fdopen(fd, "a", encoding="utf-8")

    def record(self, **fields: Any) -> None:
        entry = {"time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"), **fields}
        line = json.dumps(entry, sort_keys=False, separators=(",", ":"))
        log.info("%s", line)
        if self._file is not None:
            with self._lock:
                self._file.write(line + "\n")
                self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
