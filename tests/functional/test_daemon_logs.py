"""`coordinator serve --log-format json` as a process: every stderr line a JSON object with its context,
and (the umask it sets at start) a data dir nobody else can read even when started under umask 022."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import stat
import sys
from typing import Any

from atoll.v1 import pod_pb2
from coordinator.client import config as clientconfig
from coordinator.client.api import Client
from tests.functional.harness import eventually


async def test_coordinator_serve_writes_json_lines_and_private_files(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "coordinator"
    empty = tmp_path / "coordinator.yaml"  # not the host's /etc/atoll/coordinator.yaml
    empty.write_text("{}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coordinator.cli.main",
        "serve",
        "--listen=127.0.0.1:0",
        "--token-listen=127.0.0.1:0",
        f"--data-dir={data}",
        "--scheduler-retry-interval=0.2",
        "--log-format=json",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        umask=0o022,
        env={**os.environ, "ATOLL_COORDINATOR_CONFIG": str(empty)},
    )
    assert proc.stderr is not None
    lines: list[str] = []

    async def read() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            lines.append(raw.decode())

    reader = asyncio.create_task(read())
    try:
        admin_conf = data / "admin.conf"

        async def serving() -> bool:
            return admin_conf.exists()

        await eventually(serving, timeout=30, what="admin.conf")
        admin = clientconfig.parse(admin_conf.read_text(), "admin.conf")
        pod = pod_pb2.Pod()
        pod.metadata.name = "nowhere"  # no node: the scheduler logs it unschedulable, with its context
        pod.spec.containers.add(name="main", image="busybox")
        async with Client(config=admin) as client:
            created = await client.create(pod)

        async def unschedulable() -> bool:
            return any('"pod":"nowhere"' in line for line in lines)

        await eventually(unschedulable, timeout=15, what="the scheduler's line about the pod")
        # The serving process runs its collector by the coordinator's policy, said once at start.
        gc_lines = [line for line in lines if "garbage collection: thresholds" in line]
        assert len(gc_lines) == 1 and "(20000, 20, 20)" in gc_lines[0]

        # While it runs (the WAL and its index exist): nothing in the data dir is for other users
        # (certificates, public by nature, are 0644 in the 0700 pki/).
        assert {"atoll.db", "atoll.db-wal", "atoll.db-shm"} <= {p.name for p in data.iterdir()}
        for path in [data, *(p for p in data.rglob("*") if p.suffix != ".crt")]:
            bits = stat.S_IMODE(path.stat().st_mode)
            assert bits & 0o077 == 0, f"{path} is {oct(bits)}"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
        await reader

    assert code == 0, "".join(lines)
    entries: list[dict[str, Any]] = []
    for line in lines:
        assert line.endswith("\n")
        entry = json.loads(line)  # every line, not just most
        assert isinstance(entry, dict), line
        assert {"ts", "level", "logger", "message"} <= set(entry), line
        assert entry["ts"].endswith("Z")
        entries.append(entry)
    messages = [e["message"] for e in entries]
    assert any(m.startswith("coordinator serving on 127.0.0.1:0 (port ") for m in messages), messages
    (about,) = [e for e in entries if e.get("pod") == "nowhere"][:1]
    assert about["logger"] == "coordinator.scheduler.scheduler"
    assert about["namespace"] == "default" and about["uid"] == created.metadata.uid
    assert about["message"].startswith("pod default/nowhere unschedulable: ")
