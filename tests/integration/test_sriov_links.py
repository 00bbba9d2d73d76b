"""The real VF link driver on a real kernel: a VF stand-in moved into a pod's namespace and home again.

No SR-IOV NIC exists here, so a veth end stands in for the VF's netdev (the
driver moves netdevs by name and alias, whatever their kind). It runs inside a
test-bed host's namespace, as the agent would on a host; the "pod" is a
process in a network namespace of its own inside that host.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.integration.testbed import Host, TestBed, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PCI = "0000:03:10.0"
_DRIVER = r"""
import json, sys
from agent.sriov.netlink import NetlinkVfLinks
op, netns = sys.argv[1], sys.argv[2]
links = NetlinkVfLinks()
if op == "to_pod":
    routes = [("10.57.0.0/16", "10.56.0.1")]
    links.to_pod("0000:03:10.0", "ens1f0v0", netns, "net1", addresses=["10.56.0.10/24"], routes=routes)
    links.to_pod("0000:03:10.0", "ens1f0v0", netns, "net1", addresses=["10.56.0.10/24"], routes=routes)
else:
    links.to_host("0000:03:10.0", "ens1f0v0", netns)
    links.to_host("0000:03:10.0", "ens1f0v0", netns)  # a retried release
print("ok")
"""


def links(host: Host, netns_pid: int | None = None) -> dict[str, dict[str, object]]:
    argv = ["ip", "-j", "addr", "show"]
    if netns_pid is not None:
        argv = ["nsenter", f"--net=/proc/{netns_pid}/ns/net", "--", *argv]
    out = host.run(argv, check=True).stdout
    return {link["ifname"]: link for link in json.loads(out)}


def drive(host: Host, op: str, netns: str) -> None:
    res = host.run([sys.executable, "-c", _DRIVER, op, netns], timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_a_vf_moves_into_the_pod_renamed_and_addressed_and_comes_home_clean(testbed_factory: object) -> None:
    bed: TestBed = testbed_factory(1, docker=False)  # type: ignore[operator]
    (host,) = bed.hosts
    host.run(["ip", "link", "add", "ens1f0v0", "type", "veth", "peer", "name", "ens1f0p0"], check=True)
    pod = host.spawn(["sh", "-c", "echo pid $$; exec unshare --net sleep 600"], label="pod")
    wait_for(lambda: "pid" in pod.log_tail(), timeout=10, message="the pod's namespace")
    pid = int(pod.log_tail().split()[1])
    netns = f"/proc/{pid}/ns/net"

    drive(host, "to_pod", netns)
    assert "ens1f0v0" not in links(host)
    inside = links(host, pid)["net1"]
    assert "UP" in inside["flags"]  # type: ignore[operator]
    assert [(a["local"], a["prefixlen"]) for a in inside["addr_info"]] == [("10.56.0.10", 24)]  # type: ignore[index,union-attr]
    route = host.run(
        ["nsenter", f"--net={netns}", "--", "ip", "route", "show", "10.57.0.0/16"], check=True
    ).stdout
    assert route.split()[:5] == ["10.57.0.0/16", "via", "10.56.0.1", "dev", "net1"], route

    drive(host, "to_host", netns)
    assert "net1" not in links(host, pid)
    home = links(host)["ens1f0v0"]
    assert home["addr_info"] == [] and "UP" not in home["flags"]  # type: ignore[operator]
    alias = json.loads(host.run(["ip", "-j", "-d", "link", "show", "ens1f0v0"], check=True).stdout)[0]
    assert alias.get("ifalias") == f"atoll-vf:{PCI}"
