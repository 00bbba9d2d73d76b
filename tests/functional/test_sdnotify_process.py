"""`coordinator serve` as systemd starts it: $NOTIFY_SOCKET and $WATCHDOG_USEC read from its environment.

The test plays systemd's part: it binds an abstract AF_UNIX datagram socket,
starts the process with NOTIFY_SOCKET=@name and a short watchdog, and reads
what the daemon says: READY=1 only once the API accepts connections, the
watchdog petted at about half the period, STOPPING=1 on SIGTERM, exit 0.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import socket
import sys
import time
import uuid

WATCHDOG_USEC = 400_000  # pets every 0.2 s
roles = ("leader", "follower")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


async def test_coordinator_serve_notifies_ready_watchdog_and_stopping(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "coordinator.yaml"  # not the host's /etc/atoll/coordinator.yaml
    empty.write_text("{}\n")
    port = free_port()
    name = f"atoll-test-notify-{uuid.uuid4().hex}"
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name)
        systemd.setblocking(False)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "coordinator.cli.main",
            "serve",
            f"--listen=127.0.0.1:{port}",
            "--token-listen=127.0.0.1:0",
            f"--data-dir={tmp_path / 'data'}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={
                **os.environ,
                "ATOLL_COORDINATOR_CONFIG": str(empty),
                "NOTIFY_SOCKET": "@" + name,
                "WATCHDOG_USEC": str(WATCHDOG_USEC),
            },
        )
        messages: list[list[str]] = []  # one datagram each, split into its fields

        async def receive_until(field: str, count: int = 1, timeout: float = 30) -> None:
            deadline = time.monotonic() + timeout
            while sum(field in fields for fields in messages) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{field} not {count} times within {timeout}s: {messages}"
                data = await asyncio.wait_for(loop.sock_recv(systemd, 4096), left)
                messages.append(data.decode().split("\n"))

        try:
            await receive_until("READY=1")
            # READY means serving: the API port accepts at once, and the STATUS line says so.
            assert accepts(port)
            *before, ready = messages
            assert ["STATUS=opening the store and starting"] in before, before
            assert ready[0] == "READY=1", ready
            # The role as of that instant: the sole coordinator's leadership starts in a task of its own.
            assert ready[1] in {f"STATUS=serving on 127.0.0.1:{port}; {role}; 0 nodes" for role in roles}, (
                ready
            )

            # Pets at half of WATCHDOG_USEC (0.2 s): five more take about a second, not three.
            started = time.monotonic()
            await receive_until("WATCHDOG=1", count=sum("WATCHDOG=1" in f for f in messages) + 5)
            assert time.monotonic() - started < 3, "the watchdog is petted too slowly"

            proc.send_signal(signal.SIGTERM)
            await receive_until("STOPPING=1")
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0
