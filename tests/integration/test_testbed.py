"""Tests of the integration test bed itself.

Every product integration test relies on these properties: an engine per
host that runs the demo images and publishes ports, hosts that reach each
other over the underlay and nothing else, engines that survive restarts
with their containers (the agent depends on live-restore), and a teardown
(or a later sweep, after a crash) that leaves the machine as it was.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.testbed import TestBed, find_leftovers, sweep_stale, wait_for
from tests.integration.testbed.bed import DEFAULT_BASE_DIR, LOCK_DIR
from tests.integration.testbed.mounts import read_mountinfo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

Factory = Callable[..., TestBed]


def _root_ns_snapshot() -> dict[str, object]:
    """What must be identical before and after a bed: links, addresses, routes, mounts (but other beds')."""

    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    links = json.loads(out("ip", "-j", "link", "show"))
    return {
        "links": sorted((link["ifname"], link.get("address"), "UP" in link["flags"]) for link in links),
        "addr": out("ip", "-4", "-br", "addr"),
        "addr6": out("ip", "-6", "-br", "addr"),
        "routes": out("ip", "route", "show", "table", "all"),
        # Other beds (concurrent sessions) mount below the base dir and /run/netns.
        "mounts": sorted(
            (m.mount_point, m.fstype)
            for m in read_mountinfo()
            if not m.mount_point.startswith(("/run/netns/", f"{DEFAULT_BASE_DIR}/"))
        ),
    }


def test_single_host_serves_apache_on_a_published_port(testbed_factory: Factory) -> None:
    bed = testbed_factory(1)
    host = bed.hosts[0]
    client = host.docker()
    assert client.ping()
    assert {"atoll/busybox:latest", "fedora/apache:latest"} <= {
        t for i in client.images.list() for t in i.tags
    }

    container = client.containers.run("fedora/apache", detach=True, ports={"80/tcp": 8080}, name="web")
    for url in ("http://127.0.0.1:8080/", f"http://{host.ip}:8080/"):
        response = wait_for(
            functools.partial(host.http_get, url, timeout=3), timeout=20, message=f"apache answering on {url}"
        )
        assert response.status == 200
        assert "Apache" in response.body
    container.reload()
    assert container.status == "running"


def test_busybox_image_runs_commands(testbed_factory: Factory) -> None:
    bed = testbed_factory(1)
    out = (
        bed.hosts[0]
        .docker()
        .containers.run("atoll/busybox", ["sh", "-c", "echo hello from $(uname -s)"], remove=True)
    )
    assert out.strip() == b"hello from Linux"


def test_hosts_reach_each_other_and_nothing_else(testbed_factory: Factory) -> None:
    bed = testbed_factory(2, docker=False)
    h0, h1 = bed.hosts
    assert (h0.ip, h1.ip) == ("198.51.100.10", "198.51.100.11")
    assert h0.ping(h1.ip)
    assert h1.ping(h0.ip)

    # No default route: the machine's real network (and anything beyond it)
    # is unroutable, so no packet is even attempted.
    routes = h0.run(["ip", "route"], check=True).stdout
    assert "default" not in routes
    unreachable = h0.run(["ip", "route", "get", "192.0.2.1"])
    assert unreachable.returncode != 0
    assert "unreachable" in unreachable.stderr.lower()
    # The underlay bridge has no IPv4 address: it is a switch, not a router.
    underlay = subprocess.run(
        ["ip", "-n", f"atl-{bed.run_id}-ul", "-4", "-br", "addr", "show", "br0"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert underlay.stdout.strip() == ""

    h1.set_link(False)
    assert not h0.ping(h1.ip, timeout=1)
    h1.set_link(True)
    wait_for(lambda: h0.ping(h1.ip), timeout=10, message="h1 reachable again after replugging")


def test_spawned_process_is_reachable_across_hosts_and_from_the_test(testbed_factory: Factory) -> None:
    bed = testbed_factory(2, docker=False)
    h0, h1 = bed.hosts
    server = h1.spawn([sys.executable, "-m", "http.server", "9000", "--bind", h1.ip], label="http-server")
    response = wait_for(lambda: h0.http_get(f"http://{h1.ip}:9000/", 2), timeout=20, message="server on h1")
    assert response.status == 200

    with h1.forward(9000) as fwd, socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert conn.recv(12) == b"HTTP/1.0 200"

    server.kill(signal.SIGTERM)
    assert server.wait(10) == -signal.SIGTERM
    assert not server.alive
    assert '"GET / HTTP/1.1" 200' in server.read_log()


def test_containers_survive_a_dockerd_restart_and_crash(testbed_factory: Factory) -> None:
    bed = testbed_factory(2)
    h0, h1 = bed.hosts
    h0.docker().containers.run("fedora/apache", detach=True, ports={"80/tcp": 8080}, name="web")
    url = f"http://{h0.ip}:8080/"
    wait_for(lambda: "Apache" in h1.http_get(url, 3).body, timeout=20, message="apache before restart")
    old_pid = h0.docker().containers.get("web").attrs["State"]["Pid"]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        h0.restart_docker(sig=sig)
        web = h0.docker().containers.get("web")
        assert web.status == "running"
        assert web.attrs["State"]["Pid"] == old_pid, "live-restore should keep the same container process"
        wait_for(
            lambda: "Apache" in h1.http_get(url, 3).body, timeout=20, message=f"apache after signal {sig}"
        )


def test_teardown_leaves_the_machine_as_it_was(tmp_path: Path) -> None:
    before = _root_ns_snapshot()
    with TestBed(2, keep_logs=tmp_path / "logs") as bed:
        h0, h1 = bed.hosts
        h0.docker().containers.run("fedora/apache", detach=True, ports={"80/tcp": 8080})
        h1.docker().containers.run("atoll/busybox", ["sleep", "600"], detach=True)
        h0.spawn(["sleep", "600"])
        wait_for(lambda: "Apache" in h1.http_get(f"http://{h0.ip}:8080/", 3).body, 20, message="apache")
        run_id, run_dir = bed.run_id, bed.dir
        assert bed.pgrep(), "dockerd and friends mention the run dir on their command lines"
    assert find_leftovers(run_id, run_dir) == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"atl-{run_id}-" not in netns
    assert bed.pgrep() == ""
    for name in ("dockerd", "containerd", "containerd-shim-runc-v2", "docker-proxy"):
        procs = subprocess.run(["pgrep", "-a", name], check=False, capture_output=True, text=True).stdout
        assert str(run_dir) not in procs, f"{name} of the bed still running:\n{procs}"
    assert not any(str(run_dir) in m.mount_point for m in read_mountinfo())
    assert not run_dir.exists()
    assert not (LOCK_DIR / f"{run_id}.lock").exists()
    assert _root_ns_snapshot() == before
    assert (tmp_path / "logs" / "h0" / "dockerd.log").is_file(), "logs are kept when asked"
    bed.teardown()  # idempotent


def test_sweep_removes_what_a_crashed_run_left(testbed_factory: Factory) -> None:
    live = testbed_factory(1, docker=False)  # must survive the sweep untouched
    # A bed whose owner dies without any chance to clean up (SIGKILL).
    script = (
        "import sys, time\n"
        "from tests.integration.testbed import TestBed\n"
        "bed = TestBed(1).start()\n"
        "bed.hosts[0].docker().containers.run('atoll/busybox', ['sleep', '600'], detach=True)\n"
        "print(bed.run_id, bed.dir, flush=True)\n"
        "time.sleep(600)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    owner = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=repo,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    try:
        assert owner.stdout is not None
        run_id, run_dir = owner.stdout.readline().split()
    finally:
        owner.kill()
        owner.wait()
    left = find_leftovers(run_id, Path(run_dir))
    assert any(item.startswith("netns") for item in left)
    assert any("dockerd" in item for item in left)

    swept = sweep_stale()
    assert run_id in swept
    assert live.run_id not in swept
    assert find_leftovers(run_id, Path(run_dir)) == []
    # The live bed is intact.
    assert live.leftovers() != []
    assert (
        live.hosts[0]
        .run(["ip", "-br", "addr", "show", "eth0"], check=True)
        .stdout.split()[2]
        .startswith(live.hosts[0].ip)
    )


def test_wait_for_returns_the_truthy_value_and_reports_the_last_one_on_timeout() -> None:
    values = iter([0, None, "", "ready"])
    assert wait_for(lambda: next(values), timeout=5, interval=0.01) == "ready"

    def failing() -> int:
        raise ConnectionError("refused")

    with pytest.raises(AssertionError, match=r"waiting for the port.*last error: ConnectionError: refused"):
        wait_for(failing, timeout=0.2, interval=0.05, message="the port")
    with pytest.raises(AssertionError, match=r"last value: \[\]"):
        wait_for(list, timeout=0.1, interval=0.05)
