"""CPU for bench/hollow.py's processes: a CFS quota for one (--coordinator-cpu), and pinning (--pin)."""

from __future__ import annotations

import contextlib
import os
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


def pin_cores(pin: bool) -> list[str]:
    """With --pin: the coordinators on CPU 0, this process (the fleet, and the prober and fleet
    workers it starts) on the others, as if the agents ran on machines of their own. Returns
    the prefix of a coordinator's command (taskset execs it: every thread it makes is on CPU 0)."""
    if not pin:
        return []
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    fleet = set(cores[1:])
    for tid in os.listdir("/proc/self/task"):  # every thread this process already has
        os.sched_setaffinity(int(tid), fleet)
    print(
        f"pinned: coordinators on CPU {cores[0]}, the hollow fleet and the prober on {sorted(fleet)}",
        flush=True,
    )
    return ["taskset", "-c", str(cores[0])]
