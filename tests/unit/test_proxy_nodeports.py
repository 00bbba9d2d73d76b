"""Node ports in the proxy's rendered ruleset: every address of the node (but loopback), the
same service chain as the cluster IP, rejected without endpoints, applied through the fake."""

from __future__ import annotations

from agent.proxy import FakeNetfilter, ServiceProxy, TableState, diff, render, resolve
from agent.proxy.ruleset import NO_ENDPOINTS_MAP, REJECT_CHAIN, SERVICES_MAP
from atoll.v1 import workloads_pb2
from tests.unit.test_proxy import HERE, endpoints, service, state

NODE_PORT = workloads_pb2.SERVICE_TYPE_NODE_PORT


def node_port_service(name: str, cluster_ip: str, node_port: int) -> workloads_pb2.Service:
    svc = service(name, cluster_ip)
    svc.spec.type = NODE_PORT
    svc.spec.ports[0].node_port = node_port
    return svc


def test_a_node_port_on_every_address_of_the_node_to_the_service_chain() -> None:
    objs = [
        node_port_service("web", "10.254.0.10", 30080),
        endpoints("web", [("10.100.1.2", "h0"), ("10.100.2.2", "h1")]),
    ]
    (port,) = resolve(state(*objs), {*HERE, "127.0.0.1"}, "h0").ports
    assert (port.node_port, port.node_addresses) == (30080, ("10.100.1.1", "198.51.100.10"))
    rs = render([port])
    assert {k: e.target for k, e in rs.maps[SERVICES_MAP].items()} == {
        ("10.254.0.10", "tcp", 80): "svc-default/web/tcp/http",
        ("10.100.1.1", "tcp", 30080): "svc-default/web/tcp/http",
        ("198.51.100.10", "tcp", 30080): "svc-default/web/tcp/http",
    }
    # To a remote endpoint through a node port: masqueraded (the destination is not the
    # cluster IP), so that the answer comes back through this node.
    assert rs.chains["ep-default/web/tcp/http__10.100.2.2/80"].rules[1] == (
        "ip daddr != 10.254.0.10 meta mark set meta mark | 0x4000"
    )


def test_load_balancer_services_are_node_ports_and_cluster_ip_ones_have_none() -> None:
    lb = node_port_service("lb", "10.254.0.11", 30081)
    lb.spec.type = workloads_pb2.SERVICE_TYPE_LOAD_BALANCER
    plain = node_port_service("plain", "10.254.0.12", 30082)
    plain.spec.type = workloads_pb2.SERVICE_TYPE_CLUSTER_IP  # a stale node port is not served
    ports = {p.name: p for p in resolve(state(lb, plain), HERE).ports}
    assert ports["lb"].node_port == 30081 and ports["lb"].node_addresses
    assert (ports["plain"].node_port, ports["plain"].node_addresses) == (0, ())


def test_without_endpoints_a_node_port_is_rejected() -> None:
    rs = render(resolve(state(node_port_service("web", "10.254.0.10", 30080)), {"198.51.100.10"}).ports)
    assert {k: e.target for k, e in rs.maps[NO_ENDPOINTS_MAP].items()} == {
        ("10.254.0.10", "tcp", 80): REJECT_CHAIN,
        ("198.51.100.10", "tcp", 30080): REJECT_CHAIN,
    }


def test_a_reserved_port_is_never_a_node_port() -> None:
    resolved = resolve(
        state(node_port_service("grab", "10.254.0.10", 22)), HERE, reserved_ports=frozenset({22})
    )
    (port,) = resolved.ports
    assert (port.node_port, port.node_addresses) == (0, ())
    assert resolved.refused == (
        (
            "default/grab",
            "node port 22 is reserved for Atoll's daemons and sshd; served on the cluster IP only",
        ),
    )
    # A ClusterIP service has no node port to refuse, whatever the reserved ports hold.
    plain = service("plain", "10.254.0.11")
    assert resolve(state(plain), HERE, reserved_ports=frozenset({0, 22})).refused == ()


def test_the_node_port_as_an_nft_transaction_and_back() -> None:
    objs = [node_port_service("web", "10.254.0.10", 30080), endpoints("web", [("10.100.1.2", "h0")])]
    rs = render(resolve(state(*objs), {"198.51.100.10"}, "h0").ports)
    plan = diff(rs, TableState.absent())
    assert (
        'add element ip atoll services { 10.254.0.10 . tcp . 80 comment "default/web" : goto svc-default/web/tcp/http, '
        '198.51.100.10 . tcp . 30080 comment "default/web" : goto svc-default/web/tcp/http }'
    ) in plan.commands
    # Dropping the node port (the type went back to ClusterIP) deletes its element alone.
    objs[0].spec.type = workloads_pb2.SERVICE_TYPE_CLUSTER_IP
    after = diff(render(resolve(state(*objs), {"198.51.100.10"}, "h0").ports), TableState.from_ruleset(rs))
    assert after.commands == ("delete element ip atoll services { 198.51.100.10 . tcp . 30080 }",)


async def test_the_proxy_applies_node_ports_through_the_driver() -> None:
    nf = FakeNetfilter()
    proxy = ServiceProxy(nf, node_name="h0")
    objs = [node_port_service("web", "10.254.0.10", 30080), endpoints("web", [("10.100.1.2", "h0")])]
    report = await proxy.apply(state(*objs), {"198.51.100.10"})
    assert report.applied and report.added == ("default/web",)
    assert "198.51.100.10 . tcp . 30080" in nf.scripts[-1]
    # The node gains an address: the node port follows on the next push.
    again = await proxy.apply(state(*objs, generation=2), {"198.51.100.10", "198.51.100.20"})
    assert again.updated == ("default/web",)
    assert "198.51.100.20 . tcp . 30080" in nf.scripts[-1]
