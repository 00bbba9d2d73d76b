"""Files at rest: the coordinator's data dir and the agent's state dir are their own, whatever the umask.

The daemons also set umask 077 at start (test_daemon_logs runs `coordinator serve`); these tests keep
the usual 022, so they prove the explicit modes: a store readable by others once showed a registry
password to every local user in atoll.db-wal.
"""

from __future__ import annotations

import logging
import os
import pathlib
import sqlite3
import stat
from collections.abc import Iterator

import pytest

from atoll import kinds
from atoll.v1 import pod_pb2
from tests.functional.harness import Cluster, eventually

POD = kinds.by_name("Pod")


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def open_to_others(root: pathlib.Path, *, public: tuple[str, ...] = ()) -> list[str]:
    """Paths under `root` (itself included) that a user other than the owner can read, bar
    certificates (public by nature, under a 0700 pki/) and the subtrees in `public`."""
    found = []
    for path in [root, *root.rglob("*")]:
        relative = path.relative_to(root).as_posix()
        if path.suffix == ".crt" or any(relative.startswith(p) for p in public):
            continue
        if mode(path) & 0o077:
            found.append(f"{relative} {oct(mode(path))}")
    return found


def checkpoint(db: pathlib.Path) -> None:
    """A reader's passive checkpoint: the WAL and its -shm stay (the coordinator holds them open)."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()


@pytest.mark.usefixtures("umask_022")
async def test_the_coordinators_store_and_the_agents_state_are_private(tmp_path: pathlib.Path) -> None:
    cluster = await Cluster(tmp_path).start()
    try:
        assert cluster.client is not None
        node = await cluster.add_node("n1", images=("busybox",))
        pod = pod_pb2.Pod()
        pod.metadata.name = "cache"
        pod.spec.volumes.add(name="scratch", empty_dir=pod_pb2.EmptyDirVolumeSource())
        pod.spec.containers.add(name="main", image="busybox", command=["sleep", "3600"])
        await cluster.client.create(pod)

        async def running() -> bool:
            got = await cluster.client.get(POD, "default", "cache")  # type: ignore[union-attr]
            return isinstance(got, pod_pb2.Pod) and got.status.phase == pod_pb2.POD_PHASE_RUNNING

        await eventually(running, what="pod cache running")
        data = cluster.coordinator.cfg.data_path
        checkpoint(data / "atoll.db")

        names = {p.name for p in data.iterdir()}
        assert {"atoll.db", "atoll.db-wal", "atoll.db-shm", "admin.conf", "pki"} <= names
        assert mode(data) == 0o700 and mode(data / "pki") == 0o700
        for name in ("atoll.db", "atoll.db-wal", "atoll.db-shm", "admin.conf", "pki/ca.key"):
            assert mode(data / name) == 0o600, name
        assert open_to_others(data) == []

        state = node.config.state_path
        assert mode(state) == 0o700
        assert {"pods", "pki", "assignment.pb"} <= {p.name for p in state.iterdir()}
        # Volumes are bind-mounted into containers, whose users need them as before: 0755.
        (volume,) = state.glob("pods/*/volumes/scratch")
        assert mode(volume) == 0o755
        regular = [p for p in state.rglob("*") if p.is_file() and p.suffix != ".crt"]
        assert regular and all(mode(p) == 0o600 for p in regular), [(str(p), oct(mode(p))) for p in regular]
    finally:
        await cluster.stop()


@pytest.mark.usefixtures("umask_022")
async def test_an_open_data_dir_and_store_left_by_an_older_version_are_tightened(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "coordinator"
    data.mkdir(mode=0o755)
    # What an older coordinator left under umask 022: a store and its WAL readable by all.
    conn = sqlite3.connect(data / "atoll.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE leftover (x)")
    conn.close()
    (data / "atoll.db-wal").write_bytes(b"")
    for path in (data / "atoll.db", data / "atoll.db-wal"):
        path.chmod(0o644)

    with caplog.at_level(logging.WARNING):
        cluster = await Cluster(tmp_path, insecure=True).start()
        await cluster.stop()
    assert mode(data) == 0o700 and mode(data / "atoll.db") == 0o600
    assert open_to_others(data) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"data dir {data} was open to other users: now mode 0700" in warnings
    assert f"{data / 'atoll.db'} was readable by others: now mode 0600" in warnings
