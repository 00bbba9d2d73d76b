"""Host facts and usage behind one Protocol: psutil on real hosts, a fake elsewhere."""

from __future__ import annotations

import os
import pathlib
import platform
import socket
from dataclasses import dataclass
from typing import Protocol

import psutil


@dataclass(frozen=True)
class HostSnapshot:
    cpu_count: int
    memory_total: int
    disk_total: int
    cpu_used_millis: int
    memory_used: int
    disk_used: int
    load_average: tuple[float, float, float]


@dataclass(frozen=True)
class SystemInfo:
    machine_id: str
    boot_id: str
    kernel_version: str
    os_image: str
    architecture: str
    hostname: str


class HostMetrics(Protocol):
    def snapshot(self) -> HostSnapshot: ...

    def system_info(self) -> SystemInfo: ...

    def addresses(self) -> set[str]:
        """The host's IPv4 addresses (the proxy answers external IPs only on their owner)."""
        ...


def _read(path: str) -> str:
    try:
        return pathlib.Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()


class PsutilMetrics:
    """Reads the host through psutil. `disk_path` is where pods' data lands (the state dir)."""

    def __init__(self, disk_path: pathlib.Path) -> None:
        self._disk_path = disk_path
        # The first cpu_percent() call only primes psutil's counters.
        psutil.cpu_percent(interval=None)

    def snapshot(self) -> HostSnapshot:
        cpus = psutil.cpu_count() or 1
        mem = psutil.virtual_memory()
        path = self._disk_path if self._disk_path.exists() else pathlib.Path("/")
        disk = psutil.disk_usage(str(path))
        return HostSnapshot(
            cpu_count=cpus,
            memory_total=mem.total,
            disk_total=disk.total,
            cpu_used_millis=int(psutil.cpu_percent(interval=None) * cpus * 10),
            memory_used=mem.total - mem.available,
            disk_used=disk.used,
            load_average=os.getloadavg(),
        )

    def addresses(self) -> set[str]:
        return {
            a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == socket.AF_INET
        }

    def system_info(self) -> SystemInfo:
        return SystemInfo(
            machine_id=_read("/etc/machine-id"),
            boot_id=_read("/proc/sys/kernel/random/boot_id"),
            kernel_version=platform.release(),
            os_image=_os_image(),
            architecture=platform.machine(),
            hostname=socket.gethostname(),
        )


class FakeMetrics:
    """A fixed host, for tests and hollow agents."""

    def __init__(self, cpu_count: int = 4, memory_total: int = 8 << 30, hostname: str = "fake") -> None:
        self.cpu_count = cpu_count
        self.memory_total = memory_total
        self.hostname = hostname
        self.calls = 0
        self.local_addresses: set[str] = set()

    def snapshot(self) -> HostSnapshot:
        self.calls += 1
        return HostSnapshot(
            self.cpu_count, self.memory_total, 100 << 30, 100, 1 << 30, 10 << 30, (0.1, 0.1, 0.1)
        )

    def system_info(self) -> SystemInfo:
        return SystemInfo("fake-machine", "fake-boot", "6.0.0-fake", "FakeOS", "x86_64", self.hostname)

    def addresses(self) -> set[str]:
        return set(self.local_addresses)
