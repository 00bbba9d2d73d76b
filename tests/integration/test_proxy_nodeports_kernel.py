"""Node ports on a real kernel, proven by traffic between hosts of the test bed (no coordinator).

As in test_proxy_kernel: an apache container on host 0's docker0, a
ServiceState fed by hand to a real ServiceProxy whose nft runs in host 0's
namespace. Host 1 reaches the pod on host 0's address at the node port and the
pod sees host 1's address (a local endpoint: not masqueraded); host 0 reaches
its own node port (nat output, masqueraded); a node port without endpoints is
refused; a service back to ClusterIP no longer answers there. The
multi-node, coordinator-driven case is in test_walkthrough.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agent.execute import AsyncioRunner
from agent.proxy import NftNetfilter, ServiceProxy
from atoll.v1 import workloads_pb2
from tests.integration.test_proxy_kernel import (
    CLUSTER_IP,
    DOCKER0,
    clients,
    endpoints,
    get,
    root_namespace_untouched,
    service,
    services_state,
    settle,
)
from tests.integration.testbed import TestBed, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
__all__ = ["root_namespace_untouched"]  # the autouse fixture, in this module too

NODE_PORT = 30080
EMPTY_NODE_PORT = 30081


def node_port_service(name: str, cluster_ip: str, node_port: int) -> workloads_pb2.Service:
    svc = service(name, cluster_ip, 80, 80)
    svc.spec.type = workloads_pb2.SERVICE_TYPE_NODE_PORT
    svc.spec.ports[0].node_port = node_port
    return svc


async def test_node_ports_by_traffic(testbed_factory: Callable[..., TestBed]) -> None:
    bed = testbed_factory(2)
    h0, h1 = bed.hosts
    web = h0.docker().containers.run("fedora/apache", detach=True, name="np-web")
    web.reload()
    ip = web.attrs["NetworkSettings"]["IPAddress"]
    wait_for(lambda: "Apache" in h0.http_get(f"http://{ip}/").body, 20, message=f"httpd {ip}")
    base = len(clients(web))
    here = {h0.ip, DOCKER0, "127.0.0.1"}

    def objs(web_type: int = workloads_pb2.SERVICE_TYPE_NODE_PORT) -> list[object]:
        svc = node_port_service("web", CLUSTER_IP, NODE_PORT)
        svc.spec.type = web_type  # type: ignore[assignment]
        return [
            svc,
            endpoints("web", [ip], h0.name, 80),
            node_port_service("empty", "10.254.0.30", EMPTY_NODE_PORT),
        ]

    nft = NftNetfilter(AsyncioRunner(), command_prefix=["nsenter", f"--net={h0.netns_path}", "--"])
    proxy = ServiceProxy(nft, node_name=h0.name)
    try:
        report = await proxy.apply(services_state(1, objs()), here)  # type: ignore[arg-type]
        assert report.applied and f"{h0.ip} . tcp . {NODE_PORT}" in report.script
        assert "127.0.0.1" not in report.script  # never loopback

        # From another host to this node's address: the pod answers, and sees the client.
        for _ in range(4):
            assert "Apache" in await get(h1, f"http://{h0.ip}:{NODE_PORT}/")
        settle([web], base + 4)
        assert set(clients(web)[base:]) == {h1.ip}, "node port traffic to a local endpoint was masqueraded"

        # From the node itself, to its own address: served too, masqueraded like host traffic.
        assert "Apache" in await get(h0, f"http://{h0.ip}:{NODE_PORT}/")
        settle([web], base + 5)
        assert clients(web)[-1] == DOCKER0

        # No endpoints: refused at once, not a silent drop.
        assert "Connection refused" in await get(h1, f"http://{h0.ip}:{EMPTY_NODE_PORT}/", timeout=3)

        # Back to ClusterIP: the node port is gone from the table, and nothing answers there.
        plain = await proxy.apply(
            services_state(2, objs(workloads_pb2.SERVICE_TYPE_CLUSTER_IP)),  # type: ignore[arg-type]
            here,
        )
        assert plain.updated == ("default/web",)
        assert f"{h0.ip} . tcp . {NODE_PORT}" in plain.script and "delete element" in plain.script
        assert (await get(h1, f"http://{h0.ip}:{NODE_PORT}/", timeout=3)).startswith("ERROR")
    finally:
        await proxy.reset()
    assert h0.run(["nft", "list", "table", "ip", "atoll"]).returncode != 0
