"""The service proxy on a real kernel, proven by traffic, on hosts of the test bed (no coordinator).

Two apache containers run on host 0's docker0 (172.31.0.0/24), a ServiceState
is fed by hand to a real ServiceProxy whose nft runs inside host 0's network
namespace (`nsenter --net`), and clients on host 0, in a container and on
host 1 reach the cluster IP and the external IP. Which client address each
httpd logs shows which flows were masqueraded. Nothing here touches the root
namespace; a snapshot of it is compared at the end of every test.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from agent.execute import AsyncioRunner
from agent.proxy import NftNetfilter, ServiceProxy
from atoll.v1 import meta_pb2, node_api_pb2, workloads_pb2
from tests.integration.testbed import Host, TestBed, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

Factory = Callable[..., TestBed]
CLUSTER_IP = "10.254.0.10"
PUBLIC_IP = "10.254.0.11"
OTHER_IP = "10.254.0.20"
UDP_IP = "10.254.0.53"
DOCKER0 = "172.31.0.1"  # host 0's docker0 address (the bed's bip)

_UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data + b" from " + peer[0].encode(), peer)
"""

_UDP_ASK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], int(sys.argv[2])))
try:
    s.send(b"ping")
    print(s.recv(2048).decode())
except PermissionError:  # a datagram rejected in this host's own output hook
    print("REFUSED")
except ConnectionRefusedError:
    print("REFUSED")
except TimeoutError:
    print("TIMEOUT")
"""


def _sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def _root_snapshot() -> dict[str, object]:
    counters = re.compile(r"(counter packets \d+ bytes \d+|\[\d+:\d+\])")
    return {
        "links": sorted(link["ifname"] for link in json.loads(_sh("ip", "-j", "link", "show"))),
        "routes": _sh("ip", "route", "show", "table", "all"),
        "iptables": _sh("iptables", "-S") + _sh("iptables", "-t", "nat", "-S"),
        "nft": counters.sub("", _sh("nft", "list", "ruleset")),
    }


@pytest.fixture(autouse=True)
def root_namespace_untouched() -> Iterator[None]:
    before = _root_snapshot()
    yield
    assert _root_snapshot() == before, "the root network namespace changed"


# -- the state fed by hand ----------------------------------------------------------------------------


def service(
    name: str, cluster_ip: str, port: int, target: int, *, external: Sequence[str] = (), udp: bool = False
) -> workloads_pb2.Service:
    svc = workloads_pb2.Service()
    svc.metadata.namespace, svc.metadata.name = "default", name
    svc.spec.cluster_ip = cluster_ip
    svc.spec.external_ips.extend(external)
    proto = meta_pb2.PROTOCOL_UDP if udp else meta_pb2.PROTOCOL_TCP
    svc.spec.ports.add(name="p", protocol=proto, port=port, target_port=target)
    return svc


def endpoints(
    name: str, ips: Sequence[str], node: str, port: int, *, udp: bool = False
) -> workloads_pb2.Endpoints:
    eps = workloads_pb2.Endpoints()
    eps.metadata.namespace, eps.metadata.name = "default", name
    subset = eps.subsets.add()
    for ip in ips:
        subset.addresses.add(ip=ip, node_name=node)
    subset.ports.add(name="p", port=port, protocol=meta_pb2.PROTOCOL_UDP if udp else meta_pb2.PROTOCOL_TCP)
    return eps


def services_state(
    generation: int, objs: Sequence[workloads_pb2.Service | workloads_pb2.Endpoints]
) -> node_api_pb2.ServiceState:
    st = node_api_pb2.ServiceState(generation=generation)
    for obj in objs:
        (st.services if isinstance(obj, workloads_pb2.Service) else st.endpoints).append(obj)
    return st


# -- helpers ---------------------------------------------------------------------------------------------


async def get(host: Host, url: str, timeout: float = 5.0) -> str:
    """GET from the host's namespace: the body, or "ERROR: ..." when nothing answered."""
    try:
        return (await asyncio.to_thread(host.http_get, url, timeout)).body
    except ConnectionError as exc:
        return f"ERROR: {exc}"


async def exec_get(container: Any, url: str, timeout: int = 5) -> tuple[int, str]:
    # busybox wget -T crashes in these containers: bound it with timeout(1) instead.
    res = await asyncio.to_thread(
        container.exec_run, ["timeout", str(timeout), "wget", "-qO-", url], demux=False
    )
    return res.exit_code, res.output.decode(errors="replace")


def clients(container: Any) -> list[str]:
    """The client address of every request the container's httpd logged (httpd -v)."""
    logs = container.logs().decode(errors="replace")
    return re.findall(r"\[(?:::ffff:)?(\d+\.\d+\.\d+\.\d+)\]:\d+: response:", logs)


def settle(web: Sequence[Any], total: int) -> None:
    """Wait until the httpds have logged `total` requests between them (they log after answering)."""
    wait_for(lambda: sum(len(clients(c)) for c in web) >= total, timeout=10, message=f"{total} log lines")


def rule_handles(host: Host) -> dict[str, list[int]]:
    res = host.run(["nft", "-a", "-j", "list", "table", "ip", "atoll"])
    assert res.returncode == 0, res.stderr
    handles: dict[str, list[int]] = {}
    for obj in json.loads(res.stdout)["nftables"]:
        if "chain" in obj:
            handles.setdefault(obj["chain"]["name"], [])
        elif "rule" in obj:
            handles.setdefault(obj["rule"]["chain"], []).append(obj["rule"]["handle"])
    return handles


async def udp_ask(host: Host, ip: str, port: int) -> str:
    res = await asyncio.to_thread(host.run, [sys.executable, "-I", "-c", _UDP_ASK, ip, str(port)], 20)
    return res.stdout.strip() or res.stderr.strip()


# -- the test -------------------------------------------------------------------------------------------


async def test_cluster_and_external_ips_by_traffic(testbed_factory: Factory) -> None:
    bed = testbed_factory(2)
    h0, h1 = bed.hosts
    docker = h0.docker()
    web = [docker.containers.run("fedora/apache", detach=True, name=f"web-{i}") for i in range(2)]
    for c in web:
        c.reload()
    ips = [c.attrs["NetworkSettings"]["IPAddress"] for c in web]
    assert all(ip.startswith("172.31.0.") for ip in ips), ips
    for ip in ips:
        wait_for(lambda ip=ip: "Apache" in h0.http_get(f"http://{ip}/").body, 20, message=f"httpd {ip}")
    base = [len(clients(c)) for c in web]
    # Like kube-proxy, the proxy relies on conntrack seeing replies that stay on the bridge.
    bridge_nf = h0.run(["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"]).stdout.strip()
    assert bridge_nf == "1", "br_netfilter is missing, or bridge-nf-call-iptables is off"
    # kubelet's --hairpin-mode=hairpin-veth: with br_netfilter a pod's own DNATed packet is
    # bridged straight back to the port it came from, which a bridge only does in hairpin mode.
    hairpin = "for f in /sys/class/net/docker0/brif/*/hairpin_mode; do echo 1 > $f; done"
    assert h0.run(["sh", "-c", hairpin]).returncode == 0

    # A real node reaches the service range through its default route; the bed's hosts have
    # none, so give host 0 one for the range only, into a bridge without ports (this kernel has
    # no dummy links): whatever no rule DNATs is dropped there and never leaves the namespace.
    for argv in (
        ["ip", "link", "add", "svc0", "type", "bridge"],
        ["ip", "link", "set", "svc0", "up"],
        ["ip", "route", "add", "10.254.0.0/16", "dev", "svc0"],
    ):
        assert h0.run(argv).returncode == 0, argv

    # The UDP endpoint is a process on host 1 (busybox has no UDP server): a remote endpoint.
    echo = h1.spawn([sys.executable, "-c", _UDP_ECHO, "5353"], label="udp-echo")
    wait_for(lambda: "listening" in echo.log_tail(), timeout=10, message="udp echo")

    here = {h0.ip, DOCKER0}

    def objs(
        node: str, *, web_ips: Sequence[str] = ips
    ) -> list[workloads_pb2.Service | workloads_pb2.Endpoints]:
        return [
            service("web", CLUSTER_IP, 80, 80),
            endpoints("web", web_ips, node, 80),
            # v1beta1 publicIPs: host 0's own underlay address, port 8080 -> the pods' 80
            service("public", PUBLIC_IP, 8080, 80, external=[h0.ip, h1.ip]),
            endpoints("public", ips, node, 80),
            service("other", OTHER_IP, 80, 80),
            endpoints("other", ips[1:], node, 80),
            service("dns", UDP_IP, 53, 5353, udp=True),
            endpoints("dns", [h1.ip], h1.name, 5353, udp=True),
            service("empty", "10.254.0.30", 80, 80, udp=False),
            service("empty-udp", "10.254.0.30", 53, 53, udp=True),
        ]

    nft = NftNetfilter(AsyncioRunner(), command_prefix=["nsenter", f"--net={h0.netns_path}", "--"])
    proxy = ServiceProxy(nft, node_name=h0.name)
    try:
        report = await proxy.apply(services_state(1, objs(h0.name)), here)
        assert report.rebuilt and report.applied
        assert report.added == tuple(
            sorted(f"default/{n}" for n in ("web", "public", "other", "dns", "empty", "empty-udp"))
        )

        # From the host: the cluster IP answers, both endpoints get traffic.
        for _ in range(20):
            assert "Apache" in await get(h0, f"http://{CLUSTER_IP}/")
        settle(web, sum(base) + 20)
        hits = [len(clients(c)) - b for c, b in zip(web, base, strict=True)]
        assert sum(hits) == 20 and min(hits) > 0, f"one endpoint got everything: {hits}"
        # Host traffic is masqueraded: the pods see docker0's address.
        assert set(clients(web[0]) + clients(web[1])) == {DOCKER0}

        # From inside container 0: about half the requests land on itself (hairpin,
        # masqueraded), the rest on container 1, which sees container 0's own address.
        for _ in range(20):
            code, body = await exec_get(web[0], f"http://{CLUSTER_IP}/")
            assert code == 0 and "Apache" in body, body
        settle(web, sum(base) + 40)
        seen0, seen1 = clients(web[0]), clients(web[1])
        assert ips[0] not in seen0, "a hairpin connection was not masqueraded"
        assert ips[0] in seen1, "pod-to-service traffic was masqueraded"

        # The external IP on the node that owns it, from the other host: the endpoint is
        # local, so it sees the real client. host 1's address is not ours: no entry for it.
        for _ in range(6):
            assert "Apache" in await get(h1, f"http://{h0.ip}:8080/")
        settle(web, sum(base) + 46)
        assert h1.ip in clients(web[0]) + clients(web[1]), (
            "external traffic to a local endpoint was masqueraded"
        )
        assert f"{h1.ip} . tcp . 8080" not in report.script and f"{h0.ip} . tcp . 8080" in report.script

        # UDP, to an endpoint on another host, from the host (masqueraded to eth0's address).
        assert await udp_ask(h0, UDP_IP, 53) == f"ping from {h0.ip}"
        # No ready endpoints: refused, not a silent drop, for TCP and UDP alike.
        assert "Connection refused" in await get(h0, "http://10.254.0.30/", timeout=3)
        assert await udp_ask(h0, "10.254.0.30", 53) == "REFUSED"
        code, out = await exec_get(web[0], "http://10.254.0.30/")
        assert code != 0 and "refused" in out.lower(), out

        # Endpoints claimed by another node: external traffic to them is masqueraded (their
        # node would answer the client directly); pod traffic still is not.
        moved = await proxy.apply(services_state(2, objs("elsewhere")), here)
        assert moved.updated == ("default/other", "default/public", "default/web")
        n0, n1 = len(clients(web[0])), len(clients(web[1]))
        for _ in range(6):
            assert "Apache" in await get(h1, f"http://{h0.ip}:8080/")
        settle(web, n0 + n1 + 6)
        assert set(clients(web[0])[n0:] + clients(web[1])[n1:]) == {DOCKER0}
        n1 = len(clients(web[1]))
        for _ in range(6):
            assert (await exec_get(web[0], f"http://{OTHER_IP}/"))[0] == 0
        settle(web[1:], n1 + 6)
        assert set(clients(web[1])[n1:]) == {ips[0]}

        # Changing one service rewrites only its chains: every other chain keeps its rule handles.
        before = rule_handles(h0)
        st = services_state(3, objs("elsewhere", web_ips=ips[:1]))
        only_web = await proxy.apply(st, here)
        assert only_web.updated == ("default/web",), only_web
        assert all("/web/" in name for name in re.findall(r"ip atoll (\S+)", only_web.script))
        after = rule_handles(h0)
        assert {k: v for k, v in after.items() if "/web/" not in k} == {
            k: v for k, v in before.items() if "/web/" not in k
        }
        assert set(before) - set(after) == {f"ep-default/web/tcp/p__{ips[1]}/80"}
        for _ in range(6):
            assert "Apache" in await get(h0, f"http://{CLUSTER_IP}/")

        # The agent restarts: a new proxy reads the table and finds nothing to do.
        restarted = ServiceProxy(
            NftNetfilter(AsyncioRunner(), command_prefix=["nsenter", f"--net={h0.netns_path}", "--"]),
            node_name=h0.name,
        )
        again = await restarted.apply(st, here)
        assert not again.changed and len(again.kept) == 6, again
        assert rule_handles(h0) == after

        # Removing the service: it no longer answers (nothing is listening on the cluster IP).
        gone = await restarted.apply(services_state(4, objs("elsewhere")[2:]), here)
        assert gone.removed == ("default/web",)
        assert (await get(h0, f"http://{CLUSTER_IP}/", timeout=2)).startswith("ERROR")
        assert "Apache" in await get(h1, f"http://{h0.ip}:8080/")  # the others still do
    finally:
        await proxy.reset()
    assert h0.run(["nft", "list", "table", "ip", "atoll"]).returncode != 0


_BANNER = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
print("listening", flush=True)
while True:
    conn, _ = s.accept()
    conn.sendall(b"SSH-2.0-stand-in\r\n")
    conn.close()
"""


async def test_a_service_cannot_capture_sshd_on_a_node_address(testbed_factory: Factory) -> None:
    """CVE-2020-8554 on the node: an external IP on the node's own address, port 22, no endpoints.

    Unguarded, the proxy would reset every connection to the node's sshd; the
    agent's reserved ports keep it out of the ruleset (the coordinator refuses
    such a service first; this is the agent's own line of defence).
    """
    bed = testbed_factory(2, docker=False)
    h0, h1 = bed.hosts
    sshd = h0.spawn([sys.executable, "-I", "-c", _BANNER, "22"], label="sshd")
    wait_for(lambda: "listening" in sshd.log_tail(), timeout=10, message="sshd stand-in")

    def banner() -> str:
        try:
            with h1.connect((h0.ip, 22), timeout=3) as conn:
                return conn.recv(64).decode()
        except OSError as exc:
            return f"error: {exc}"

    assert banner().startswith("SSH-2.0"), banner()
    capture = services_state(1, [service("grab", CLUSTER_IP, 22, 2222, external=[h0.ip])])
    nft = NftNetfilter(AsyncioRunner(), command_prefix=["nsenter", f"--net={h0.netns_path}", "--"])
    guarded = ServiceProxy(nft, node_name=h0.name, reserved_ports=frozenset({22}))
    try:
        report = await guarded.apply(capture, {h0.ip})
        assert report.applied and any("reserved" in w for w in report.warnings), report.warnings
        assert banner().startswith("SSH-2.0"), banner()
        # The same state without the guard takes sshd's port: what the guard prevents.
        unguarded = ServiceProxy(nft, node_name=h0.name)
        await unguarded.apply(
            services_state(2, [service("grab", CLUSTER_IP, 22, 2222, external=[h0.ip])]), {h0.ip}
        )
        assert not banner().startswith("SSH-2.0"), "the unguarded proxy did not capture the port"
    finally:
        await guarded.reset()
