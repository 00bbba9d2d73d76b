"""One bad service never blocks another's rules: refused while resolving, or by nft on its own."""

from __future__ import annotations

import pytest

from agent.proxy import FakeNetfilter, NetfilterError, ServiceProxy, TableState, diff, render, resolve
from tests.unit.test_proxy import HERE, endpoints, service, state, three


class Failures:
    """The proxy's on_failure callback, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, owner: str, why: str) -> None:
        self.calls.append((owner, why))

    def owners(self) -> list[str]:
        return [owner for owner, _ in self.calls]


@pytest.mark.parametrize("tail", ["\n", "\r", "\t", "\x00"])
async def test_a_name_ending_in_a_control_character_is_refused_and_reported(tail: str) -> None:
    nf, failures = FakeNetfilter(), Failures()
    proxy = ServiceProxy(nf, on_failure=failures)
    bad_name = state(
        service("web" + tail, "10.254.0.10"),
        endpoints("web" + tail, [("10.100.1.2", "h0")]),
        service("api", "10.254.0.11"),
        endpoints("api", [("10.100.1.3", "h0")]),
    )
    report = await proxy.apply(bad_name, HERE)
    assert report.added == ("default/api",)
    assert nf.chain_rules("svc-default/api/tcp/http")  # the good one is served
    assert failures.owners() == [f"default/web{tail}"]
    assert [owner for owner, _ in report.failed] == [f"default/web{tail}"]
    port_name = state(service("db", "10.254.0.12", [("sql" + tail, "tcp", 5432, 5432)]))
    assert [o for o, _ in (await proxy.apply(port_name, HERE)).failed] == ["default/db"]
    assert not nf.scripts[-1].count("db")


async def test_a_service_nft_refuses_is_applied_around_and_reported_once() -> None:
    nf, failures = FakeNetfilter(), Failures()
    proxy = ServiceProxy(nf, on_failure=failures)
    await proxy.apply(three(), HERE)
    before_b = nf.chain_rules("svc-default/b/tcp/http")
    nf.refuse = {"ep-default/b/tcp/http__10.100.9.9/80"}  # nft will not take b's new endpoint
    changed = three(2, b_endpoints=("10.100.9.9",))
    changed.services.append(service("d", "10.254.0.20"))
    changed.endpoints.append(endpoints("d", [("10.100.1.20", "h0")]))
    report = await proxy.apply(changed, HERE)
    # The batch failed; d went in on its own, b kept what it had, a and c were never touched.
    assert nf.chain_rules("svc-default/d/tcp/http")
    assert nf.chain_rules("svc-default/b/tcp/http") == before_b
    assert [owner for owner, _ in report.failed] == ["default/b"] and "Invalid argument" in report.failed[0][
        1
    ]
    assert failures.owners() == ["default/b"]
    # Later pushes leave b out (no failing batch each time) and keep reporting it, once.
    scripts = len(nf.scripts)
    changed.generation = 3
    changed.endpoints[-1].subsets[0].addresses.add(ip="10.100.1.21", node_name="h0")
    again = await proxy.apply(changed, HERE)
    assert len(nf.scripts) == scripts + 1 and "default/b" not in nf.scripts[-1]
    assert again.updated == ("default/d",) and [o for o, _ in again.failed] == ["default/b"]
    assert failures.owners() == ["default/b"]
    # b changes (nft would take it now): it is tried again and served.
    nf.refuse = set()
    fixed = await proxy.apply(three(4, b_endpoints=("10.100.9.8",)), HERE)
    assert fixed.failed == () and "goto ep-default/b/tcp/http__10.100.9.8/80" in nf.chain_rules(
        "svc-default/b/tcp/http"
    )


async def test_invalidate_tries_a_refused_service_again() -> None:
    nf = FakeNetfilter()
    proxy = ServiceProxy(nf)
    await proxy.apply(three(), HERE)
    nf.refuse = {"10.100.9.9"}
    assert (await proxy.apply(three(2, b_endpoints=("10.100.9.9",)), HERE)).failed
    nf.refuse = set()
    proxy.invalidate()
    assert (await proxy.apply(three(3, b_endpoints=("10.100.9.9",)), HERE)).failed == ()
    assert "goto ep-default/b/tcp/http__10.100.9.9/80" in nf.chain_rules("svc-default/b/tcp/http")
    # Only a failing fixed part (or nft itself) still makes apply raise.
    broken = FakeNetfilter()
    broken.refuse = {"add table"}
    with pytest.raises(NetfilterError):
        await ServiceProxy(broken).apply(three(), HERE)


def test_a_scoped_diff_names_only_its_service_and_takes_a_key_from_another() -> None:
    old = render(resolve(three(), HERE).ports)
    moved = state(
        service("a", "10.254.0.99"), service("z", "10.254.0.10"), endpoints("z", [("10.100.1.7", "h0")])
    )
    new = render(resolve(moved, HERE).ports)
    actual = TableState.from_ruleset(old)
    plan = diff(new, actual, only=frozenset({"default/z"}))
    assert plan.touched == {"default/a", "default/z"}  # a's element at 10.254.0.10 goes, z's comes
    assert "svc-default/b" not in plan.script and "svc-default/a" not in plan.script
    after = actual.merge(new, only=frozenset({"default/z"}))
    assert "svc-default/b/tcp/http" in after.chains and "svc-default/z/tcp/http" in after.chains
    assert not diff(new, after, only=frozenset({"default/z"}))
