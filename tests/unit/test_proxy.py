"""The service proxy on the recording fake: resolving, rendering, diffs, restarts, failures, noop."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.execute import Call, RecordingRunner
from agent.proxy import (
    FakeNetfilter,
    NetfilterError,
    NftNetfilter,
    ServiceProxy,
    TableState,
    diff,
    render,
    resolve,
)
from agent.proxy.model import Endpoint
from agent.proxy.ruleset import NO_ENDPOINTS_MAP, REJECT_CHAIN, SERVICES_MAP, fingerprint
from atoll.v1 import meta_pb2, node_api_pb2, workloads_pb2

PROTO = {"tcp": meta_pb2.PROTOCOL_TCP, "udp": meta_pb2.PROTOCOL_UDP}
HERE = {"198.51.100.10", "10.100.1.1"}  # this node's addresses
DATA = Path(__file__).parent / "data"

Port = tuple[str, str, int, int]  # name, protocol, port, target port


def service(
    name: str,
    cluster_ip: str,
    ports: Sequence[Port] = (("http", "tcp", 80, 80),),
    *,
    external: Sequence[str] = (),
    ns: str = "default",
    affinity: str = "",
) -> workloads_pb2.Service:
    svc = workloads_pb2.Service()
    svc.metadata.namespace, svc.metadata.name = ns, name
    svc.spec.cluster_ip = cluster_ip
    svc.spec.external_ips.extend(external)
    svc.spec.session_affinity = affinity
    for pname, proto, port, target in ports:
        svc.spec.ports.add(name=pname, protocol=PROTO[proto], port=port, target_port=target)
    return svc


def endpoints(
    name: str,
    addresses: Sequence[tuple[str, str]],
    ports: Sequence[tuple[str, int, str]] = (("http", 80, "tcp"),),
    *,
    not_ready: Sequence[str] = (),
    ns: str = "default",
) -> workloads_pb2.Endpoints:
    eps = workloads_pb2.Endpoints()
    eps.metadata.namespace, eps.metadata.name = ns, name
    subset = eps.subsets.add()
    for ip, node in addresses:
        subset.addresses.add(ip=ip, node_name=node)
    for ip in not_ready:
        subset.not_ready_addresses.add(ip=ip, node_name="h0")
    for pname, port, proto in ports:
        subset.ports.add(name=pname, port=port, protocol=PROTO[proto])
    return eps


def state(
    *objs: workloads_pb2.Service | workloads_pb2.Endpoints, generation: int = 1
) -> node_api_pb2.ServiceState:
    st = node_api_pb2.ServiceState(generation=generation)
    for obj in objs:
        (st.services if isinstance(obj, workloads_pb2.Service) else st.endpoints).append(obj)
    return st


def three(
    generation: int = 1, b_endpoints: Sequence[str] = ("10.100.1.3", "10.100.2.3")
) -> node_api_pb2.ServiceState:
    """Services a, b, c with two endpoints each (one here on h0, one on h1)."""
    objs: list[workloads_pb2.Service | workloads_pb2.Endpoints] = []
    for i, name in enumerate("abc"):
        objs.append(service(name, f"10.254.0.{10 + i}"))
        ips = b_endpoints if name == "b" else (f"10.100.1.{2 + 2 * i}", f"10.100.2.{2 + 2 * i}")
        objs.append(endpoints(name, [(ip, "h0" if ".1." in ip else "h1") for ip in ips]))
    return state(*objs, generation=generation)


def chains_named(script: str) -> set[str]:
    """Every service or endpoint chain the script mentions, as a subject or a goto target."""
    return set(re.findall(r"\b((?:svc|ep)-\S+?)(?=[ ,]|$)", script, re.M))


def chains_written(script: str) -> set[str]:
    """The chains the script creates, flushes, deletes or adds rules to."""
    return set(re.findall(r"^(?:add|flush|delete) (?:chain|rule) ip atoll (\S+)", script, re.M))


# -- resolving the API objects ---------------------------------------------------------------------


def test_named_target_ports_come_resolved_in_endpoints() -> None:
    # The service targets a named container port; the endpoints carry its number under the
    # service port's name, and that is all the proxy uses.
    svc = service("web", "10.254.0.10", [("http", "tcp", 80, 0), ("admin", "tcp", 9000, 0)])
    svc.spec.ports[0].target_port_name = "www"
    eps = endpoints("web", [("10.100.1.2", "h0")], [("http", 8080, "tcp"), ("admin", 9090, "tcp")])
    ports = resolve(state(svc, eps), HERE, "h0").ports
    assert [(p.port_name, p.port, p.endpoints) for p in ports] == [
        ("http", 80, (Endpoint("10.100.1.2", 8080, local=True),)),
        ("admin", 9000, (Endpoint("10.100.1.2", 9090, local=True),)),
    ]


def test_only_ready_addresses_of_matching_ports_and_protocols() -> None:
    svc = service("dns", "10.254.0.2", [("dns", "udp", 53, 53), ("dns-tcp", "tcp", 53, 53)])
    eps = endpoints(
        "dns",
        [("10.100.2.5", "h1"), ("10.100.2.5", "h1"), ("10.100.1.9", "h0")],
        [("dns", 5353, "udp"), ("dns-tcp", 5353, "udp")],  # the tcp port's number is listed as udp
        not_ready=["10.100.1.7"],
    )
    udp, tcp = resolve(state(svc, eps), HERE, "h0").ports
    assert udp.protocol == "udp"
    assert udp.endpoints == (Endpoint("10.100.1.9", 5353, True), Endpoint("10.100.2.5", 5353, False))
    assert tcp.endpoints == ()


def test_external_ips_only_on_the_nodes_that_own_them() -> None:
    svc = service("web", "10.254.0.10", external=["198.51.100.11", "198.51.100.10"])
    (port,) = resolve(state(svc), HERE).ports
    assert port.external_ips == ("198.51.100.10",)
    (port,) = resolve(state(svc), {"198.51.100.12"}).ports
    assert port.external_ips == ()


def test_reserved_ports_are_never_captured_on_external_ips() -> None:
    """CVE-2020-8554 on the node's side: sshd's and the daemons' ports stay theirs."""
    svc = service(
        "grab",
        "10.254.0.10",
        [("ssh", "tcp", 22, 2222), ("web", "tcp", 8080, 80)],
        external=["198.51.100.10"],
    )
    resolved = resolve(state(svc), HERE, reserved_ports=frozenset({22, 10250}))
    by_port = {p.port: p for p in resolved.ports}
    assert by_port[22].external_ips == () and by_port[8080].external_ips == ("198.51.100.10",)
    why = "port 22 on external IPs 198.51.100.10 is reserved for Atoll's daemons and sshd; served on the cluster IP only"
    assert resolved.refused == (("default/grab", why),)  # reported by the agent as an event


async def test_the_proxy_writes_no_rule_for_a_reserved_port_on_an_external_ip() -> None:
    svc = service("grab", "10.254.0.10", [("ssh", "tcp", 22, 2222)], external=["198.51.100.10"])
    nf = FakeNetfilter()
    report = await ServiceProxy(nf, node_name="h0", reserved_ports=frozenset({22})).apply(state(svc), HERE)
    assert report.applied and "198.51.100.10" not in nf.scripts[-1]
    assert "10.254.0.10" in nf.scripts[-1]
    unguarded = FakeNetfilter()
    await ServiceProxy(unguarded, node_name="h0").apply(state(svc), HERE)
    assert "198.51.100.10" in unguarded.scripts[-1]  # what the guard prevents


def test_headless_unallocated_and_odd_services_are_skipped() -> None:
    objs = [
        service("headless", "None"),
        service("pending", ""),
        service("six", "fd00::1"),
        service("ok", "10.254.0.3"),
        service("affine", "10.254.0.4", affinity="ClientIP"),
    ]
    objs.append(service("x" * 130, "10.254.0.5"))  # its chain names would be too long for nft
    objs.append(service("Caps", "10.254.0.6"))
    resolved = resolve(state(*objs), HERE)
    assert [p.name for p in resolved.ports] == ["affine", "ok"]
    assert sum("not usable" in w for w in resolved.warnings) == 2
    assert any("not IPv4" in w for w in resolved.warnings)
    assert resolved.affinity_ignored == ("default/affine",)


# -- rendering ---------------------------------------------------------------------------------------


def test_endpoints_are_picked_with_equal_odds() -> None:
    eps = [(f"10.100.1.{i}", "h0") for i in range(2, 5)]
    rs = render(resolve(state(service("web", "10.254.0.10"), endpoints("web", eps)), HERE).ports)
    svc = rs.chains["svc-default/web/tcp/http"]
    assert svc.rules[0] == "fib saddr type local meta mark set meta mark | 0x4000"
    assert svc.rules[1] == (
        "numgen random mod 3 vmap { 0 : goto ep-default/web/tcp/http__10.100.1.2/80, "
        "1 : goto ep-default/web/tcp/http__10.100.1.3/80, 2 : goto ep-default/web/tcp/http__10.100.1.4/80 }"
    )
    assert rs.maps[SERVICES_MAP][("10.254.0.10", "tcp", 80)].target == "svc-default/web/tcp/http"
    assert rs.maps[NO_ENDPOINTS_MAP] == {}


def test_masquerade_marks() -> None:
    # Local endpoint: hairpin only. Remote endpoint: hairpin, and anything that did not come to
    # the cluster IP (i.e. came to an external IP). Postrouting masquerades marked packets only.
    objs = [
        service("web", "10.254.0.10", [("http", "udp", 53, 53)], external=["198.51.100.10"]),
        endpoints("web", [("10.100.1.2", "h0"), ("10.100.2.2", "h1")], [("http", 5353, "udp")]),
    ]
    rs = render(resolve(state(*objs), HERE, "h0").ports)
    assert rs.chains["ep-default/web/udp/http__10.100.1.2/5353"].rules == (
        "ip saddr 10.100.1.2 meta mark set meta mark | 0x4000",
        "meta l4proto udp dnat to 10.100.1.2:5353",
    )
    assert rs.chains["ep-default/web/udp/http__10.100.2.2/5353"].rules == (
        "ip saddr 10.100.2.2 meta mark set meta mark | 0x4000",
        "ip daddr != 10.254.0.10 meta mark set meta mark | 0x4000",
        "meta l4proto udp dnat to 10.100.2.2:5353",
    )
    assert set(rs.maps[SERVICES_MAP]) == {("10.254.0.10", "udp", 53), ("198.51.100.10", "udp", 53)}
    assert rs.chains["nat-postrouting"].rules == (
        "meta mark & 0x4000 == 0 return",
        "meta mark set meta mark ^ 0x4000",
        "masquerade fully-random",
    )


def test_no_ready_endpoints_reject() -> None:
    objs = [
        service("web", "10.254.0.10", external=["198.51.100.10"]),
        endpoints("web", [], not_ready=["10.100.1.2"]),
    ]
    rs = render(resolve(state(*objs), HERE).ports)
    assert not any(name.startswith(("svc-", "ep-")) for name in rs.chains)
    assert {k: e.target for k, e in rs.maps[NO_ENDPOINTS_MAP].items()} == {
        ("10.254.0.10", "tcp", 80): REJECT_CHAIN,
        ("198.51.100.10", "tcp", 80): REJECT_CHAIN,
    }
    assert rs.chains[REJECT_CHAIN].rules == (
        "meta l4proto tcp reject with tcp reset",
        "reject with icmp type port-unreachable",
    )


def test_two_services_on_one_address_and_port() -> None:
    objs = [
        service("b", "10.254.0.11", external=["198.51.100.10"]),
        service("a", "10.254.0.10", external=["198.51.100.10"]),
    ]
    rs = render(resolve(state(*objs), HERE).ports)
    assert rs.maps[NO_ENDPOINTS_MAP][("198.51.100.10", "tcp", 80)].owner == "default/a"
    assert rs.warnings == ("default/b: 198.51.100.10 . tcp . 80 is already served by default/a",)


# -- applying on the fake -----------------------------------------------------------------------------


async def test_first_apply_then_nothing_to_do() -> None:
    nf = FakeNetfilter()
    proxy = ServiceProxy(nf, node_name="h0")
    report = await proxy.apply(three(), HERE)
    assert report.added == ("default/a", "default/b", "default/c")
    assert report.rebuilt and report.applied
    assert len(nf.scripts) == 1 and nf.lists == 1
    again = await proxy.apply(three(2), HERE)
    assert again.kept == ("default/a", "default/b", "default/c")
    assert not again.changed and len(nf.scripts) == 1 and nf.lists == 1  # no kernel call at all


async def test_updating_one_service_touches_only_it() -> None:
    nf = FakeNetfilter()
    proxy = ServiceProxy(nf, node_name="h0")
    await proxy.apply(three(), HERE)
    handles = nf.rule_handles()
    report = await proxy.apply(three(2, b_endpoints=("10.100.1.3", "10.100.2.9", "10.100.2.10")), HERE)
    assert report.updated == ("default/b",) and report.kept == ("default/a", "default/c")
    # The transaction names b's chains only, and no map element at all (b's keys did not move).
    assert all("/b/" in name for name in chains_named(report.script)), report.script
    assert "element" not in report.script
    after = nf.rule_handles()
    for name, rules in handles.items():
        if "/b/" not in name:
            assert after[name] == rules, name  # untouched: same rules, same handles
    assert "ep-default/b/tcp/http__10.100.2.3/80" not in after
    assert len(after["ep-default/b/tcp/http__10.100.2.10/80"]) == 3  # remote: hairpin + external mark


async def test_adding_and_removing_one_service() -> None:
    nf = FakeNetfilter()
    proxy = ServiceProxy(nf)
    await proxy.apply(three(), HERE)
    handles = nf.rule_handles()
    st = three(2)
    st.services.append(service("d", "10.254.0.20", [("dns", "udp", 53, 53)]))
    st.endpoints.append(endpoints("d", [("10.100.3.3", "h2")], [("dns", 53, "udp")]))
    added = await proxy.apply(st, HERE)
    assert added.added == ("default/d",) and added.kept == ("default/a", "default/b", "default/c")
    assert chains_named(added.script) == {"svc-default/d/udp/dns", "ep-default/d/udp/dns__10.100.3.3/53"}
    assert 'add element ip atoll services { 10.254.0.20 . udp . 53 comment "default/d"' in added.script
    removed = await proxy.apply(three(3), HERE)
    assert removed.removed == ("default/d",) and not removed.updated
    assert chains_named(removed.script) == chains_named(added.script)
    assert "delete element ip atoll services { 10.254.0.20 . udp . 53 }" in removed.script
    assert nf.rule_handles() == handles


async def test_endpoints_going_away_and_coming_back() -> None:
    nf = FakeNetfilter()
    proxy = ServiceProxy(nf)
    await proxy.apply(three(), HERE)
    st = three(2)
    del st.endpoints[1]  # b has no Endpoints object any more
    gone = await proxy.apply(st, HERE)
    assert gone.updated == ("default/b",)
    assert nf.elements(NO_ENDPOINTS_MAP) == {("10.254.0.11", "tcp", 80): REJECT_CHAIN}
    assert ("10.254.0.11", "tcp", 80) not in nf.elements(SERVICES_MAP)
    assert not any("/b/" in name for name in nf.rule_handles())
    back = await proxy.apply(three(3), HERE)
    assert back.updated == ("default/b",) and nf.elements(NO_ENDPOINTS_MAP) == {}


async def test_cluster_ip_moving_to_another_service_swaps_the_element() -> None:
    nf = FakeNetfilter()
    proxy = ServiceProxy(nf)
    await proxy.apply(three(), HERE)
    st = three(2)
    st.services[0].spec.cluster_ip = "10.254.0.99"  # a leaves 10.254.0.10 ...
    st.services[2].spec.cluster_ip = "10.254.0.10"  # ... and c takes it over
    report = await proxy.apply(st, HERE)
    assert report.updated == ("default/a", "default/c")
    assert nf.elements(SERVICES_MAP)[("10.254.0.10", "tcp", 80)] == "svc-default/c/tcp/http"


async def test_restart_keeps_what_is_right_and_repairs_the_rest() -> None:
    nf = FakeNetfilter()
    await ServiceProxy(nf, node_name="h0").apply(three(), HERE)
    handles = nf.rule_handles()
    assert nf.table is not None
    # Behind the proxy's back: a's chain loses a rule, a stray chain appears.
    nf.table.chains["svc-default/a/tcp/http"].rules.pop()
    await nf.apply("add chain ip atoll svc-default/gone/tcp/http\n")
    restarted = ServiceProxy(nf, node_name="h0")
    report = await restarted.apply(three(2), HERE)
    assert nf.lists == 2  # once per proxy: the new one read the table it found
    assert report.updated == ("default/a",) and report.removed == ("default/gone",)
    assert report.kept == ("default/b", "default/c") and not report.rebuilt
    assert chains_written(report.script) == {"svc-default/a/tcp/http", "svc-default/gone/tcp/http"}
    after = nf.rule_handles()
    assert {n: h for n, h in after.items() if "/a/" not in n} == {
        n: h for n, h in handles.items() if "/a/" not in n
    }


async def test_broken_fixed_part_rebuilds_the_table() -> None:
    nf = FakeNetfilter()
    await nf.apply(
        "add table ip atoll\n"
        "add map ip atoll services { type ipv4_addr . inet_service : verdict; }\n"
        "add chain ip atoll nat-output { type nat hook output priority 0; policy accept; }\n"
    )
    report = await ServiceProxy(nf).apply(three(), HERE)
    assert report.rebuilt and report.script.startswith("delete table ip atoll\nadd table ip atoll\n")
    assert nf.table is not None and nf.table.chains["nat-output"].hook == ("nat", "output", -110, "accept")


async def test_a_failed_apply_reads_the_table_again() -> None:
    nf = FakeNetfilter()
    proxy = ServiceProxy(nf)
    await proxy.apply(three(), HERE)
    nf.fail_next = "Error: Could not process rule: Cannot allocate memory"
    # Retried at once, service by service, against the table as read again.
    retried = await proxy.apply(three(2, b_endpoints=("10.100.1.3",)), HERE)
    assert nf.lists == 2 and retried.failed == () and len(nf.scripts) == 3
    assert nf.chain_rules("svc-default/b/tcp/http")[-1] == "goto ep-default/b/tcp/http__10.100.1.3/80"
    assert not (await proxy.apply(three(3, b_endpoints=("10.100.1.3",)), HERE)).changed


async def test_noop_writes_nothing_but_reports_increments() -> None:
    nf = FakeNetfilter()
    proxy = ServiceProxy(nf, noop=True)
    first = await proxy.apply(three(), HERE)
    assert first.rebuilt and first.script and not first.applied
    second = await proxy.apply(three(2, b_endpoints=("10.100.1.3",)), HERE)
    assert second.updated == ("default/b",) and not second.applied
    assert nf.scripts == [] and nf.table is None
    await proxy.reset()
    assert nf.scripts == []


async def test_reset_removes_the_table_whether_or_not_it_exists() -> None:
    nf = FakeNetfilter()
    proxy = ServiceProxy(nf)
    await proxy.reset()
    await proxy.apply(three(), HERE)
    await proxy.reset()
    assert nf.table is None
    assert (await proxy.apply(three(2), HERE)).rebuilt


async def test_client_ip_affinity_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    proxy = ServiceProxy(FakeNetfilter())
    st = state(service("sticky", "10.254.0.5", affinity="ClientIP"))
    await proxy.apply(st, HERE)
    await proxy.apply(st, HERE)
    assert sum("sessionAffinity ClientIP is not supported" in r.message for r in caplog.records) == 1


# -- reading what real nft prints ---------------------------------------------------------------------


def real_dump_state() -> node_api_pb2.ServiceState:
    """The state that was applied with nft 1.0.6 to make data/nft_list_table_atoll.json."""
    web = service("web", "10.254.0.10", [("http", "tcp", 80, 80), ("ext", "tcp", 8080, 80)])
    web.spec.external_ips.append("198.51.100.10")
    web_eps = endpoints(
        "web", [("172.31.0.2", "h0"), ("172.31.0.3", "h0")], [("http", 80, "tcp"), ("ext", 80, "tcp")]
    )
    dns = service("dns", "10.254.0.2", [("dns", "udp", 53, 53)], ns="kube-system")
    dns_eps = endpoints("dns", [("10.100.2.5", "h1")], [("dns", 5353, "udp")], ns="kube-system")
    empty = service("empty", "10.254.0.11", [("dns", "udp", 53, 0)])
    return state(web, empty, dns, web_eps, dns_eps)


def test_parses_real_nft_json_into_exactly_what_was_rendered() -> None:
    doc = json.loads((DATA / "nft_list_table_atoll.json").read_text())
    actual = TableState.from_json(doc)
    desired = render(resolve(real_dump_state(), {"198.51.100.10"}, "h0").ports)
    assert actual == TableState.from_ruleset(desired)
    assert not diff(desired, actual)
    assert actual.owners() == {"default/web", "default/empty", "kube-system/dns"}


def test_rule_comments_are_fingerprints_of_the_rule_text() -> None:
    doc = json.loads((DATA / "nft_list_table_atoll.json").read_text())
    comments = [o["rule"]["comment"] for o in doc["nftables"] if "rule" in o]
    assert fingerprint("masquerade fully-random") in comments


# -- the real driver, on the recording command runner -------------------------------------------------


async def test_nft_driver_passes_the_script_on_stdin() -> None:
    runner = RecordingRunner()
    await NftNetfilter(runner, command_prefix=["nsenter", "--net=/run/netns/t", "--"], timeout=7).apply(
        "add table ip atoll\n"
    )
    assert runner.calls == [
        Call(("nsenter", "--net=/run/netns/t", "--", "nft", "-f", "-"), "add table ip atoll\n", 7)
    ]


async def test_nft_driver_reads_the_table_or_its_absence() -> None:
    doc = '{"nftables": [{"table": {"family": "ip", "name": "atoll", "handle": 1}}]}'
    runner = RecordingRunner().answer(stdout=doc)
    runner.answer(returncode=1, stderr="Error: No such file or directory\nlist table ip atoll\n")
    nft = NftNetfilter(runner, nft="/usr/sbin/nft")
    assert await nft.list_table() == json.loads(doc)
    assert await nft.list_table() is None
    assert runner.argvs == [("/usr/sbin/nft", "-j", "list", "table", "ip", "atoll")] * 2
    assert [c.input for c in runner.calls] == [None, None]


async def test_nft_driver_failures() -> None:
    runner = RecordingRunner()
    nft = NftNetfilter(runner, timeout=0.3)
    runner.answer(returncode=1, stderr="Error: syntax error, unexpected junk")
    with pytest.raises(NetfilterError, match="unexpected junk"):
        await nft.apply("junk\n")
    runner.answer(returncode=1, stderr="Error: Could not process rule: Operation not permitted")
    with pytest.raises(NetfilterError, match=r"failed \(exit 1\): .*not permitted"):
        await nft.list_table()
    runner.answer(stdout="not json")
    with pytest.raises(NetfilterError, match="not JSON"):
        await nft.list_table()
    runner.cannot_start()  # no nft binary: an error, not "no table"
    with pytest.raises(NetfilterError, match="No such file"):
        await nft.list_table()
    runner.time_out()
    with pytest.raises(NetfilterError, match=r"did not finish within 0.3s"):
        await nft.apply("add table ip atoll\n")
    assert [c.timeout for c in runner.calls] == [0.3] * 5
