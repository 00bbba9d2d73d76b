"""One fleet host under a real systemd for the whole run: RPMs built twice, installed, both units started.

The session builds the RPMs of this tree twice with packaging/build-rpm.sh
(what `make rpm` runs): as they are, and with a later release for the
upgrade test. A one-host test bed gives the host its network namespace and
its own dockerd; systemd boots as PID 1 over an overlay of the machine's root
in that namespace (boot.py), and the packages are installed into it with
`rpm -i --nodeps`: --nodeps only because the root is Debian, whose RPM
database is empty, not RHEL. The coordinator and the agent then run as the
units the packages ship, configured through /etc/sysconfig as an operator
would, the agent driving the host's dockerd through its socket.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.client.api import Client
from tests.integration.systemd.boot import BootedSystemd
from tests.integration.testbed import Host, TestBed

ROOT = Path(__file__).resolve().parents[3]
_HERE = Path(__file__).resolve().parent

#: The unix socket the coordinator's unit listens on, inside the booted system.
COORDINATOR_SOCKET = "/run/atoll/coordinator.sock"
NEXT_DIST = ".next"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test here needs the heavy harness: `-m "not harness"` leaves them out."""
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.harness)


@dataclasses.dataclass
class RpmBuild:
    dir: Path
    rpms: dict[str, Path]  # package name -> binary RPM

    def paths(self, *names: str) -> list[str]:
        return [str(self.rpms[n]) for n in names]


def build_rpms(out: Path, *rpmbuild_args: str) -> RpmBuild:
    proc = subprocess.run(
        [str(ROOT / "packaging" / "build-rpm.sh"), str(out), *rpmbuild_args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "ATOLL_PYTHON": sys.executable},
        check=False,
    )
    assert proc.returncode == 0, f"build-rpm.sh failed:\n{proc.stderr}"
    rpms = {}
    for line in proc.stdout.split():
        path = Path(line)
        if path.name.endswith(".src.rpm"):
            continue
        name = subprocess.run(
            ["rpm", "-qp", "--qf", "%{NAME}", str(path)], capture_output=True, text=True, check=True
        ).stdout
        rpms[name] = path
    return RpmBuild(out, rpms)


@pytest.fixture(scope="session")
def rpm_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[RpmBuild, RpmBuild]:
    """This tree's RPMs, and the same with a later release (1 < 1.next) to upgrade to."""
    base = build_rpms(tmp_path_factory.mktemp("rpm-base"))
    later = build_rpms(tmp_path_factory.mktemp("rpm-next"), "--define", f"dist {NEXT_DIST}")
    return base, later


@dataclasses.dataclass
class FleetHost:
    host: Host
    systemd: BootedSystemd
    builds: tuple[RpmBuild, RpmBuild]
    node_name: str

    @property
    def coordinator_server(self) -> str:
        """The coordinator's unix socket, as the test process reaches it (through PID 1's root)."""
        return f"unix://{self.systemd.path(COORDINATOR_SOCKET)}"

    def client(self) -> Client:
        return Client(self.coordinator_server)

    def coordinator_cli(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """The installed `coordinator` command, run inside against the unit's socket."""
        return self.systemd.run(
            ["coordinator", "--server", f"unix://{COORDINATOR_SOCKET}", *argv], timeout=timeout
        )


def _agent_sysconfig(host: Host, node_name: str, token: dict[str, str]) -> str:
    settings = {
        "COORDINATOR": "127.0.0.1:6443",
        "NODE_NAME": node_name,
        "NODE_IP": host.ip,
        "DOCKER_HOST": host.docker_host,
        "DOCKER_CONFIG": str(host.dir / "daemon.json"),
        "DOCKER_PIDFILE": str(host.dir / "dockerd.pid"),
        "JOIN_TOKEN": token["token"],
        "CA_HASH": token["caHash"],
        "HEARTBEAT_INTERVAL": "1",
        "RELIST_INTERVAL": "0.5",
        "BACKOFF_BASE": "1",
        "BACKOFF_MAX": "4",
    }
    return "".join(f"ATOLL_AGENT_{k}={v}\n" for k, v in settings.items())


_COORDINATOR_SYSCONFIG = f"""\
ATOLL_COORDINATOR_LISTEN=127.0.0.1:6443,unix://{COORDINATOR_SOCKET}
ATOLL_COORDINATOR_HEARTBEAT_INTERVAL=1
ATOLL_COORDINATOR_NODE_GRACE_PERIOD=10
ATOLL_COORDINATOR_SCHEDULER_RETRY_INTERVAL=1
"""


def _create_token(fleet: FleetHost, timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        res = fleet.coordinator_cli("token", "create", "-o", "json", "--uses", "0", "--ttl", "2h")
        if res.returncode == 0:
            return dict(json.loads(res.stdout))
        if time.monotonic() > deadline:
            raise AssertionError(f"coordinator token create kept failing: {res.stderr}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def fleet_host(
    rpm_builds: tuple[RpmBuild, RpmBuild], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetHost]:
    """The packages installed under a booted systemd; the coordinator unit running, the agent's configured."""
    base, _ = rpm_builds
    with TestBed(1) as bed:
        host = bed[0]
        systemd = BootedSystemd(host, host.dir / "systemd", binds=[host.dir, *(b.dir for b in rpm_builds)])
        try:
            t0 = time.monotonic()
            systemd.boot()
            print(f"\nsystemd: booted in {time.monotonic() - t0:.2f}s as pid {systemd.pid}")
            systemd.run(
                ["rpm", "-i", "--nodeps", *base.paths("atoll-common", "atoll-agent", "atoll-coordinator")],
                check=True,
                timeout=300,
            )
            fleet = FleetHost(host, systemd, rpm_builds, node_name="fleet-0")
            systemd.write("/etc/sysconfig/atoll-coordinator", _COORDINATOR_SYSCONFIG)
            systemd.systemctl("start", "atoll-coordinator.service")
            token = _create_token(fleet)
            systemd.write("/etc/sysconfig/atoll-agent", _agent_sysconfig(host, fleet.node_name, token), 0o600)
            # The agent joins once, here; the tests restart it with the node certificate it got.
            t0 = time.monotonic()
            systemd.systemctl("start", "atoll-agent.service")
            print(f"atoll-agent: systemctl start to READY, joining first, in {time.monotonic() - t0:.2f}s")
            yield fleet
        finally:
            for unit in ("atoll-agent", "atoll-coordinator"):
                if systemd.pid:
                    (host.dir / f"journal-{unit}.log").write_text(systemd.journal(unit, 400))
            problems = systemd.shutdown()
            assert not problems, problems
