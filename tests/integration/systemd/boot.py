"""A real systemd booted as PID 1 for the packaging tests: the units run under the manager they ship for.

Debian's systemd (252 here) boots as PID 1 of a private PID, mount and
cgroup namespace, inside a test-bed host's network namespace, on an overlay
of the machine's own root: whatever the tests install (`rpm -i`) or write
lands in a tmpfs upper layer and vanishes with it. Only a small target of
our own starts, so none of the machine's installed services run.

The cgroup tree is systemd's own: before the namespaces are made, the
launcher moves itself into a fresh cgroup of the v2 hierarchy
(`atoll-systemd-<id>`) and unshares a cgroup namespace rooted there; systemd
then mounts, remounts and writes only that subtree, through a cgroup2 mount
of its own. Booting systemd with the machine's cgroup mounts once left the
machine-wide /sys/fs/cgroup tmpfs read-only (a superblock flag, shared by
every mount namespace), and every later dockerd failed to start; `shutdown`
checks that flag and restores it if it changed anyway.

Teardown is SIGKILL to PID 1, which ends every process of the PID namespace
(and with them the mount namespace), then rmdir of the cgroup subtree.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.integration.testbed import Host
from tests.integration.testbed.mounts import read_mountinfo
from tests.integration.testbed.procs import Process, start_process
from tests.integration.testbed.waiting import wait_for

log = logging.getLogger(__name__)

TARGET = "atoll-test.target"
CGROUP_ROOT = "/sys/fs/cgroup"

_TARGET_UNIT = """\
[Unit]
Description=Atoll test target: what the packaging tests start, nothing else
"""


def unified_hierarchy() -> Path:
    """Where the cgroup v2 hierarchy is mounted (v2-only: /sys/fs/cgroup; hybrid: .../unified)."""
    for mount in read_mountinfo():
        if mount.fstype == "cgroup2":
            return Path(mount.mount_point)
    raise RuntimeError("no cgroup2 hierarchy is mounted: systemd needs one to boot in a namespace")


def cgroup_root_writable() -> bool:
    mount = next((m for m in reversed(read_mountinfo()) if m.mount_point == CGROUP_ROOT), None)
    return mount is None or ("ro" not in mount.super_options and "ro" not in mount.mount_options)


class BootedSystemd:
    """systemd as PID 1 over an overlay of /, in `host`'s network namespace.

    `binds` are directories of the machine bound at the same path inside (the
    host's dockerd socket, the RPMs to install). Commands run inside through
    `run` (nsenter into every namespace and the root of PID 1).
    """

    def __init__(self, host: Host, workdir: Path, binds: Sequence[Path] = ()) -> None:
        self.host = host
        self.workdir = workdir
        self.binds = [Path(b) for b in binds]
        self.cgroup = unified_hierarchy() / f"atoll-systemd-{host.run_id}"
        self.launcher: Process | None = None
        self.pid = 0  # PID 1 of the namespace, as the machine sees it

    # -- boot -----------------------------------------------------------------------

    def _inner_script(self) -> str:
        w = shlex.quote(str(self.workdir / "layers"))
        lines = [
            "set -eu",
            f"W={w}",
            "mkdir -p $W",
            # The upper layer on a tmpfs of this namespace: never inside the lower one (/).
            "mount -t tmpfs -o mode=0755 atoll-systemd $W",
            "mkdir -p $W/upper $W/work $W/root",
            "mount -t overlay overlay -o lowerdir=/,upperdir=$W/upper,workdir=$W/work $W/root",
            "R=$W/root",
            "mount -t proc proc $R/proc",
            # sysfs shows the network namespace of whoever mounts it: the host's.
            "mount -t sysfs sysfs $R/sys",
            # systemd's own cgroup tree: the cgroup namespace's root, our subtree.
            "mount -t cgroup2 -o nsdelegate cgroup2 $R/sys/fs/cgroup",
            "mount --rbind /dev $R/dev",
            "mount -t tmpfs -o mode=0755 tmpfs $R/run",
            "mount -t tmpfs -o mode=1777 tmpfs $R/tmp",
        ]
        for path in self.binds:
            q = shlex.quote(str(path))
            lines += [f"mkdir -p $R{q}", f"mount --bind {q} $R{q}"]
        lines += [
            "mkdir -p $R/etc/systemd/system",
            f"cat > $R/etc/systemd/system/{TARGET} <<'EOF'\n{_TARGET_UNIT}EOF",
            # No console to ask on, no getty to spawn.
            "ln -sf /dev/null $R/etc/systemd/system/console-getty.service",
            "cd $R",
            "mkdir -p oldroot",
            "pivot_root . oldroot",
            "umount -l /oldroot",
            "rmdir /oldroot",
            # container= makes systemd behave as a container's init (no kernel
            # setup of its own); env -i so nothing of the test leaks in.
            "exec env -i container=atoll-test PATH=/usr/sbin:/usr/bin:/sbin:/bin "
            f"/lib/systemd/systemd --unit={TARGET} --show-status=no",
        ]
        return "\n".join(lines) + "\n"

    def boot(self, timeout: float = 60.0) -> BootedSystemd:
        self.workdir.mkdir(parents=True, exist_ok=True)
        inner = self.workdir / "boot.sh"
        inner.write_text(self._inner_script())
        self.cgroup.mkdir()
        # Into our cgroup first, so the cgroup namespace made next is rooted there.
        outer = (
            f"echo $$ > {shlex.quote(str(self.cgroup / 'cgroup.procs'))} && exec "
            f"nsenter --net={shlex.quote(self.host.netns_path)} -- "
            f"unshare --mount --pid --fork --cgroup --propagation private --kill-child "
            f"sh {shlex.quote(str(inner))}"
        )
        self.launcher = start_process(
            ["sh", "-c", outer], log_path=self.workdir / "systemd.log", label="systemd"
        )
        self.pid = wait_for(
            self._find_pid1, timeout=timeout, interval=0.05, message="systemd to become PID 1"
        )
        wait_for(
            lambda: (
                self.run(["systemctl", "is-system-running"], timeout=10).stdout.strip()
                in ("running", "degraded")
            ),
            timeout=timeout,
            interval=0.2,
            message="systemd to finish booting",
        )
        return self

    def _find_pid1(self) -> int | None:
        launcher = self.launcher
        assert launcher is not None
        if not launcher.alive:
            raise RuntimeError(f"systemd launcher exited:\n{launcher.log_tail()}")
        for pid_text in (self.cgroup / "cgroup.procs").read_text().split():
            try:
                status = Path(f"/proc/{pid_text}/status").read_text()
                comm = Path(f"/proc/{pid_text}/comm").read_text().strip()
            except OSError:
                continue
            nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
            if comm == "systemd" and nspid[-1:] == ["1"]:
                return int(pid_text)
        # systemd moves itself into init.scope.
        scope = self.cgroup / "init.scope" / "cgroup.procs"
        if scope.exists():
            pids = scope.read_text().split()
            return int(pids[0]) if pids else None
        return None

    # -- inside ---------------------------------------------------------------------

    def enter_argv(self) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "-p", "-n", "-C", "-r", "-w", "--"]

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        check: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside (as root, in the booted system's namespaces and root)."""
        base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "SYSTEMD_PAGER": ""}
        res = subprocess.run(
            [*self.enter_argv(), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**base, **(env or {})},
        )
        if check and res.returncode != 0:
            raise AssertionError(f"{shlex.join(argv)} exited {res.returncode}:\n{res.stdout}{res.stderr}")
        return res

    def systemctl(self, *args: str, timeout: float = 120.0, check: bool = True) -> str:
        return self.run(["systemctl", "--no-pager", *args], timeout=timeout, check=check).stdout

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def path(self, inside: str) -> Path:
        """The machine's path to a file inside (through PID 1's root)."""
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")

    def write(self, inside: str, text: str, mode: int = 0o644) -> None:
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def journal(self, unit: str, lines: int = 80) -> str:
        res = self.run(["journalctl", "--no-pager", "-o", "short-monotonic", "-n", str(lines), "-u", unit])
        return res.stdout + res.stderr

    # -- teardown -------------------------------------------------------------------

    def shutdown(self) -> list[str]:
        """Kill the whole namespace, remove its cgroups; returns problems (empty when clean)."""
        problems: list[str] = []
        if self.pid:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass
        if self.launcher is not None:
            self.launcher.stop(10)
        deadline = time.monotonic() + 20
        while self.cgroup.exists():
            for dirpath, _dirs, _files in os.walk(self.cgroup, topdown=False):
                try:
                    os.rmdir(dirpath)
                except FileNotFoundError:
                    pass
                except OSError:
                    if time.monotonic() > deadline:
                        problems.append(f"cgroup {dirpath} could not be removed")
            if problems or not self.cgroup.exists():
                break
            time.sleep(0.1)
        if not cgroup_root_writable():
            problems.append(f"{CGROUP_ROOT} was left read-only; remounted read-write")
            subprocess.run(["mount", "-o", "remount,rw", CGROUP_ROOT], check=False)
        return problems
