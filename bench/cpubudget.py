"""A CFS quota for one process: what bench/hollow.py --coordinator-cpu gives each coordinator."""

from __future__ import annotations

import contextlib
import pathlib


class CpuBudget:
    """A CFS quota for one coordinator process: a cgroup of its own (v2 `cpu.max`, or v1's
    cpu controller), so each coordinator gets the share of a core that a machine of its own
    would give it. Three coordinators on this 2-core box otherwise share the same two cores
    as one, and "more coordinators hold more agents" could not show."""

    def __init__(self, name: str, cores: float) -> None:
        period = 100_000
        quota = max(1000, int(cores * period))
        v2 = pathlib.Path("/sys/fs/cgroup")
        if (v2 / "cgroup.controllers").exists():
            control = v2 / "cgroup.subtree_control"
            if "cpu" not in control.read_text().split():
                control.write_text("+cpu")
            self.path = v2 / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.max").write_text(f"{quota} {period}")
        else:
            self.path = pathlib.Path("/sys/fs/cgroup/cpu") / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text(str(period))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled_seconds(self) -> float:
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        if "throttled_usec" in stat:
            return int(stat["throttled_usec"]) / 1e6
        return int(stat.get("throttled_time", 0)) / 1e9

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()
