"""Files at rest: durable small files (whole or not at all after a crash), and the modes that keep
the daemons' state private whatever the umask (directories 0700, files 0600)."""

from __future__ import annotations

import os
import pathlib
import secrets
import stat
import threading


def _new_token() -> str:
    return secrets.token_hex(8)


# Part of every temporary name: drawn once per process (again in a forked child), so no write
# draws a random name of its own, and nobody can guess the name to plant something there.
_TOKEN = _new_token()


def _renew_token() -> None:
    global _TOKEN
    _TOKEN = _new_token()


os.register_at_fork(after_in_child=_renew_token)


def _open_new(tmp: str) -> int:
    """Create `tmp` afresh (0600, never through a link); whatever sits at that name is removed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(tmp, flags, PRIVATE_FILE)
    except FileExistsError:  # a leftover, or something planted: unlinked, never opened
        os.unlink(tmp)
        return os.open(tmp, flags, PRIVATE_FILE)


def write_atomic(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, sync_dir: bool = True
) -> None:
    """Replace `path` with `data`: written to a temporary file beside it, fsynced, then renamed.

    A crash leaves either the old content or the new, never a torn file. With
    `sync_dir` the directory is fsynced too, so the rename itself survives a
    power cut; without it (state that the agent can rebuild, written per pod
    sync) a power cut may bring back the previous version.

    The temporary file is always a new inode (O_EXCL; a file, link or FIFO
    found at its name is unlinked first), named by a token drawn once per
    process and the thread: per write this spares tempfile.mkstemp's random
    name and directory lookups, a tenth of the agent's time per pod in
    bench/hollow.py. The parent directory is created only when missing. Paths
    are handled as strings: pathlib's objects cost more than the write itself
    (bench/hollow.py's fleet, where every pod sync may write its record).
    """
    target = os.fspath(path)
    parent, name = os.path.split(target)
    tmp = os.path.join(parent, f".{name}.{_TOKEN}.{threading.get_ident()}.tmp")
    try:
        fd = _open_new(tmp)
    except FileNotFoundError:
        os.makedirs(parent or ".", exist_ok=True)
        fd = _open_new(tmp)
    try:
        try:
            os.fchmod(fd, mode)  # exactly `mode`, whatever the umask took away
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if sync_dir:
        dir_fd = os.open(parent or ".", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# Both daemons set this at start: what they create is their own unless they say otherwise.
DAEMON_UMASK = 0o077


def private_dir(path: pathlib.Path, *, tighten: bool = True) -> bool:
    """Make `path` a directory only its owner may enter, whatever the umask: created 0700 when
    missing (with any missing parents), and with `tighten`, an existing one this process owns that
    others may enter is chmod 0700. True when an existing directory was tightened (say so in the log).
    """
    try:
        path.mkdir(parents=True, mode=PRIVATE_DIR)
    except FileExistsError:
        pass
    else:
        os.chmod(path, PRIVATE_DIR)  # mkdir's mode went through the umask
        return False
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"{path} is not a directory")
    if tighten and st.st_mode & 0o077 and st.st_uid == os.geteuid():
        os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
        return True
    return False


def private_file(path: pathlib.Path, *, create: bool = True) -> bool:
    """Make `path` readable and writable by its owner only: created empty and 0600 when missing
    (unless `create` is false), and an existing one this process owns loses its group and other
    bits. True when an existing file was tightened. SQLite gives a database's -wal and -shm files
    the database's own mode, so creating atoll.db this way first keeps all three private."""
    if create:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
        except FileExistsError:
            pass
        else:
            try:
                os.fchmod(fd, PRIVATE_FILE)  # the umask may have taken owner bits away too
            finally:
                os.close(fd)
            return False
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if st.st_mode & 0o077 and st.st_uid == os.geteuid():
        os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
        return True
    return False


def public_dirs(path: pathlib.Path, mode: int = 0o755) -> None:
    """Create `path` and any missing parents with exactly `mode` whatever the umask (the daemons run
    with umask 077): for directories that other users or containers' processes must reach."""
    missing: list[pathlib.Path] = []
    at = path
    while not at.exists():
        missing.append(at)
        at = at.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=mode)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs to keep
        os.chmod(directory, mode)
