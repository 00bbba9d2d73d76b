#!/usr/bin/env python3
"""Time the service proxy on a real kernel: 1,000 services, then one changes.

Prints how long the first apply of N services takes, an update of one service
among them (one small transaction), the same update done as a full rewrite
(the whole table again in one transaction, as a proxy without diffing would),
their ratio, a restart (read the table back, find nothing to do), and the
Python share of an update (resolve, render, diff; no nft).

Needs root: it re-runs itself under `unshare --net`, so nft only ever sees a
private, empty network namespace that vanishes with the process; nothing on
the machine is touched. `--fake` times rendering and diffing alone.

    sudo .venv/bin/python bench/proxy_update.py [--services 1000] [--endpoints 2] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from typing import Any

from common import summary  # type: ignore[import-not-found]

from agent.execute import AsyncioRunner
from agent.proxy import FakeNetfilter, NftNetfilter, ServiceProxy, TableState, diff, render, resolve
from agent.proxy.diff import reset_script
from agent.proxy.netfilter import Netfilter
from atoll.v1 import meta_pb2, node_api_pb2

_INNER = "ATOLL_BENCH_PRIVATE_NETNS"
HERE = {"198.51.100.10"}


def make_state(
    services: int, endpoints: int, generation: int = 1, bump: int = -1
) -> node_api_pb2.ServiceState:
    """`services` services with `endpoints` endpoints each; service `bump` gets one more endpoint."""
    st = node_api_pb2.ServiceState(generation=generation)
    for i in range(services):
        svc = st.services.add()
        svc.metadata.namespace, svc.metadata.name = "bench", f"svc-{i}"
        svc.spec.cluster_ip = f"10.254.{i // 250}.{i % 250 + 1}"
        svc.spec.ports.add(name="http", protocol=meta_pb2.PROTOCOL_TCP, port=80, target_port=8080)
        eps = st.endpoints.add()
        eps.metadata.namespace, eps.metadata.name = "bench", f"svc-{i}"
        subset = eps.subsets.add()
        for j in range(endpoints + (1 if i == bump else 0)):
            n = i * 8 + j
            subset.addresses.add(ip=f"10.100.{n // 250}.{n % 250 + 1}", node_name=f"node-{j}")
        subset.ports.add(name="http", port=8080, protocol=meta_pb2.PROTOCOL_TCP)
    return st


async def timed(coro: object) -> float:
    t0 = time.perf_counter()
    await coro  # type: ignore[misc]
    return time.perf_counter() - t0


async def run(nf: Netfilter, services: int, endpoints: int, repeat: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"first": [], "update": [], "full": [], "restart": [], "python": []}
    base, bumped = make_state(services, endpoints), make_state(services, endpoints, 2, bump=services // 2)
    for _ in range(repeat):
        await nf.apply(reset_script())
        proxy = ServiceProxy(nf)
        times["first"].append(await timed(proxy.apply(base, HERE)))
        for state in (bumped, base):  # change one service and change it back
            t0 = time.perf_counter()
            report = await proxy.apply(state, HERE)
            times["update"].append(time.perf_counter() - t0)
            assert len(report.updated) == 1 and len(report.kept) == services - 1, report
        # The same change as a full rewrite: the whole table anew, in one transaction.
        desired = render(resolve(bumped, HERE).ports)
        full = "delete table ip atoll\n" + diff(desired, TableState.absent()).script
        times["full"].append(await timed(nf.apply(full)))  # the table now holds `bumped`
        restarted = ServiceProxy(nf)
        t0 = time.perf_counter()
        assert not (await restarted.apply(bumped, HERE)).changed
        times["restart"].append(time.perf_counter() - t0)
        # The Python share of an update: resolve, render (unchanged services cached), diff.
        cache: dict[Any, Any] = {}
        render(resolve(bumped, HERE).ports, cache=cache)
        t0 = time.perf_counter()
        diff(render(resolve(base, HERE).ports, cache=cache), TableState.from_ruleset(desired))
        times["python"].append(time.perf_counter() - t0)
    await nf.apply(reset_script())
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--fake", action="store_true", help="no kernel: FakeNetfilter (render and diff only)")
    args = ap.parse_args()
    if not args.fake and os.environ.get(_INNER) != "1":
        if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nft") is None:
            print("needs root, unshare and nft (or --fake)", file=sys.stderr)
            return 2
        env = dict(os.environ, **{_INNER: "1"})
        os.execvpe("unshare", ["unshare", "--net", "--", sys.executable, *sys.argv], env)
    nf: Netfilter = FakeNetfilter() if args.fake else NftNetfilter(AsyncioRunner())
    times = asyncio.run(run(nf, args.services, args.endpoints, args.repeat))
    kind = "fake netfilter" if args.fake else "nft in a private network namespace"
    print(f"{args.services} services x {args.endpoints} endpoints, {args.repeat} rounds, {kind}")
    for name, values in times.items():
        s = summary(values)
        print(f"  {name:<8} p50 {s['p50'] * 1000:8.1f} ms   max {s['max'] * 1000:8.1f} ms")
    ratio = summary(times["full"])["p50"] / summary(times["update"])["p50"]
    print(f"  full rewrite / incremental update of one service: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
