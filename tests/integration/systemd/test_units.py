"""The agent and coordinator RPMs under a real systemd: READY, restarts, the watchdog, stop, upgrade.

Everything is checked through `systemctl` on the booted system (conftest.py):
what an operator of a systemd-managed fleet relies on. The tests run in file
order on one host; each leaves the agent running with the same pods.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from atoll import kinds
from atoll.v1 import pod_pb2
from tests.integration.daemons import eventually, node_ready, wait_running
from tests.integration.systemd.conftest import NEXT_DIST, FleetHost
from tests.integration.testbed.waiting import wait_for

AGENT = "atoll-agent.service"
COORDINATOR = "atoll-coordinator.service"
UNIT_DIR = "/usr/lib/systemd/system"
POD = kinds.by_name("Pod")
MANAGED = {"label": "io.atoll.managed=true"}
LOOP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
PODS = ("steady-0", "steady-1")


def sleeper(name: str) -> pod_pb2.Pod:
    pod = pod_pb2.Pod()
    pod.metadata.name = name
    pod.spec.termination_grace_period_seconds = 1
    pod.spec.containers.add(name="main", image="atoll/busybox", command=LOOP)
    return pod


def containers(fleet: FleetHost) -> dict[str, str]:
    """Every Atoll container on the host's dockerd: id -> start time."""
    found = fleet.host.docker().containers.list(all=True, filters=MANAGED)
    return {c.id: c.attrs["State"]["StartedAt"] for c in found if c.status == "running"}


def agent_state(fleet: FleetHost) -> dict[str, str]:
    return fleet.systemd.show(
        AGENT, "ActiveState", "SubState", "MainPID", "NRestarts", "StatusText", "Result", "InvocationID"
    )


def wait_agent_active(fleet: FleetHost, *, other_than_pid: str = "", timeout: float = 90) -> dict[str, str]:
    def active() -> dict[str, str] | None:
        state = agent_state(fleet)
        ok = state["ActiveState"] == "active" and state["SubState"] == "running"
        return state if ok and state["MainPID"] not in ("0", other_than_pid) else None

    try:
        return wait_for(active, timeout=timeout, interval=0.2, message="atoll-agent active (running)")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{fleet.systemd.journal(AGENT)}") from None


async def all_running(fleet: FleetHost) -> None:
    async with fleet.client() as client:
        for name in PODS:
            await wait_running(client, name, timeout=120)


@pytest.fixture(autouse=True)
def journals_on_failure(request: pytest.FixtureRequest, fleet_host: FleetHost) -> Iterator[None]:
    """A failed test prints what systemd logged of both units: the first thing to read."""
    yield
    report = getattr(request.node, "_report_call", None)
    if report is not None and report.failed:
        for unit in (AGENT, COORDINATOR):
            print(f"\n--- journal of {unit} ---\n{fleet_host.systemd.journal(unit, 60)}")


@pytest.fixture(scope="module")
def pods(fleet_host: FleetHost) -> dict[str, str]:
    """The agent started and two pods running on it: their containers (id -> start time)."""

    async def create() -> None:
        async with fleet_host.client() as client:
            await eventually(lambda: node_ready(client, fleet_host.node_name), timeout=90, what="node Ready")
            for name in PODS:
                await client.create(sleeper(name))
            for name in PODS:
                await wait_running(client, name, timeout=120)

    # Whatever an earlier test left stopped.
    fleet_host.systemd.systemctl("start", COORDINATOR, AGENT)
    asyncio.run(create())
    running = containers(fleet_host)
    assert len(running) == 2 * len(PODS), running  # an infra and an app container per pod
    return running


def test_installed_units_verify_without_a_word(fleet_host: FleetHost) -> None:
    # systemd-analyze verify exits 0 on warnings: any output at all is a failure.
    res = fleet_host.systemd.run(
        ["systemd-analyze", "verify", "--man=no", f"{UNIT_DIR}/{AGENT}", f"{UNIT_DIR}/{COORDINATOR}"]
    )
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr
    for unit in (AGENT, COORDINATOR):
        props = fleet_host.systemd.show(unit, "Type", "Restart", "NotifyAccess")
        assert (props["Type"], props["Restart"], props["NotifyAccess"]) == ("notify", "always", "main"), props
    assert fleet_host.systemd.show(AGENT, "KillMode")["KillMode"] == "process"
    # systemd reports a unit's watchdog once it runs: the coordinator's does.
    assert fleet_host.systemd.show(COORDINATOR, "WatchdogUSec")["WatchdogUSec"] == "30s"


def test_coordinator_unit_is_ready_and_says_what_it_does(fleet_host: FleetHost) -> None:
    state = fleet_host.systemd.show(COORDINATOR, "ActiveState", "SubState", "StatusText", "User")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert state["StatusText"], state


def test_agent_is_active_only_once_registered_and_synced(fleet_host: FleetHost) -> None:
    systemd = fleet_host.systemd
    systemd.systemctl("stop", AGENT)
    # No coordinator to register with (the agent joined already, in the fixture): it runs, but is not READY.
    systemd.systemctl("stop", COORDINATOR)
    try:
        systemd.systemctl("start", "--no-block", AGENT)
        wait_for(
            lambda: agent_state(fleet_host)["ActiveState"] != "inactive",
            timeout=10,
            message="the start job to run",
        )
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            state = agent_state(fleet_host)
            assert state["ActiveState"] == "activating", state
            time.sleep(0.25)
        assert state["MainPID"] != "0" and state["StatusText"], state
    finally:
        systemd.systemctl("start", COORDINATOR)
    wait_agent_active(fleet_host)
    assert systemd.show(AGENT, "WatchdogUSec")["WatchdogUSec"] == "1min"

    async def registered() -> bool:
        async with fleet_host.client() as client:
            return await node_ready(client, fleet_host.node_name)

    assert asyncio.run(registered())

    # Start to READY with the coordinator up: `systemctl restart` of a Type=notify unit returns at READY.
    t0 = time.monotonic()
    systemd.systemctl("restart", AGENT)
    print(f"\natoll-agent: systemctl restart to READY in {time.monotonic() - t0:.2f}s")
    assert agent_state(fleet_host)["ActiveState"] == "active"


def test_kill_9_is_restarted_and_pods_keep_running(fleet_host: FleetHost, pods: dict[str, str]) -> None:
    before = agent_state(fleet_host)
    os.kill(_machine_pid(fleet_host, before["MainPID"]), signal.SIGKILL)
    after = wait_agent_active(fleet_host, other_than_pid=before["MainPID"])
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, (before, after)
    assert containers(fleet_host) == pods
    asyncio.run(all_running(fleet_host))


def test_watchdog_kills_a_stopped_agent(fleet_host: FleetHost, pods: dict[str, str]) -> None:
    systemd = fleet_host.systemd
    # A short watchdog for the test, as an operator's drop-in would set it.
    systemd.write(f"/etc/systemd/system/{AGENT}.d/50-watchdog.conf", "[Service]\nWatchdogSec=4s\n")
    systemd.systemctl("daemon-reload")
    systemd.systemctl("restart", AGENT)
    before = wait_agent_active(fleet_host)
    # Petted while healthy: a few watchdog periods pass without a restart.
    time.sleep(6)
    steady = agent_state(fleet_host)
    assert (steady["MainPID"], steady["NRestarts"]) == (before["MainPID"], before["NRestarts"]), steady
    os.kill(_machine_pid(fleet_host, before["MainPID"]), signal.SIGSTOP)
    after = wait_agent_active(fleet_host, other_than_pid=before["MainPID"], timeout=60)
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, (before, after)
    assert "watchdog" in systemd.journal(AGENT, 200).lower()
    assert containers(fleet_host) == pods
    systemd.run(["rm", "-r", f"/etc/systemd/system/{AGENT}.d"], check=True)
    systemd.systemctl("daemon-reload")


def test_reload_is_a_sighup_that_keeps_the_agent_and_its_pods(
    fleet_host: FleetHost, pods: dict[str, str]
) -> None:
    systemd = fleet_host.systemd
    before = wait_agent_active(fleet_host)
    systemd.systemctl("reload", AGENT)
    wait_for(
        lambda: "reloaded: log level" in systemd.journal(AGENT, 50), timeout=20, message="the reload logged"
    )
    after = wait_agent_active(fleet_host)
    assert (after["MainPID"], after["NRestarts"]) == (before["MainPID"], before["NRestarts"]), after
    assert containers(fleet_host) == pods


def test_stop_ends_cleanly_within_the_timeout(fleet_host: FleetHost, pods: dict[str, str]) -> None:
    systemd = fleet_host.systemd
    limit = _seconds(systemd.show(AGENT, "TimeoutStopUSec")["TimeoutStopUSec"])
    t0 = time.monotonic()
    systemd.systemctl("stop", AGENT)
    took = time.monotonic() - t0
    print(f"\natoll-agent: systemctl stop in {took:.2f}s (TimeoutStopSec {limit:.0f}s)")
    state = systemd.show(AGENT, "ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
    assert took < limit, state
    assert state["ActiveState"] == "inactive" and state["Result"] == "success", state
    # Ended by its own exit (code=exited, status 0), not by SIGKILL after the timeout.
    assert state["ExecMainCode"] == "1" and state["ExecMainStatus"] == "0", state
    assert containers(fleet_host) == pods, "stopping the agent touched the pods"
    systemd.systemctl("start", AGENT)
    asyncio.run(all_running(fleet_host))


def test_rpm_upgrade_restarts_the_agent_and_keeps_every_pod(
    fleet_host: FleetHost, pods: dict[str, str]
) -> None:
    systemd = fleet_host.systemd
    _, later = fleet_host.builds
    before = wait_agent_active(fleet_host)
    systemd.run(
        ["rpm", "-U", "--nodeps", *later.paths("atoll-common", "atoll-agent", "atoll-coordinator")],
        check=True,
        timeout=300,
    )
    release = systemd.run(["rpm", "-q", "--qf", "%{RELEASE}", "atoll-agent"], check=True).stdout
    assert release.endswith(NEXT_DIST), release
    after = wait_agent_active(fleet_host, other_than_pid=before["MainPID"])
    assert after["InvocationID"] != before["InvocationID"], "the upgrade did not restart the agent"
    # The same containers, started at the same time: nothing was recreated or restarted.
    assert containers(fleet_host) == pods
    asyncio.run(all_running(fleet_host))


def _machine_pid(fleet: FleetHost, inner_pid: str) -> int:
    """The machine's PID of a process that the booted system knows as `inner_pid`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if len(nspid) >= 2 and nspid[-1] == inner_pid and _in_namespace(entry, fleet.systemd.pid):
            return int(entry)
    raise AssertionError(f"no process {inner_pid} in the booted system")


def _in_namespace(pid: str, pid1: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{pid1}/ns/pid")
    except OSError:
        return False


def _seconds(value: str) -> float:
    """systemd's timespan as `show` prints it: '30s', '1min 30s', '500ms'."""
    units = {"min": 60.0, "ms": 0.001, "us": 0.000001, "s": 1.0, "h": 3600.0}
    total = 0.0
    for part in value.split():
        for suffix, factor in units.items():
            if part.endswith(suffix) and part[: -len(suffix)].replace(".", "").isdigit():
                total += float(part[: -len(suffix)]) * factor
                break
    return total
