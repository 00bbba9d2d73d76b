"""Sandbox networks built by the agent (`--sandbox-network agent`) on a real engine and kernel.

One test-bed host: dockerd, the coordinator and the agent as real processes,
pods on an engine network whose range is the lower half of its subnet. The
agent builds the other pods' networks itself (a veth through pyroute2); pods
with host ports keep the engine's.
"""

from __future__ import annotations

import ipaddress
import signal
from collections.abc import Callable

import docker

from agent.network.sandbox import host_ifname
from atoll.v1 import pod_pb2
from coordinator.client.api import Client
from tests.integration.cluster import pinned_pod, start_cluster
from tests.integration.daemons import (
    POD,
    AgentProcess,
    CoordinatorProcess,
    eventually,
    node_ready,
    pod,
    wait_running,
)
from tests.integration.testbed import TestBed
from tests.integration.testbed.host import sh

NETWORK = "atoll-pods"
SUBNET, ENGINE_RANGE, GATEWAY = "172.27.0.0/24", "172.27.0.0/25", "172.27.0.1"
SERVE = "echo hello > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"


def _pod(name: str, script: str, host_port: int = 0) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.spec.termination_grace_period_seconds = 1
    c = p.spec.containers.add(name="main", image="atoll/busybox", command=["sh", "-c", script])
    if host_port:
        c.ports.add(container_port=8080, host_port=host_port)
    return p


async def test_the_agent_builds_pod_networks_that_survive_its_restart(
    testbed_factory: Callable[[int], TestBed],
) -> None:
    bed = testbed_factory(1)
    host = bed.hosts[0]
    engine = host.docker()
    engine.networks.create(
        NETWORK,
        driver="bridge",
        options={"com.docker.network.bridge.name": "atollpods0"},
        ipam=docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet=SUBNET, gateway=GATEWAY, iprange=ENGINE_RANGE)]
        ),
    )
    coordinator = CoordinatorProcess(host, host.dir / "coordinator").start()
    extra = ("--sandbox-network", "agent", "--pod-network", NETWORK)
    agent = AgentProcess(host, "127.0.0.1:6443", host.dir / "agent", "node-1", extra).start()
    async with Client(coordinator.server) as c:
        await eventually(lambda: node_ready(c, "node-1"), timeout=60, what="node-1 Ready")
        await c.create(_pod("server", SERVE))
        await c.create(_pod("client", "trap 'exit 0' TERM; while true; do sleep 1; done"))
        await c.create(_pod("published", SERVE, host_port=18080))
        server = await wait_running(c, "server")
        client = await wait_running(c, "client")
        published = await wait_running(c, "published")

        # The agent's pods have addresses from the upper half, the engine's pod from its range.
        agent_share = ipaddress.ip_network(SUBNET)
        for p in (server, client):
            address = ipaddress.ip_address(p.status.pod_ip)
            assert address in agent_share and address not in ipaddress.ip_network(ENGINE_RANGE), p.status
        assert ipaddress.ip_address(published.status.pod_ip) in ipaddress.ip_network(ENGINE_RANGE)
        infra = {
            ct.labels["io.atoll.pod.name"]: ct
            for ct in engine.containers.list(filters={"label": "io.atoll.container.name=POD"})
        }
        assert infra["server"].attrs["HostConfig"]["NetworkMode"] == "none"
        assert infra["server"].labels["io.atoll.sandbox.network"] == NETWORK
        assert infra["published"].attrs["HostConfig"]["NetworkMode"] == NETWORK

        # Pod to pod across the bridge, both ways of building; the host end is on the bridge.
        app = {
            ct.labels["io.atoll.pod.name"]: ct
            for ct in engine.containers.list(filters={"label": "io.atoll.container.name=main"})
        }
        for target in (server.status.pod_ip, published.status.pod_ip):
            out = app["client"].exec_run(["timeout", "5", "wget", "-qO-", f"http://{target}:8080/index.html"])
            assert out.exit_code == 0 and out.output.strip() == b"hello", (target, out)
        out = app["published"].exec_run(
            ["timeout", "5", "wget", "-qO-", f"http://{server.status.pod_ip}:8080/index.html"]
        )
        assert out.output.strip() == b"hello", out
        # What the engine would give: /etc/hosts names the pod; no IPv6 on the IPv4 network.
        hosts = app["server"].exec_run(["cat", "/etc/hosts"]).output.decode()
        assert f"{server.status.pod_ip}\tserver" in hosts, hosts
        link6 = app["server"].exec_run(["cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"]).output
        assert link6.strip() == b"1", link6
        mac = app["server"].exec_run(["cat", "/sys/class/net/eth0/address"]).output.decode().strip()
        assert mac == "02:42:" + ":".join(f"{int(b):02x}" for b in server.status.pod_ip.split("."))
        veth = host_ifname(infra["server"].id)
        link = sh(["ip", "-n", host.name, "-o", "link", "show", veth]).stdout
        assert "master atollpods0" in link and "state UP" in link

        # kill -9: nothing is rebuilt or restarted, the pods keep their addresses.
        before = {ct.name: ct.id for ct in engine.containers.list(all=True)}
        agent.kill(signal.SIGKILL)
        agent.start()
        await eventually(lambda: node_ready(c, "node-1"), what="agent back")
        await eventually(
            lambda: _logged(agent, "the coordinator's assignment at generation"), what="assignment in force"
        )
        assert {ct.name: ct.id for ct in engine.containers.list(all=True)} == before
        assert (await pod(c, "server")).status.pod_ip == server.status.pod_ip
        out = app["client"].exec_run(
            ["timeout", "5", "wget", "-qO-", f"http://{server.status.pod_ip}:8080/index.html"]
        )
        assert out.output.strip() == b"hello", out

        # The pod goes: its veth goes with its namespace, its address comes back to the pool.
        await c.delete(POD, "default", "server")

        async def veth_gone() -> bool:
            return sh(["ip", "-n", host.name, "link", "show", veth], check=False).returncode != 0

        await eventually(veth_gone, timeout=60, what="the server's veth gone")
        await c.create(_pod("again", SERVE))
        again = await wait_running(c, "again")
        assert again.status.pod_ip == server.status.pod_ip


async def _logged(agent: AgentProcess, text: str) -> bool:
    return agent.process is not None and text in agent.process.read_log()


async def test_on_the_overlay_the_agent_builds_pod_networks_in_its_half_of_the_lease(
    testbed_factory: Callable[..., TestBed],
) -> None:
    """The overlay's engine network leaves the upper half of each node's lease to the agent, and
    the default (`auto`) builds pods there: pods on two hosts reach each other over VXLAN by pod IP."""
    two = await start_cluster(testbed_factory, 2)
    try:
        c = two.client
        for i in range(2):
            await c.create(pinned_pod(f"web-{i}", two.node(i)))
        pods = [await wait_running(c, f"web-{i}") for i in range(2)]
        for i, p in enumerate(pods):
            network = two.workers[i].docker().networks.get("atoll").attrs
            (config,) = network["IPAM"]["Config"]
            lease = ipaddress.ip_network(config["Subnet"])
            assert config["IPRange"] == str(next(lease.subnets(prefixlen_diff=1)))
            address = ipaddress.ip_address(p.status.pod_ip)
            assert address in lease and address not in ipaddress.ip_network(config["IPRange"]), p.status
        for i, j in ((0, 1), (1, 0)):
            code, out = await two.pod_exec(
                i, pods[i], "timeout", "5", "wget", "-qO-", f"http://{pods[j].status.pod_ip}/"
            )
            assert code == 0 and "Apache" in out, (i, j, out)
    finally:
        await two.close()
