"""External IPs by policy (CVE-2020-8554), against a real coordinator over mutual TLS.

An operator's service on a node's own address could capture that node's sshd,
agent or coordinator port in nat prerouting. Non-admins get external IPs only
inside the configured ranges; nobody gets a daemon's or sshd's port on one.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from atoll import errors, kinds
from atoll.v1 import workloads_pb2
from coordinator.client.api import Client
from tests.functional.harness import Cluster, eventually
from tests.functional.test_security import cert_config

NODE = kinds.by_name("Node")
SERVICE = kinds.by_name("Service")


def service(name: str, port: int, *external: str) -> workloads_pb2.Service:
    svc = workloads_pb2.Service()
    svc.metadata.name = name
    svc.spec.selector["app"] = name
    svc.spec.ports.add(port=port, target_port=8080)
    svc.spec.external_ips.extend(external)
    return svc


@pytest.fixture
async def ranged(tmp_path: pathlib.Path) -> AsyncIterator[Cluster]:
    c = await Cluster(tmp_path, service_external_ip_cidrs=["198.51.100.0/25"]).start()
    try:
        yield c
    finally:
        await c.stop()


async def test_by_default_only_admins_set_external_ips(secure: Cluster) -> None:
    assert secure.client is not None
    async with Client(config=cert_config(secure, "olga", "atoll:operators")) as op:
        await op.create(service("plain", 80))  # no external IPs: fine
        with pytest.raises(
            errors.PermissionDenied, match=r"spec\.externalIPs\[0\]: 198\.51\.100\.10 is outside"
        ):
            await op.create(service("grab", 8080, "198.51.100.10"))
    await secure.client.create(service("vip", 8080, "198.51.100.10"))


async def test_no_one_takes_sshd_or_a_daemon_port_on_an_external_ip(secure: Cluster) -> None:
    assert secure.client is not None
    node = await secure.add_node("node-a")

    async def agent_port() -> int:
        got = await secure.client.get(NODE, "", "node-a")  # type: ignore[union-attr]
        return int(got.status.agent_port)  # type: ignore[attr-defined]

    port = await eventually(agent_port, what="the agent's port on its Node")
    assert node is not None and port > 0
    for taken in (22, secure.coordinator.port, secure.coordinator.token_port, port):
        with pytest.raises(errors.InvalidArgument, match=r"spec\.ports\[0\]\.port.*reserved"):
            await secure.client.create(service(f"grab-{taken}", taken, "198.51.100.10"))
    items, _ = await secure.client.list(SERVICE)
    assert [s.metadata.name for s in items] == []  # type: ignore[attr-defined]
    await secure.client.create(service("ssh-on-cluster-ip", 22))  # the cluster IP alone is no capture


async def test_non_admins_inside_the_configured_ranges(ranged: Cluster) -> None:
    assert ranged.client is not None
    async with Client(config=cert_config(ranged, "olga", "atoll:operators")) as op:
        await op.create(service("inside", 8080, "198.51.100.7"))
        with pytest.raises(errors.PermissionDenied, match=r"198\.51\.100\.0/25"):
            await op.create(service("outside", 8080, "198.51.100.200"))
        # An admin's service on any address: an operator may still change its selector...
        await ranged.client.create(service("admins", 8080, "203.0.113.9"))
        svc = await op.get(SERVICE, "default", "admins")
        svc.spec.selector["tier"] = "web"  # type: ignore[attr-defined]
        await op.update(svc)
        # ...but not move it to another address outside the ranges.
        svc = await op.get(SERVICE, "default", "admins")
        svc.spec.external_ips.append("203.0.113.10")  # type: ignore[attr-defined]
        with pytest.raises(errors.PermissionDenied, match=r"spec\.externalIPs\[0\]"):
            await op.update(svc)


async def test_the_agent_refuses_a_reserved_port_that_got_past_the_api_and_says_so(cluster: Cluster) -> None:
    """Defence in depth on the node: a capture of sshd's port written straight into the store."""
    client, registry = cluster.client, cluster.coordinator.registry
    assert client is not None and registry is not None
    node = await cluster.add_node("node-a")
    address = "198.51.100.10"
    node.agent.metrics.local_addresses = {address}  # type: ignore[attr-defined]  # the node's own address
    grab = service("grab", 22, address)
    grab.metadata.namespace = "default"
    grab.spec.cluster_ip = "10.254.9.22"
    await registry.create(grab)  # the API would refuse it

    async def events() -> list[str]:
        items, _ = await client.list(kinds.by_name("Event"))
        return [e.message for e in items if e.reason == "FailedProgramService"]  # type: ignore[attr-defined]

    (message,) = await eventually(events, what="the agent's event about the reserved port")
    assert "port 22 on external IPs" in message and "reserved" in message
    assert node.netfilter.scripts and all(address not in script for script in node.netfilter.scripts)
