"""Durable small files: state that must survive a crash whole or not at all."""

from __future__ import annotations

import os
import pathlib
import tempfile


def write_atomic(path: pathlib.Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace `path` with `data`: written to a temporary file beside it, fsynced, then renamed.

    A crash leaves either the old content or the new, never a torn file; the
    directory is fsynced too, so the rename itself survives a power cut.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
