"""Pod-to-pod TCP throughput over Atoll's VXLAN overlay, beside two baselines measured in the same run.

    .venv/bin/python bench/overlay_throughput.py [--seconds 5] [--repeat 3]

Brings up a test bed (tests/integration/testbed): two workers, each with its
own dockerd and a real `atoll-agent` process, and a master host running the
coordinator with the flannel network 10.100.0.0/16 (tests/integration/cluster.py),
so the agents build the overlay themselves: flannel.1 (VXLAN), routes,
neighbour and FDB entries, the engine's pod network on each lease, and their
firewall rules. Three pods from `atoll/busybox` are pinned: a server on
node-0, a client on node-0 and a client on node-1. Two more bed hosts without
an engine carry the hand-built baseline: on each, `vx0` made with plain `ip`
(`type vxlan id 42 dstport 4789 local <underlay ip> dev eth0 nolearning`,
address <subnet>.0/32, static `ip route ... onlink`, `ip neigh ... nud
permanent` and `bridge fdb append ... dst` for the peer), a Linux bridge with
the subnet's gateway, and a veth into a "pod" namespace: the same shape as
the Atoll pod path (pod veth -> bridge -> routing -> VXLAN -> underlay) minus
Docker and Atoll. Every device on it gets the MTU the agents gave flannel.1.

Measured (one TCP stream, receiver's figure, first second omitted):

  * same host:   Atoll client pod on node-0 -> server pod on node-0 (bridge only);
  * cross host:  Atoll client pod on node-1 -> server pod on node-0 (overlay);
  * hand-built:  "pod" namespace behind vx0 on one host -> the one on the other.

A cross-host run counts only if the sending host's VXLAN device sent at
least the bytes the receiver got, so no case can quietly take another path.

Prints Gbit/s (mean, min, max over --repeat runs, the three cases
interleaved so that drift hits them alike), TCP retransmissions, the
iperf3 sender's and receiver's CPU use, the two ratios (of the means, and
per round: a round's cases ran back to back, so their ratio is the least
disturbed by other load) and the MTUs in use.

Tool: Debian's iperf3 (scripts/install-deps.sh), run from the root mount
namespace inside each pod's network namespace with `nsenter
--net=/proc/<container pid>/ns/net` (the hand-built "pods" are named
namespaces). It measures exactly the pods' network path, sends from memory
and reports what the receiver got over a fixed time. busybox `nc` fed by
`dd` was the alternative, and it measures itself: on one bed host's own
address it moved about 1 Gbit/s where iperf3 moved 9 (it copies through a
small buffer in a poll loop, behind a pipe), and its listener drops the
connection as soon as its own stdin ends.

Caveats: the whole bed runs on one machine (here a 2-core VM): sender,
receiver, both "hosts'" softirq work, dockerd, the agents and the
coordinator share the same CPUs, and the "wire" is a veth pair through a
bridge namespace. Figures are CPU-bound, not link-bound, and comparable
only within a run; the ratios are the result. Other work on the machine
widens the spread (the load average is printed); pinning iperf3's ends to
CPUs (`-A`) made it wider still here, so the scheduler places them. The
daemons run with their default relist and heartbeat intervals (the
integration tests' faster ones would steal more CPU). What the overlay
path has and the hand-built one lacks is netfilter: Docker's iptables
rules, Atoll's nftables table and conntrack on the Atoll hosts; the
baseline hosts have no firewall rules at all. The UDP port differs (8472
for flannel.1, 4789 for vx0), which does not change the data path.

Network safety: every address lives in the bed's namespaces (underlay
198.51.100.0/24, pods 10.100.0.0/16, baseline 10.200.0.0/16); nothing is
created in or routed through the root namespace. The baseline's pod
namespaces carry the bed's run prefix, so the bed's teardown (and a later
`sweep_stale`) removes them even if this script is killed; iperf3 processes
die with it (`setpriv --pdeathsig KILL`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import common  # type: ignore[import-not-found]  # noqa: F401  (puts the repository root on sys.path)

from atoll.v1 import pod_pb2
from tests.integration.cluster import pinned_pod, start_cluster_on
from tests.integration.daemons import wait_running
from tests.integration.testbed import Host, TestBed, wait_for
from tests.integration.testbed.host import sh

PORT = 5201
#: The agents' VXLAN device: flannel's name for VNI 1 (tests/integration/cluster.py's network).
OVERLAY_DEV = "flannel.1"
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; sleep 2147483647 & wait"]
#: Production intervals while measuring (the integration tests' fast ones cost CPU).
COORDINATOR_ARGS = ("--heartbeat-interval", "10", "--node-grace-period", "40")
AGENT_ARGS = ("--relist-interval", "1", "--heartbeat-interval", "10")
#: The hand-built baseline: VNI, UDP port, subnets 10.200.<i>.0/24, VTEP MACs.
VX_VNI = 42
VX_PORT = 4789
VX_SUBNET = "10.200.{i}"
VX_MAC = "02:00:0a:c8:00:{i:02x}"


@dataclass(frozen=True)
class Endpoint:
    label: str
    netns: str  # path of its network namespace
    ip: str


@dataclass
class Sample:
    gbps: float
    bytes: int
    retransmits: int
    cpu_sender: float
    cpu_receiver: float


@dataclass
class Case:
    name: str
    client: Endpoint
    server: Endpoint
    #: (netns, device) the data must leave through: checks that the case took the path it names.
    via: tuple[str, str] | None = None
    samples: list[Sample] = field(default_factory=list)

    def stat(self, fn: Any, attr: str) -> float:
        values = [getattr(s, attr) for s in self.samples]
        return float(fn(values)) if values else math.nan


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    return ["nsenter", f"--net={netns}", "--", *argv]


def link_mtu(netns: str, dev: str) -> int:
    out = sh(in_netns(netns, ["ip", "-j", "link", "show", "dev", dev])).stdout
    return int(json.loads(out)[0]["mtu"])


def tx_bytes(netns: str, dev: str) -> int:
    out = sh(in_netns(netns, ["ip", "-j", "-s", "link", "show", "dev", dev])).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["bytes"])


# -- Atoll ---------------------------------------------------------------------------------------


def bench_pod(name: str, node: str) -> pod_pb2.Pod:
    pod = pinned_pod(name, node, image="atoll/busybox", labels={"bench": "throughput"})
    pod.spec.containers[0].command[:] = SLEEP
    return pod


async def atoll_pods(bed: TestBed) -> dict[str, Endpoint]:
    """Coordinator and agents on the bed, three pinned pods; where each pod's network is."""
    cluster = await start_cluster_on(bed, 2, coordinator_args=COORDINATOR_ARGS, agent_args=AGENT_ARGS)
    try:
        placement = {"server": 0, "client-same": 0, "client-cross": 1}
        for name, i in placement.items():
            await cluster.client.create(bench_pod(name, cluster.node(i)))
        pods = {}
        for name, i in placement.items():
            pod = await wait_running(cluster.client, name, timeout=120)
            cid = pod.status.container_statuses[0].container_id.removeprefix("docker://")
            docker = cluster.workers[i].docker()
            attrs = (await asyncio.to_thread(docker.containers.get, cid)).attrs
            pid = attrs["State"]["Pid"]
            pods[name] = Endpoint(f"{name}@{cluster.node(i)}", f"/proc/{pid}/ns/net", pod.status.pod_ip)
        return pods
    finally:
        await cluster.close()


# -- the hand-built VXLAN ------------------------------------------------------------------------


class HandBuiltVxlan:
    """Two bed hosts joined by VXLAN made with plain `ip`/`bridge` commands, a "pod" behind each."""

    def __init__(self, bed: TestBed, hosts: Sequence[Host], mtu: int) -> None:
        self.hosts = list(hosts)
        self.mtu = mtu
        # The bed's run prefix: its teardown and sweep_stale() delete these namespaces too.
        self.pod_netns = [f"atl-{bed.run_id}-vxpod{i}" for i in range(len(hosts))]

    def build(self) -> list[Endpoint]:
        mtu = str(self.mtu)
        for i, (host, pod) in enumerate(zip(self.hosts, self.pod_netns, strict=True)):
            net = VX_SUBNET.format(i=i)
            h, p = ["ip", "-n", host.name], ["ip", "-n", pod]
            sh(["ip", "netns", "add", pod])
            sh([*p, "link", "set", "lo", "up"])
            # The veth pair is born with one end in the host, the other in the pod namespace.
            sh([*h, "link", "add", "cbr0", "mtu", mtu, "type", "bridge"])
            sh([*h, "link", "add", "veth0", "mtu", mtu, "type", "veth", "peer", "name", "eth0", "netns", pod])
            sh([*h, "link", "set", "veth0", "master", "cbr0", "up"])
            sh([*h, "addr", "add", f"{net}.1/24", "dev", "cbr0"])
            sh([*h, "link", "set", "cbr0", "up"])
            sh([*p, "link", "set", "eth0", "mtu", mtu, "up"])
            sh([*p, "addr", "add", f"{net}.2/24", "dev", "eth0"])
            sh([*p, "route", "add", "default", "via", f"{net}.1"])
            sh([
                *h, "link", "add", "vx0", "address", VX_MAC.format(i=i), "mtu", mtu,
                "type", "vxlan", "id", str(VX_VNI), "local", host.ip, "dev", "eth0",
                "dstport", str(VX_PORT), "nolearning",
            ])  # fmt: skip
            sh([*h, "addr", "add", f"{net}.0/32", "dev", "vx0"])
            sh([*h, "link", "set", "vx0", "up"])
        for i, host in enumerate(self.hosts):
            h = ["ip", "-n", host.name]
            for j, peer in enumerate(self.hosts):
                if j == i:
                    continue
                vtep, mac = f"{VX_SUBNET.format(i=j)}.0", VX_MAC.format(i=j)
                sh([*h, "route", "add", f"{VX_SUBNET.format(i=j)}.0/24", "via", vtep, "dev", "vx0", "onlink"])
                sh([*h, "neigh", "replace", vtep, "lladdr", mac, "dev", "vx0", "nud", "permanent"])
                sh(["bridge", "-n", host.name, "fdb", "append", mac, "dev", "vx0", "dst", peer.ip])
        return [
            Endpoint(f"vxpod{i}@{host.name}", f"/run/netns/{pod}", f"{VX_SUBNET.format(i=i)}.2")
            for i, (host, pod) in enumerate(zip(self.hosts, self.pod_netns, strict=True))
        ]

    def remove(self) -> None:
        """Delete what build() made (idempotent; the host namespaces go with the bed)."""
        for host, pod in zip(self.hosts, self.pod_netns, strict=True):
            sh(["ip", "netns", "delete", pod], check=False)  # takes the veth pair with it
            for dev in ("vx0", "cbr0"):
                sh(["ip", "-n", host.name, "link", "del", dev], check=False)


# -- iperf3 --------------------------------------------------------------------------------------


class Iperf:
    """iperf3 servers and clients inside network namespaces, dying with this process."""

    def __init__(self) -> None:
        self.servers: list[subprocess.Popen[bytes]] = []

    @staticmethod
    def argv(netns: str, args: Sequence[str]) -> list[str]:
        return ["setpriv", "--pdeathsig", "KILL", "--", *in_netns(netns, ["iperf3", *args])]

    def serve(self, ep: Endpoint) -> None:
        proc = subprocess.Popen(
            self.argv(ep.netns, ["-s", "-p", str(PORT)]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.servers.append(proc)

        def listening() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"iperf3 server in {ep.label} exited with {proc.returncode}")
            out = sh(in_netns(ep.netns, ["ss", "-Hltn", f"sport = :{PORT}"])).stdout
            return bool(out.strip())

        wait_for(listening, timeout=10, interval=0.05, message=f"iperf3 listening in {ep.label}")

    def run(self, client: Endpoint, server: Endpoint, seconds: float) -> Sample:
        args = ["-c", server.ip, "-p", str(PORT), "-t", str(seconds), "-O", "1", "-J"]
        res = subprocess.run(
            self.argv(client.netns, args), capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        try:
            out = json.loads(res.stdout)
        except ValueError:
            raise RuntimeError(f"iperf3 {client.label} -> {server.label}: {res.stderr.strip()}") from None
        if "error" in out:
            raise RuntimeError(f"iperf3 {client.label} -> {server.label}: {out['error']}")
        end = out["end"]
        cpu = end.get("cpu_utilization_percent", {})
        return Sample(
            gbps=end["sum_received"]["bits_per_second"] / 1e9,
            bytes=int(end["sum_received"]["bytes"]),
            retransmits=int(end["sum_sent"].get("retransmits", 0)),
            cpu_sender=float(cpu.get("host_total", math.nan)),
            cpu_receiver=float(cpu.get("remote_total", math.nan)),
        )

    def close(self) -> None:
        for proc in self.servers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.servers:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.servers.clear()


def reachable(client: Endpoint, server: Endpoint, timeout: float = 60) -> None:
    """Wait until `client` pings `server` (the overlay's peers may still be being programmed)."""
    argv = in_netns(client.netns, ["busybox", "ping", "-c", "1", "-W", "1", server.ip])
    wait_for(
        lambda: subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0,
        timeout=timeout,
        interval=0.2,
        message=f"{client.label} to reach {server.label} ({server.ip})",
    )


# -- report --------------------------------------------------------------------------------------


def report(
    cases: Sequence[Case], args: argparse.Namespace, mtus: dict[str, int], load: tuple[float, float]
) -> None:
    print(
        f"pod-to-pod TCP throughput: iperf3, 1 stream, {args.seconds:g} s (+1 s omitted) x {args.repeat} runs"
    )
    print(f"{'Gbit/s':34}{'mean':>8}{'min':>8}{'max':>8}{'retr':>8}{'cpu snd%':>10}{'cpu rcv%':>10}")
    # retr: TCP retransmissions per run; cpu: the iperf3 processes' own CPU use (iperf3's figures).
    for c in cases:
        print(
            f"{c.name:34}{c.stat(statistics.fmean, 'gbps'):8.2f}{c.stat(min, 'gbps'):8.2f}"
            f"{c.stat(max, 'gbps'):8.2f}{c.stat(statistics.fmean, 'retransmits'):8.0f}"
            f"{c.stat(statistics.fmean, 'cpu_sender'):10.0f}{c.stat(statistics.fmean, 'cpu_receiver'):10.0f}"
        )
    same, cross, hand = cases
    print(f"{'ratio':42}{'of means':>8}   per round: median (min..max)")
    for label, num, den in (
        ("overlay cross-host / same-host", cross, same),
        ("overlay cross-host / hand-built VXLAN", cross, hand),
    ):
        mean = num.stat(statistics.fmean, "gbps") / den.stat(statistics.fmean, "gbps")
        rounds = [n.gbps / d.gbps for n, d in zip(num.samples, den.samples, strict=True)]
        print(
            f"  {label:40}{mean:8.2f}   {statistics.median(rounds):.2f} ({min(rounds):.2f}..{max(rounds):.2f})"
        )
    print("MTU: " + ", ".join(f"{k} {v}" for k, v in mtus.items()))
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} before measuring, {load[1]:.2f} after "
        "(other work on the machine shows up as spread)"
    )


# -- main ----------------------------------------------------------------------------------------


def _terminate(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # unwinds through the with-blocks, which tear everything down


@contextlib.contextmanager
def cleanup(what: str, fn: Any) -> Iterator[None]:
    try:
        yield
    finally:
        try:
            fn()
        except Exception as exc:
            print(f"cleanup of {what} failed: {exc}", file=sys.stderr)


def measure(bed: TestBed, args: argparse.Namespace) -> tuple[list[Case], dict[str, int], tuple[float, float]]:
    t0 = time.perf_counter()
    pods = asyncio.run(atoll_pods(bed))
    worker = bed.hosts[0]
    overlay_mtu = link_mtu(worker.netns_path, OVERLAY_DEV)
    vx = HandBuiltVxlan(bed, [bed.add_host(docker=False), bed.add_host(docker=False)], overlay_mtu)
    iperf = Iperf()
    with cleanup("the hand-built VXLAN", vx.remove), cleanup("iperf3 servers", iperf.close):
        vx_server, vx_client = vx.build()
        cases = [
            Case("same host, Atoll pods", pods["client-same"], pods["server"]),
            Case(
                "cross host, Atoll overlay",
                pods["client-cross"],
                pods["server"],
                via=(bed.hosts[1].netns_path, OVERLAY_DEV),
            ),
            Case("cross host, hand-built VXLAN", vx_client, vx_server, via=(vx.hosts[1].netns_path, "vx0")),
        ]
        for case in cases:
            reachable(case.client, case.server)
        mtus = {
            "underlay eth0": link_mtu(worker.netns_path, "eth0"),
            OVERLAY_DEV: overlay_mtu,
            "Atoll pod eth0": link_mtu(pods["server"].netns, "eth0"),
            "hand-built vx0": link_mtu(vx.hosts[0].netns_path, "vx0"),
            "hand-built pod eth0": link_mtu(vx_server.netns, "eth0"),
        }
        iperf.serve(pods["server"])
        iperf.serve(vx_server)
        print(f"cluster, pods and baseline up in {time.perf_counter() - t0:.1f}s; measuring", file=sys.stderr)
        load_before = os.getloadavg()[0]
        for _ in range(args.repeat):
            for case in cases:  # interleaved: drift hits every case alike
                before = tx_bytes(*case.via) if case.via else 0
                sample = iperf.run(case.client, case.server, args.seconds)
                if case.via and tx_bytes(*case.via) - before < sample.bytes:
                    raise RuntimeError(f"{case.name}: the data did not go through {case.via[1]}")
                case.samples.append(sample)
                time.sleep(0.5)
        return cases, mtus, (load_before, os.getloadavg()[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5, help="length of one iperf3 run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case")
    args = parser.parse_args()
    if args.seconds <= 0 or args.repeat < 1:
        parser.error("--seconds must be > 0 and --repeat >= 1")
    signal.signal(signal.SIGTERM, _terminate)

    with TestBed(2) as bed:
        try:
            cases, mtus, load = measure(bed, args)
        except Exception:
            for host in bed.hosts:
                for proc in [host.dockerd, *host.processes]:
                    if proc is not None:
                        print(
                            f"{proc} (log {proc.log_path}), last lines:\n{proc.log_tail(20)}", file=sys.stderr
                        )
            raise
    report(cases, args, mtus, load)


if __name__ == "__main__":
    main()
