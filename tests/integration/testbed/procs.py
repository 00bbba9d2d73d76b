"""Processes of the test bed: handles for what it spawns and a /proc scan for what escaped.

Everything a bed starts runs in its own process group, so one `killpg` stops
a process and its helpers. That is not enough for dockerd: containerd shims
double-fork out of dockerd's group and container processes live in their own
namespaces. Teardown therefore also finds processes by where they live (the
bed's network and mount namespaces, its cgroups, its run directory on their
command line) plus all their descendants, and kills those.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .waiting import Deadline

log = logging.getLogger(__name__)


class Process:
    """A long-lived process started by the bed, leader of its own process group."""

    def __init__(
        self, popen: subprocess.Popen[bytes], argv: Sequence[str], log_path: Path, label: str
    ) -> None:
        self.popen = popen
        self.argv = list(argv)
        self.log_path = log_path
        self.label = label

    def __repr__(self) -> str:
        state = "alive" if self.alive else f"exited {self.returncode}"
        return f"<Process {self.label} pid={self.pid} {state}>"

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        """Whether the leader is still running (also reaps it once it exits)."""
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Send `sig` to the whole process group (a no-op once the group is empty)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)
        self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the leader to exit and return its status; `subprocess.TimeoutExpired` on timeout."""
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 5.0, sig: int = signal.SIGTERM) -> int | None:
        """Send `sig` to the group, give it `timeout` seconds, then SIGKILL the whole tree.

        The tree is the process group plus all descendants, including those
        that started a session of their own. Returns (with the exit status)
        only once all of them have left the process table (see `wait_gone`),
        so a restart cannot trip over its predecessor.
        """
        members = family(self.pid)
        if self.alive:
            self.kill(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not exit %.0fs after signal %d, killing it", self, timeout, sig)
        self.kill(signal.SIGKILL)
        for member in members:
            if member.pid != self.pid and exists(member):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        lingering = wait_gone(m for m in members if m.pid != self.pid)
        if lingering:
            log.warning("%s: processes of its tree still in the process table: %s", self, lingering)
        return self.popen.poll()

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.read_log().splitlines()[-lines:])


def start_process(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    label: str | None = None,
) -> Process:
    """Start `argv` in a new session (hence process group) with stdout+stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    proc = Process(popen, argv, log_path, label or os.path.basename(argv[0]))
    log.debug("started %s: %s (log %s)", proc, " ".join(argv), log_path)
    return proc


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    cmdline: str
    starttime: int


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _ns_inode(pid: int, kind: str) -> int | None:
    try:
        link = os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None
    # "net:[4026532315]"
    return int(link[link.index("[") + 1 : -1])


@dataclass(frozen=True)
class _Stat:
    state: str
    ppid: int
    pgrp: int
    starttime: int


def _stat(pid: int) -> _Stat | None:
    """Fields of /proc/PID/stat (whose comm field may contain spaces and parentheses)."""
    raw = _read(f"/proc/{pid}/stat")
    if not raw:
        return None
    rest = raw[raw.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); starttime is field 22.
    return _Stat(state=rest[0], ppid=int(rest[1]), pgrp=int(rest[2]), starttime=int(rest[19]))


def exists(info: ProcInfo) -> bool:
    """Whether this very process (same start time) is still in the process table, zombies included."""
    st = _stat(info.pid)
    return st is not None and st.starttime == info.starttime


def wait_gone(procs: Iterable[ProcInfo], timeout: float = 10.0) -> list[ProcInfo]:
    """Wait until `procs` have left the process table entirely; returns those still there.

    Killed orphans stay zombies until their new parent (PID 1) reaps them,
    and a zombie still "exists" for kill(pid, 0): a dockerd restarted too
    early sees its old containerd as alive and hangs connecting to it.
    """
    pending = [p for p in procs if exists(p)]
    deadline = Deadline(timeout)
    while pending and not deadline.expired():
        deadline.sleep(0.05)
        pending = [p for p in pending if exists(p)]
    return pending


def family(pid: int) -> list[ProcInfo]:
    """Live members of process group `pid` plus every descendant of `pid` (which may have left the group)."""
    table: dict[int, tuple[_Stat, str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st.state not in ("Z", "X"):
                table[int(entry)] = (st, _read(f"/proc/{entry}/cmdline").replace("\0", " ").strip())
    chosen = {p for p, (st, _) in table.items() if st.pgrp == pid or p == pid}
    todo = list(chosen)
    while todo:
        parent = todo.pop()
        for p, (st, _) in table.items():
            if st.ppid == parent and p not in chosen:
                chosen.add(p)
                todo.append(p)
    return [ProcInfo(p, table[p][0].ppid, table[p][1], table[p][0].starttime) for p in sorted(chosen)]


def _ancestors() -> set[int]:
    """This process and its ancestors, which must never be killed by a scan."""
    out = set()
    pid = os.getpid()
    while pid > 1:
        out.add(pid)
        st = _stat(pid)
        if st is None:
            break
        pid = st.ppid
    out.add(1)
    return out


@dataclass(frozen=True)
class ProcessSelector:
    """Which processes belong to (part of) a bed: any criterion matches, descendants included.

    `cgroup_marker` is a substring of a line of /proc/PID/cgroup (e.g.
    "/atl-abc123-"); `path_marker` a substring of the command line (e.g. the
    run directory). Descendants matter because a container's init lives in
    namespaces of its own; only its ancestry (the shim) ties it to a host.
    """

    net_inodes: frozenset[int] = frozenset()
    mnt_inodes: frozenset[int] = frozenset()
    cgroup_marker: str | None = None
    path_marker: str | None = None

    def _matches(self, pid: int, cmdline: str) -> bool:
        return bool(
            (self.net_inodes and _ns_inode(pid, "net") in self.net_inodes)
            or (self.mnt_inodes and _ns_inode(pid, "mnt") in self.mnt_inodes)
            or (self.cgroup_marker and self.cgroup_marker in _read(f"/proc/{pid}/cgroup"))
            or (self.path_marker and self.path_marker in cmdline)
        )

    def find(self) -> dict[int, ProcInfo]:
        """Live (non-zombie) matching processes and their descendants, never this process or its ancestors."""
        spared = _ancestors()
        procs: dict[int, tuple[_Stat, str]] = {}
        matched: set[int] = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            st = _stat(pid)
            if st is None or st.state in ("Z", "X"):
                continue
            cmdline = _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()
            if not cmdline:
                continue  # kernel thread, or exiting
            procs[pid] = (st, cmdline)
            if pid not in spared and self._matches(pid, cmdline):
                matched.add(pid)
        children: dict[int, list[int]] = {}
        for pid, (st, _) in procs.items():
            children.setdefault(st.ppid, []).append(pid)
        todo = list(matched)
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in matched and child not in spared:
                    matched.add(child)
                    todo.append(child)
        return {
            pid: ProcInfo(pid, procs[pid][0].ppid, procs[pid][1], procs[pid][0].starttime)
            for pid in sorted(matched)
        }

    def kill_all(self, timeout: float = 10.0) -> list[ProcInfo]:
        """SIGKILL everything `find()` returns until nothing is left; returns what was killed.

        Everything is signalled in one pass so that a shim dying first cannot
        orphan its container onto PID 1 before the container is signalled too.
        """
        killed: dict[int, ProcInfo] = {}
        deadline = Deadline(timeout)
        while True:
            found = self.find()
            if not found:
                return list(killed.values())
            if deadline.expired():
                survivors = "; ".join(f"{p.pid} {p.cmdline}" for p in found.values())
                raise RuntimeError(f"processes survived SIGKILL: {survivors}")
            for info in found.values():
                killed.setdefault(info.pid, info)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(info.pid, signal.SIGKILL)
            deadline.sleep(0.05)
