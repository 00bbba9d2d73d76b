"""SR-IOV: pod start-up with VFs, and the cost of attaching and releasing one VF.

    .venv/bin/python bench/sriov_attach.py [--rounds 15] [--vf-rounds 30]

Brings up a one-host test bed with the coordinator and an agent on the fake
NIC (``--sriov-driver fake --sriov-fake-netdevs``: every VF a veth stand-in,
moved by the real link driver), then:

  1. pods: each round creates a pod with no VF, one with one VF and one with
     two VFs (one at a time), each timed from its Create call until the API
     reports it Running; p50/p99 of each, and the ratios against no VF;
  2. one VF: inside the host's namespace, the agent's SriovManager attaches a
     VF into a fresh pod namespace and releases it, beside the same moves made
     with raw `ip link` commands (move, rename, address, up; and back), timed
     per VF; the ratio shows what the records, the resets and the checks cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from common import summary  # type: ignore[import-not-found]

from atoll import kinds
from atoll.v1 import pod_pb2, sriov_pb2
from coordinator.client.api import Client
from tests.integration.daemons import AgentProcess, CoordinatorProcess, eventually, node_ready
from tests.integration.testbed import Host, TestBed

POD = kinds.by_name("Pod")
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]

# Runs inside the host's namespace: the agent's manager against raw `ip`, per VF.
_ONE_VF = r"""
import asyncio, json, os, pathlib, subprocess, sys, time
from agent.sriov.fakenic import NetdevSriovHardware, SwitchingVfConfigurator
from agent.sriov.manager import SriovManager, VfRequest
from agent.sriov.model import PfSpec, VfSettings
from agent.sriov.netlink import NetlinkVfLinks

rounds, root = int(sys.argv[1]), pathlib.Path(sys.argv[2])
def ip(*argv): subprocess.run(["ip", *argv], check=True, capture_output=True)
pod = subprocess.Popen(["unshare", "--net", "sleep", "600"])
time.sleep(0.2)
netns = f"/proc/{pod.pid}/ns/net"
home = os.getpid()  # this script runs in the bed host's namespace: "back home" is here, never the machine's
try:
    raw_attach, raw_release = [], []
    ip("link", "add", "rawv0", "type", "veth", "peer", "name", "rawp0")
    for _ in range(rounds):
        t = time.perf_counter()
        ip("link", "set", "rawv0", "netns", str(pod.pid))
        subprocess.run(["nsenter", f"--net={netns}", "--", "sh", "-c",
            "ip link set rawv0 name net1 && ip addr add 10.56.9.1/24 dev net1 && ip link set net1 up"], check=True)
        raw_attach.append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run(["nsenter", f"--net={netns}", "--", "sh", "-c",
            f"ip addr flush dev net1 && ip link set net1 down && ip link set net1 name rawv0 && ip link set rawv0 netns {home}"], check=True)
        raw_release.append(time.perf_counter() - t)
    ip("link", "del", "rawv0")
    hw = NetdevSriovHardware(root)
    hw.add_pf("ens9", 8)
    manager = SriovManager([PfSpec("ens9", 1)], hw, SwitchingVfConfigurator(), NetlinkVfLinks(), root / "state")
    async def run():
        await manager.setup()
        attach, release = [], []
        request = VfRequest("bench", "atoll.io/sriov_ens9", VfSettings(vlan=100), "net1", ("10.56.9.1/24",))
        for i in range(rounds):
            t = time.perf_counter()
            await manager.attach(f"uid-{i}", "default/bench", netns, [request])
            attach.append(time.perf_counter() - t)
            t = time.perf_counter()
            await manager.release_pod(f"uid-{i}")
            release.append(time.perf_counter() - t)
        return attach, release
    attach, release = asyncio.run(run())
    print(json.dumps({"raw_attach": raw_attach, "raw_release": raw_release, "attach": attach, "release": release}))
finally:
    pod.kill()
"""


def network() -> sriov_pb2.SriovNetwork:
    net = sriov_pb2.SriovNetwork()
    net.metadata.name = "bench"
    net.spec.resource_name = "atoll.io/sriov_ens1f0"
    net.spec.vlan = 100
    net.spec.ipam.type = "static"
    return net


def bench_pod(name: str, vfs: int) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.spec.termination_grace_period_seconds = 1
    p.spec.containers.add(name="main", image="atoll/busybox", command=COMMAND)
    for i in range(vfs):
        p.spec.networks.add(name="bench", interface=f"net{i + 1}", ips=[f"10.56.{i}.1/24"])
    return p


async def pods(server: str, rounds: int) -> dict[int, list[float]]:
    times: dict[int, list[float]] = {0: [], 1: [], 2: []}
    async with Client(server) as client:
        await eventually(lambda: node_ready(client, "node-1"), timeout=60, what="node Ready")
        await client.create(network())
        for r in range(rounds):
            for vfs in (0, 1, 2):
                name = f"p{r}-{vfs}"
                start = time.perf_counter()
                await client.create(bench_pod(name, vfs))

                async def running(name: str = name) -> bool:
                    got = await client.get(POD, "default", name)
                    return got.status.phase == pod_pb2.POD_PHASE_RUNNING  # type: ignore[attr-defined]

                await eventually(running, timeout=60, interval=0.01, what=f"{name} Running")
                times[vfs].append(time.perf_counter() - start)
                await client.delete(POD, "default", name)

                async def gone(name: str = name) -> bool:
                    items, _ = await client.list(POD)
                    return all(p.metadata.name != name for p in items)  # type: ignore[attr-defined]

                await eventually(gone, timeout=60, what=f"{name} gone")
    return times


def one_vf(host: Host, rounds: int) -> dict[str, list[float]]:
    res = host.run([sys.executable, "-c", _ONE_VF, str(rounds), str(host.dir / "bench-sys")], timeout=300)
    if res.returncode != 0:
        raise SystemExit(f"one-VF bench failed: {res.stderr}")
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15, help="pods of each kind")
    parser.add_argument("--vf-rounds", type=int, default=30, help="attach/release cycles of one VF")
    args = parser.parse_args()

    with TestBed(1) as bed:
        host = bed.hosts[0]
        coordinator = CoordinatorProcess(host, host.dir / "coordinator").start()
        sriov = (
            "--sriov-pfs", "ens1f0:8", "--sriov-driver", "fake", "--sysfs-root", str(host.dir / "sys"),
            "--sriov-fake-netdevs",
        )  # fmt: skip
        AgentProcess(host, "127.0.0.1:6443", host.dir / "agent", "node-1", sriov).start()
        times = asyncio.run(pods(coordinator.server, args.rounds))
        vf = one_vf(host, args.vf_rounds)

    base = summary(times[0])
    print(f"pod create -> Running, {args.rounds} pods each, one at a time (seconds)")
    print(f"{'':22}{'p50':>8}{'p99':>8}{'p50 ratio':>11}{'p99 ratio':>11}")
    for vfs, label in ((0, "no VF"), (1, "one VF"), (2, "two VFs")):
        s = summary(times[vfs])
        print(
            f"{label:22}{s['p50']:8.3f}{s['p99']:8.3f}{s['p50'] / base['p50']:11.2f}{s['p99'] / base['p99']:11.2f}"
        )
    print(f"\none VF, {args.vf_rounds} cycles (milliseconds)")
    print(f"{'':22}{'p50':>8}{'p99':>8}{'p50 ratio':>11}")
    for kind in ("attach", "release"):
        raw, ours = summary(vf[f"raw_{kind}"]), summary(vf[kind])
        print(f"{'raw ip ' + kind:22}{raw['p50'] * 1000:8.1f}{raw['p99'] * 1000:8.1f}{1.0:11.2f}")
        print(
            f"{'atoll ' + kind:22}{ours['p50'] * 1000:8.1f}{ours['p99'] * 1000:8.1f}"
            f"{ours['p50'] / raw['p50']:11.2f}"
        )


if __name__ == "__main__":
    main()
