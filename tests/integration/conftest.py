"""Fixtures for integration tests: test beds of simulated hosts, and a sweep of stale runs.

Nothing here skips: CI runs as root with the packages of
scripts/install-deps.sh, so a missing prerequisite is a broken environment
and every test fails saying what is missing.

Write tests as::

    def test_something(testbed_factory):
        bed = testbed_factory(3)          # 3 hosts, each with dockerd and the demo images
        h0 = bed.hosts[0]
        ...

The factory's beds are torn down after the test; a leak fails the test.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

# `tests` is not an installed package; make `tests.integration.testbed`
# importable whatever pytest's import mode.
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.integration.etcd import EtcdCluster  # noqa: E402
from tests.integration.testbed import TeardownError, TestBed, sweep_stale  # noqa: E402

log = logging.getLogger("testbed.fixtures")

_INTEGRATION_DIR = Path(__file__).resolve().parent

#: Executables the bed runs, and the Debian package each comes from.
_REQUIRED_TOOLS = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "mount": "mount",
    "pgrep": "procps",
    "sysctl": "procps",
    "dockerd": "docker.io",
    "containerd": "docker.io (containerd)",
    "runc": "docker.io (runc)",
    "iptables": "iptables",
    "busybox": "busybox-static",
    "etcd": "etcd-server",
    "timeout": "coreutils",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration is an integration test."""
    for item in items:
        if _INTEGRATION_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Remember each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"_report_{report.when}", report)
    return report


def _environment_problems() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append(
            "integration tests need root (network namespaces, mounts, private dockerd instances); "
            "run them as root, as CI does"
        )
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    for tool, package in _REQUIRED_TOOLS.items():
        if shutil.which(tool, path=path) is None:
            problems.append(f"`{tool}` not found: install {package} (scripts/install-deps.sh)")
    return problems


@pytest.fixture(scope="session", autouse=True)
def testbed_session_sweep() -> Iterator[None]:
    """Check the environment, clear what crashed earlier runs left, and sweep again at the end."""
    problems = _environment_problems()
    if problems:
        pytest.fail("integration environment is not usable:\n  " + "\n  ".join(problems), pytrace=False)
    swept = sweep_stale()
    if swept:
        log.warning("removed leftovers of crashed test-bed runs: %s", swept)
    yield
    swept = sweep_stale()
    if swept:
        log.warning("removed leftovers of this session's test beds: %s", swept)


@pytest.fixture
def testbed_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., TestBed]]:
    """Make `TestBed`s for one test: `testbed_factory(n_hosts=1, **TestBed kwargs)`, started.

    All beds are torn down when the test ends. Their logs (dockerd, spawned
    processes) are kept under the test's tmp_path, and their tails are
    logged if the test failed. A bed that leaks fails the test.
    """
    beds: list[TestBed] = []

    def make(n_hosts: int = 1, **kwargs: Any) -> TestBed:
        kwargs.setdefault("keep_logs", tmp_path / f"testbed-{len(beds)}")
        bed = TestBed(n_hosts, **kwargs)
        beds.append(bed)
        return bed.start()

    yield make

    report = getattr(request.node, "_report_call", None)
    if report is not None and report.failed:
        for bed in beds:
            for host in bed.hosts:
                for proc in [host.dockerd, *host.processes]:
                    if proc is not None:
                        log.warning("%s (log %s), last lines:\n%s", proc, proc.log_path, proc.log_tail(30))
    errors = []
    for bed in reversed(beds):
        try:
            bed.teardown()
        except TeardownError as exc:
            errors.append(str(exc))
    if errors:
        pytest.fail("test bed teardown left things behind:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[EtcdCluster]:
    """A real 3-member etcd on loopback, started once per test run (about 1-2 s) and shared.

    Tests that kill a member restart it before they end; each test uses keys of its own.
    """
    cluster = EtcdCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()
