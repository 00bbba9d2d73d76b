"""Daemons of the test control plane: each in its own process group, all stopped together.

Every long-running process (mariadbd, epmd, the RabbitMQ node, each uwsgi and
nova service) is started in a new session, so stopping it by its process
group also ends what it forked (uwsgi workers, Erlang port programs). The
groups are written to ``<run dir>/pgids`` as they start; a later run that
finds a run dir whose owner is dead (a test run killed with -9) ends those
groups before anything else, so leftovers never pile up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

log = logging.getLogger("openstack.procs")


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(check: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Daemons:
    """The set of process groups of one control plane."""

    def __init__(self, run_dir: pathlib.Path) -> None:
        self.run_dir = run_dir
        self.logs = run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        (run_dir / "owner").write_text(str(os.getpid()))

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            cwd=self.run_dir,
        )
        out.close()
        self.procs[name] = proc
        with open(self.run_dir / "pgids", "a") as f:
            f.write(f"{proc.pid} {name}\n")

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        if dead:
            tails = "\n".join(f"--- {n} (exit {rc}):\n{self.tail(n)}" for n, rc in dead.items())
            raise RuntimeError(f"control plane process(es) died: {', '.join(dead)}\n{tails}")

    def tail(self, name: str, lines: int = 25) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM every group, then SIGKILL what is left after `timeout`."""
        for proc in self.procs.values():
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        for proc in self.procs.values():
            _signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(2)
        self.procs.clear()
        (self.run_dir / "pgids").unlink(missing_ok=True)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(base: pathlib.Path) -> None:
    """End the process groups of earlier runs whose owning test process is gone."""
    if not base.exists():
        return
    for run in base.glob("run-*"):
        owner = run / "owner"
        try:
            pid = int(owner.read_text())
        except (OSError, ValueError):
            continue
        if _alive(pid):
            continue
        pgids = run / "pgids"
        if pgids.exists():
            for line in pgids.read_text().splitlines():
                pgid = int(line.split()[0])
                log.warning("ending stale control plane process group %s (%s)", pgid, line.split()[1])
                _signal_group(pgid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(run)], check=False)


def run(
    argv: Sequence[str], log_path: pathlib.Path, env: Mapping[str, str] | None = None, timeout: float = 300
) -> None:
    """Run a one-shot command (db sync, ...); its output goes to `log_path`, shown on failure."""
    with open(log_path, "ab") as out:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            timeout=timeout,
            check=False,
        )
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(argv[:3])} failed with exit {proc.returncode}:\n{tail}")
