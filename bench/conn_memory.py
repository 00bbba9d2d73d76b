"""What one agent's connection costs a server, gRPC alone: the floor under the coordinator's bytes per agent.

    .venv/bin/python bench/conn_memory.py [--conns 1000] [--streams 3] [--client-procs 2]

A server process runs atoll.rpc.start_server (the coordinator's options,
interceptors, health and reflection) with mutual TLS on loopback, or plain
text for comparison. Client processes open --conns connections (each channel
its own subchannel, like agents on separate hosts), make one unary call on
each (health Check), then hold --streams server streams open on each
(a NodeService stream that answers once and stays open, like an agent's
three: assignment, node config, services), first with the server on its
loop, then on a LoopThread with its handlers handed to the main loop, as the
coordinator's API runs (atoll.handoff), and last with the heartbeat lane's
options (coordinator.api.node.lane.LANE_SERVER_OPTIONS). The server's RSS is
sampled after each step; the figures per connection are what gRPC, TLS and
a Python stream cost before Atoll keeps anything for the node. bench/hollow.py
measures the coordinator's whole cost per agent; the difference is Atoll's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator

import grpc
import psutil
from common import ROOT  # type: ignore[import-not-found]
from grpc_health.v1 import health_pb2, health_pb2_grpc

from atoll import pki, rpc
from atoll.handoff import Handoff, LoopThread
from atoll.v1 import node_api_pb2, node_api_pb2_grpc
from coordinator.api.node import lane


class HeldStreams(node_api_pb2_grpc.NodeServiceServicer):  # type: ignore[misc]
    """WatchNodeConfig answers once and then holds the stream open, as the coordinator's watches do."""

    async def WatchNodeConfig(self, request: object, context: object) -> AsyncIterator[object]:
        yield node_api_pb2.WatchNodeConfigResponse()
        await asyncio.Event().wait()


STEPS = ("connected", "streams")


async def serve(tls_dir: str, handed_over: bool, lane_options: bool = False) -> None:
    credentials = None
    if tls_dir:
        d = pathlib.Path(tls_dir)
        credentials = grpc.ssl_server_credentials(
            [((d / "server.key").read_bytes(), (d / "server.crt").read_bytes())],
            root_certificates=(d / "ca.crt").read_bytes(),
            require_client_auth=True,
        )
    binding = rpc.ServiceBinding(
        HeldStreams(), node_api_pb2_grpc.add_NodeServiceServicer_to_server, "atoll.v1.NodeService"
    )
    listen = [rpc.Listener("127.0.0.1:0", credentials)]
    if handed_over:  # as the coordinator serves: on a loop thread, handlers on this loop
        front = LoopThread("bench-front")
        front.start()
        handoff = Handoff(asyncio.get_running_loop())
        server = await front.run(rpc.start_server(listen, [binding], handoff=handoff), 30)
    else:  # on this loop; with `lane_options`, built as the heartbeat lane's servers are
        options = lane.LANE_SERVER_OPTIONS if lane_options else ()
        server = await rpc.start_server(listen, [binding], options=options)
    print(json.dumps({"port": server.port}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def clients(port: int, tls_dir: str, count: int, streams: int) -> None:
    options = [("grpc.use_local_subchannel_pool", 1)]  # one connection per channel, like separate hosts
    if tls_dir:
        d = pathlib.Path(tls_dir)
        creds = grpc.ssl_channel_credentials(
            (d / "ca.crt").read_bytes(), (d / "client.key").read_bytes(), (d / "client.crt").read_bytes()
        )
        options.append(("grpc.ssl_target_name_override", "localhost"))
        channels = [grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options) for _ in range(count)]
    else:
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options) for _ in range(count)]
    stubs = [health_pb2_grpc.HealthStub(c) for c in channels]
    nodes = [node_api_pb2_grpc.NodeServiceStub(c) for c in channels]
    for i in range(0, count, 50):  # 50 handshakes at a time
        await asyncio.gather(
            *(s.Check(health_pb2.HealthCheckRequest(), timeout=60) for s in stubs[i : i + 50])
        )
    print(json.dumps({"step": "connected"}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    calls = []
    # 50 connections' streams at a time, as agents arrive. All at once, past gRPC's 1,000 pending
    # requests (grpc.server.max_pending_requests) the server cancels some of the new streams.
    for i in range(0, count, 50):
        batch = [n.WatchNodeConfig(node_api_pb2.WatchNodeConfigRequest()) for n in nodes[i : i + 50]
                 for _ in range(streams)]  # fmt: skip
        await asyncio.gather(*(call.read() for call in batch))  # the first answers: the streams are open
        calls += batch
    print(json.dumps({"step": "streams"}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for c in channels:
        await c.close()


def make_tls(directory: pathlib.Path) -> None:
    ca = pki.CertificateAuthority.create(3600)
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    for name, server in (("server", True), ("client", False)):
        key, cert = ca.issue_key_pair(cn=name, dns=["localhost"], lifetime=3600, server=server)
        (directory / f"{name}.key").write_bytes(key)
        (directory / f"{name}.crt").write_bytes(cert)


def spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'bench'}"}
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )


def line(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    text = proc.stdout.readline()
    if not text:
        raise RuntimeError(f"process {proc.pid} ended")
    answer: dict[str, object] = json.loads(text)
    return answer


def tell(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()


def rss_mib(pid: int) -> float:
    time.sleep(2.0)  # a measuring pause: let the server settle after the step
    return psutil.Process(pid).memory_info().rss / 2**20


def measure(
    tls_dir: str, conns: int, streams: int, procs: int, handed_over: bool, lane_options: bool = False
) -> dict[str, float]:
    flags = [*(["--handoff"] if handed_over else []), *(["--lane-options"] if lane_options else [])]
    server = spawn("--serve", "--tls", tls_dir, *flags)
    try:
        port = int(str(line(server)["port"]))
        figures = {"idle": rss_mib(server.pid)}
        share = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
        fleet = [spawn("--clients", str(port), "--tls", tls_dir, "--count", str(n), "--streams", str(streams))
                 for n in share]  # fmt: skip
        try:
            for step in STEPS:
                for client in fleet:
                    assert line(client)["step"] == step
                figures[step] = rss_mib(server.pid)
                for client in fleet:
                    tell(client)
        finally:
            for client in fleet:
                client.wait(timeout=60)
    finally:
        tell(server)
        server.wait(timeout=30)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=3, help="server streams held per connection")
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tls", default="", help=argparse.SUPPRESS)
    parser.add_argument("--handoff", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--lane-options", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.tls, args.handoff, args.lane_options))
        return
    if args.clients:
        asyncio.run(clients(args.clients, args.tls, args.count, args.streams))
        return

    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB")
    print(
        f"server RSS with {args.conns} connections, {args.streams} server streams each (MiB; KiB per connection)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        make_tls(pathlib.Path(tmp))
        for label, tls_dir, handed_over, lane_options in (
            ("plain text", "", False, False),
            ("mutual TLS", tmp, False, False),
            ("TLS, front", tmp, True, False),  # the coordinator's API: atoll.handoff
            ("TLS, lane", tmp, False, True),  # the heartbeat lane's options (4 KiB TLS records)
        ):
            f = measure(tls_dir, args.conns, args.streams, args.client_procs, handed_over, lane_options)
            per_conn = (f["connected"] - f["idle"]) * 1024 / args.conns
            per_stream = (f["streams"] - f["connected"]) * 1024 / (args.conns * max(1, args.streams))
            print(
                f"  {label:11} idle {f['idle']:6.1f}  connected {f['connected']:6.1f} ({per_conn:5.1f} KiB each)"
                f"  +streams {f['streams']:6.1f} ({per_stream:5.1f} KiB per stream)"
                f"  total {(f['streams'] - f['idle']) * 1024 / args.conns:5.1f} KiB per connection",
                flush=True,
            )


if __name__ == "__main__":
    main()
