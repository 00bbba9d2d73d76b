"""Mount-table helpers: read mountinfo, mirror the cgroup mounts into a host, unmount what the bed left.

Each simulated host gets a private mount namespace in which /sys is
remounted (so it shows the host's network namespace, as `ip netns exec`
does). A fresh sysfs has no cgroup mounts under it, and dockerd refuses to
start without them, so the host's setup script mounts them again exactly as
the root namespace has them (read from /proc/self/mountinfo, so cgroup v1,
hybrid and v2-only machines all work).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = "/sys/fs/cgroup"

#: Per-mount flags worth carrying over when mounting again; the rest (relatime,
#: shared:N ...) are defaults or describe propagation.
_KEPT_FLAGS = {"ro", "nosuid", "nodev", "noexec"}


@dataclass(frozen=True)
class Mount:
    mount_id: int
    parent_id: int
    mount_point: str
    mount_options: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]

    def remount_options(self) -> str:
        """`mount -o` value that recreates this mount elsewhere."""
        flags = [opt for opt in self.mount_options if opt in _KEPT_FLAGS]
        extra = [opt for opt in self.super_options if opt not in ("rw", "ro")]
        if self.fstype == "cgroup" and not any(not o.startswith("name=") for o in extra):
            # A named v1 hierarchy without controllers, e.g. name=systemd.
            extra = ["none", *extra]
        return ",".join(flags + extra) or "defaults"


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[Mount]:
    mounts = []
    with open(path) as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            mounts.append(
                Mount(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    mount_point=_unescape(fields[4]),
                    mount_options=tuple(fields[5].split(",")),
                    fstype=fields[sep + 1],
                    source=_unescape(fields[sep + 2]),
                    super_options=tuple(fields[sep + 3].split(",")) if len(fields) > sep + 3 else (),
                )
            )
    return mounts


def mounts_under(path: Path | str) -> list[Mount]:
    """Mounts of this mount namespace at or below `path`, deepest first."""
    prefix = str(path).rstrip("/")
    found = [m for m in read_mountinfo() if m.mount_point == prefix or m.mount_point.startswith(prefix + "/")]
    return sorted(found, key=lambda m: m.mount_point.count("/"), reverse=True)


def unmount_under(path: Path | str) -> list[str]:
    """Unmount everything at or below `path` (deepest first, lazily if busy); returns what remains."""
    for _ in range(3):
        remaining = mounts_under(path)
        if not remaining:
            return []
        for mount in remaining:
            res = subprocess.run(["umount", mount.mount_point], check=False, capture_output=True, text=True)
            if res.returncode != 0:
                log.debug("umount %s: %s; detaching lazily", mount.mount_point, res.stderr.strip())
                subprocess.run(["umount", "-l", mount.mount_point], check=False, capture_output=True)
    return [m.mount_point for m in mounts_under(path)]


def sysfs_and_cgroup_script() -> list[str]:
    """Shell lines that give the current mount namespace a /sys for its netns plus the root's cgroup mounts.

    Meant to run inside a new mount namespace (slave of the root one) after
    joining the host's network namespace: sysfs shows the network namespace
    of whoever mounts it.
    """
    mounts = read_mountinfo()
    sys_mount = next((m for m in reversed(mounts) if m.mount_point == "/sys"), None)
    lines = [
        "umount -l /sys",
        f"mount -t sysfs -o {sys_mount.remount_options() if sys_mount else 'nosuid,nodev,noexec'} sysfs /sys",
    ]
    cgroup_mounts = [
        m for m in mounts if m.mount_point == CGROUP_ROOT or m.mount_point.startswith(CGROUP_ROOT + "/")
    ]
    if not cgroup_mounts:
        raise RuntimeError(f"no cgroup filesystem mounted under {CGROUP_ROOT}; dockerd cannot run")
    for m in cgroup_mounts:
        lines.append(f"mkdir -p {shlex.quote(m.mount_point)}")
        lines.append(
            f"mount -t {shlex.quote(m.fstype)} -o {shlex.quote(m.remount_options())} "
            f"{shlex.quote(m.source)} {shlex.quote(m.mount_point)}"
        )
        if m.mount_point == CGROUP_ROOT and m.fstype == "tmpfs":
            # Hybrid layouts keep symlinks such as cpu -> cpu,cpuacct in that tmpfs.
            for name in sorted(os.listdir(CGROUP_ROOT)):
                link = os.path.join(CGROUP_ROOT, name)
                if os.path.islink(link):
                    lines.append(f"ln -sfn {shlex.quote(os.readlink(link))} {shlex.quote(link)}")
    return lines


_NS_DIR = re.compile(r"/[0-9a-f]{6}/ns$")


def testbed_ns_dirs() -> list[str]:
    """Mount points of the private `<run dir>/ns` binds of every test-bed run on the machine.

    A new host mount namespace gets copies of them, and through them of the
    mount namespaces of other hosts and other (concurrent) beds; it must drop
    those copies or it would keep those namespaces alive after their teardown.
    """
    return [m.mount_point for m in read_mountinfo() if _NS_DIR.search(m.mount_point)]


def cgroup_hierarchies() -> list[str]:
    """Mount points of every cgroup hierarchy (v1 controllers and v2) in this mount namespace."""
    return sorted({m.mount_point for m in read_mountinfo() if m.fstype in ("cgroup", "cgroup2")})


def cgroup_dirs(prefix: str) -> list[Path]:
    """Top-level cgroups whose name starts with `prefix`, in every hierarchy."""
    found = []
    for root in cgroup_hierarchies():
        try:
            names = os.listdir(root)
        except OSError:
            continue
        found += [
            Path(root, name) for name in names if name.startswith(prefix) and os.path.isdir(Path(root, name))
        ]
    return found


def remove_cgroups(prefix: str) -> list[str]:
    """rmdir the cgroups named `prefix*` (children first); returns those that could not be removed."""
    failed = []
    for top in cgroup_dirs(prefix):
        for dirpath, _dirnames, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except FileNotFoundError:
                pass
            except OSError as exc:
                failed.append(f"{dirpath}: {exc}")
    return failed
