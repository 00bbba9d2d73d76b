"""One bad service blocks no other, on a real kernel (test bed hosts, no coordinator, no docker).

A ServiceState is fed by hand to a real ServiceProxy whose nft runs in host
0's network namespace, as if it came past the coordinator: one service with a
name ending in a newline (refused while resolving) and one the kernel's nft
"refuses" (a fault injected above the real nft, since nothing the proxy renders
is refused by a sound kernel). The good service beside them is served, proven
by a connection through its cluster IP to a server on host 1, and both bad ones
are reported.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from agent.execute import AsyncioRunner
from agent.proxy import NetfilterError, NftNetfilter, ServiceProxy
from tests.integration.test_proxy_kernel import (
    _BANNER,
    CLUSTER_IP,
    OTHER_IP,
    endpoints,
    root_namespace_untouched,
    rule_handles,
    service,
    services_state,
)
from tests.integration.testbed import Host, TestBed, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
__all__ = ["root_namespace_untouched"]  # autouse: the root namespace is compared after the test

FLAKY_IP = "10.254.0.40"


class RefusingNft:
    """The real nft, but any transaction naming `refused` fails as nft would fail it."""

    def __init__(self, real: NftNetfilter, refused: str) -> None:
        self.real, self.refused = real, refused
        self.refusals = 0

    async def list_table(self) -> Mapping[str, Any] | None:
        return await self.real.list_table()

    async def apply(self, script: str) -> None:
        if self.refused in script:
            self.refusals += 1
            raise NetfilterError("Error: Could not process rule: Invalid argument (injected)")
        await self.real.apply(script)


def banner(host: Host, ip: str, port: int) -> str:
    try:
        with host.connect((ip, port), timeout=3) as conn:
            return conn.recv(64).decode()
    except OSError as exc:
        return f"error: {exc}"


async def test_one_bad_service_blocks_no_other(testbed_factory: Callable[..., TestBed]) -> None:
    bed = testbed_factory(2, docker=False)
    h0, h1 = bed.hosts
    server = h1.spawn([sys.executable, "-I", "-c", _BANNER, "8080"], label="server")
    wait_for(lambda: "listening" in server.log_tail(), timeout=10, message="the server on host 1")
    # The service range routed into a bridge without ports, as in test_proxy_kernel.
    for argv in (
        ["ip", "link", "add", "svc0", "type", "bridge"],
        ["ip", "link", "set", "svc0", "up"],
        ["ip", "route", "add", "10.254.0.0/16", "dev", "svc0"],
    ):
        assert h0.run(argv).returncode == 0, argv

    nft = RefusingNft(
        NftNetfilter(AsyncioRunner(), command_prefix=["nsenter", f"--net={h0.netns_path}", "--"]),
        "default/flaky/",
    )
    failures: list[str] = []
    proxy = ServiceProxy(nft, node_name=h0.name, on_failure=lambda owner, _why: failures.append(owner))
    objs = [
        service("good", CLUSTER_IP, 80, 8080),
        endpoints("good", [h1.ip], h1.name, 8080),
        service("web\n", OTHER_IP, 80, 8080),
        endpoints("web\n", [h1.ip], h1.name, 8080),
        service("flaky", FLAKY_IP, 80, 8080),
        endpoints("flaky", [h1.ip], h1.name, 8080),
    ]
    try:
        report = await proxy.apply(services_state(1, objs), {h0.ip})
        assert sorted(failures) == ["default/flaky", "default/web\n"], failures
        assert sorted(owner for owner, _ in report.failed) == ["default/flaky", "default/web\n"]
        assert banner(h0, CLUSTER_IP, 80).startswith("SSH-2.0"), "the good service is not served"
        assert banner(h0, FLAKY_IP, 80).startswith("error"), "the refused service answers"
        chains = rule_handles(h0)
        assert "svc-default/good/tcp/p" in chains and not [c for c in chains if "flaky" in c or "web" in c]
        # The next push leaves the refused service out (no failing transaction) and reports
        # nothing new; the good service still answers.
        refusals = nft.refusals
        second = await proxy.apply(services_state(2, objs), {h0.ip})
        assert nft.refusals == refusals and sorted(o for o, _ in second.failed) == sorted(failures)
        assert len(failures) == 2
        assert banner(h0, CLUSTER_IP, 80).startswith("SSH-2.0")
    finally:
        await proxy.reset()
    assert h0.run(["nft", "list", "table", "ip", "atoll"]).returncode != 0
