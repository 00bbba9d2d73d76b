"""atoll.files: the modes of files at rest, whatever the umask."""

from __future__ import annotations

import os
import pathlib
import stat
from collections.abc import Iterator

import pytest

from atoll import files


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask")
def test_private_dir_is_made_0700_and_an_open_one_tightened(tmp_path: pathlib.Path) -> None:
    made = tmp_path / "a" / "data"
    assert files.private_dir(made) is False
    assert mode(made) == 0o700
    assert files.private_dir(made) is False  # already private: nothing to say

    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    assert files.private_dir(open_dir, tighten=False) is False and mode(open_dir) == 0o755
    assert files.private_dir(open_dir) is True and mode(open_dir) == 0o700

    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(NotADirectoryError):
        files.private_dir(a_file)


@pytest.mark.usefixtures("umask")
def test_private_file_is_made_0600_and_an_open_one_tightened(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "atoll.db"
    assert files.private_file(db) is False
    assert mode(db) == 0o600 and db.read_bytes() == b""

    wal = tmp_path / "atoll.db-wal"
    assert files.private_file(wal, create=False) is False and not wal.exists()
    wal.write_bytes(b"secret")
    wal.chmod(0o644)
    assert files.private_file(wal, create=False) is True
    assert mode(wal) == 0o600 and wal.read_bytes() == b"secret"


def test_a_private_file_is_0600_under_any_umask(tmp_path: pathlib.Path) -> None:
    old = os.umask(0o277)  # would leave the owner read-only
    try:
        files.private_file(tmp_path / "db")
        files.private_dir(tmp_path / "dir")
    finally:
        os.umask(old)
    assert mode(tmp_path / "db") == 0o600 and mode(tmp_path / "dir") == 0o700


def test_public_dirs_are_0755_under_the_daemons_umask(tmp_path: pathlib.Path) -> None:
    existing = tmp_path / "state"
    existing.mkdir(mode=0o700)
    old = os.umask(files.DAEMON_UMASK)
    try:
        files.public_dirs(existing / "pods" / "uid" / "volumes" / "cache")
        files.public_dirs(existing / "pods")  # exists: left alone
    finally:
        os.umask(old)
    assert mode(existing) == 0o700  # not its to change
    for path in ("pods", "pods/uid", "pods/uid/volumes", "pods/uid/volumes/cache"):
        assert mode(existing / path) == 0o755, path


def test_private_files_from_several_threads_leave_the_umask_as_it_was() -> None:
    """The umask is the process's: the coordinator binds unix sockets from its main thread and
    from its heartbeat lane's thread; interleaved set-and-restore once left it 0o177 for good."""
    import threading

    from atoll import tls

    before = os.umask(0o022)
    try:
        barrier = threading.Barrier(8)

        def bind_like() -> None:
            barrier.wait()
            for _ in range(200):
                with tls.private_files():
                    pass

        threads = [threading.Thread(target=bind_like) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)


@pytest.mark.usefixtures("umask")
def test_write_atomic_creates_the_directory_and_sets_the_mode(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "a" / "b" / "ca.crt"
    files.write_atomic(target, b"one", mode=0o644)
    assert target.read_bytes() == b"one" and mode(target) == 0o644
    files.write_atomic(target, b"two", sync_dir=False)
    assert target.read_bytes() == b"two" and mode(target) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["ca.crt"]  # no temporary file left


@pytest.mark.parametrize("planted", ["file", "symlink", "hardlink", "fifo"])
def test_write_atomic_never_writes_through_what_sits_at_its_temporary_name(
    tmp_path: pathlib.Path, planted: str
) -> None:
    import threading

    target = tmp_path / "node.key"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    victim_mode = mode(victim)
    tmp = tmp_path / f".node.key.{files._TOKEN}.{threading.get_ident()}.tmp"
    if planted == "file":
        tmp.write_bytes(b"torn by a crash, and longer than what comes")
        tmp.chmod(0o666)
    elif planted == "symlink":
        tmp.symlink_to(victim)
    elif planted == "hardlink":
        os.link(victim, tmp)
    else:
        os.mkfifo(tmp)  # an open for writing would block the caller for good
    files.write_atomic(target, b"secret")
    assert target.read_bytes() == b"secret" and mode(target) == 0o600
    assert victim.read_bytes() == b"keep" and mode(victim) == victim_mode
    assert victim.stat().st_nlink == 1 and target.stat().st_ino != victim.stat().st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.key", "victim"]


def test_the_temporary_names_token_is_drawn_anew_for_a_forked_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "_TOKEN", files._TOKEN)  # put back afterwards
    before = files._TOKEN
    files._renew_token()  # what os.register_at_fork runs in a child
    assert len(files._TOKEN) == 16 and before != files._TOKEN


def test_write_atomic_syncs_the_directory_only_when_asked(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    files.write_atomic(tmp_path / "a", b"1", sync_dir=False)
    assert len(synced) == 1  # the file's data alone
    files.write_atomic(tmp_path / "b", b"2")
    assert len(synced) == 3  # the data, then the directory
