"""What idle mutual-TLS connections cost a server and its clients in CPU, by keepalive interval.

    .venv/bin/python bench/idle_connections.py [--conns 2000] [--seconds 45]
        [--keepalive SERVER_MS/CLIENT_MS ...]

A server process runs atoll.rpc.start_server (health alone) with mutual TLS
on loopback; a client process opens --conns connections with atoll.rpc's
channel options (one per channel, like agents on separate hosts), makes one
call on each, and lets them sit idle, as an agent's API and heartbeat-lane
connections sit between heartbeats. After 15 s to settle, the CPU both
processes use over --seconds is measured (getrusage). Each --keepalive pair
replaces the servers' and the channels' keepalive interval (ms; "default":
atoll.rpc's own); the first pair is the baseline (default 10000/10000, the
intervals before atoll.rpc.CLIENT_KEEPALIVE_MS), and every row prints its
ratio to it. By default the pairs are the old intervals, today's, and the
servers' with the 10 s an agent's API channel keeps, twice over.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import grpc
from common import ROOT, machine  # type: ignore[import-not-found]
from conn_memory import line, make_tls, tell  # type: ignore[import-not-found]
from grpc_health.v1 import health_pb2, health_pb2_grpc

from atoll import rpc

SETTLE = 15.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def set_server_keepalive(pair: str) -> None:
    """Replace atoll.rpc's server keepalive interval in this process ("default": keep it)."""
    if pair == "default":
        return
    server_ms = int(pair.partition("/")[0])
    rpc._SERVER_OPTIONS[:] = [
        (k, server_ms if k == "grpc.keepalive_time_ms" else v) for k, v in rpc._SERVER_OPTIONS
    ]


def client_keepalive_ms(pair: str) -> int:
    return rpc.CLIENT_KEEPALIVE_MS if pair == "default" else int(pair.split("/")[1])


async def answer_cpu_queries() -> None:
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        print(json.dumps({"cpu": cpu_seconds()}), flush=True)


async def serve(tls_dir: str, pair: str) -> None:
    set_server_keepalive(pair)
    d = pathlib.Path(tls_dir)
    credentials = grpc.ssl_server_credentials(
        [((d / "server.key").read_bytes(), (d / "server.crt").read_bytes())],
        root_certificates=(d / "ca.crt").read_bytes(),
        require_client_auth=True,
    )
    server = await rpc.start_server([rpc.Listener("127.0.0.1:0", credentials)], [])
    print(json.dumps({"port": server.port}), flush=True)
    await answer_cpu_queries()
    await server.stop(0)


async def clients(port: int, tls_dir: str, pair: str, count: int) -> None:
    d = pathlib.Path(tls_dir)
    creds = grpc.ssl_channel_credentials(
        (d / "ca.crt").read_bytes(), (d / "client.key").read_bytes(), (d / "client.crt").read_bytes()
    )
    options = [
        *rpc.channel_options(client_keepalive_ms(pair)),
        ("grpc.use_local_subchannel_pool", 1),  # one connection per channel
        ("grpc.ssl_target_name_override", "localhost"),
    ]
    channels = [grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options) for _ in range(count)]
    stubs = [health_pb2_grpc.HealthStub(c) for c in channels]
    for i in range(0, count, 50):  # 50 handshakes at a time
        await asyncio.gather(
            *(s.Check(health_pb2.HealthCheckRequest(), timeout=60) for s in stubs[i : i + 50])
        )
    print(json.dumps({"connected": count}), flush=True)
    await answer_cpu_queries()
    for c in channels:
        await c.close()


def spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'bench'}"}
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # gRPC's own log lines at shutdown
        text=True,
        env=env,
    )


def ask_cpu(proc: subprocess.Popen[str]) -> float:
    tell(proc)
    return float(str(line(proc)["cpu"]))


def measure(tls_dir: str, pair: str, conns: int, seconds: float) -> tuple[float, float]:
    """(server, clients) CPU in % of a core while `conns` connections sit idle."""
    server = spawn("--serve", tls_dir, "--keepalive", pair)
    fleet: subprocess.Popen[str] | None = None
    try:
        port = int(str(line(server)["port"]))
        fleet = spawn("--clients", str(port), "--tls", tls_dir, "--keepalive", pair, "--conns", str(conns))
        line(fleet)  # connected
        time.sleep(SETTLE)
        s0, c0 = ask_cpu(server), ask_cpu(fleet)
        time.sleep(seconds)
        s1, c1 = ask_cpu(server), ask_cpu(fleet)
        return 100 * (s1 - s0) / seconds, 100 * (c1 - c0) / seconds
    finally:
        for proc in (fleet, server):  # the clients close their channels before the server stops
            if proc is not None and proc.stdin is not None:
                proc.stdin.close()
                proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--keepalive", nargs="*", default=None, help="SERVER_MS/CLIENT_MS pairs, or default")
    parser.add_argument("--serve", default="", help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tls", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.keepalive[0]))
        return
    if args.clients:
        asyncio.run(clients(args.clients, args.tls, args.keepalive[0], args.conns))
        return

    # The old intervals, today's, and the agent's API channel's (agent.bootstrap.API_KEEPALIVE_MS).
    pairs = args.keepalive or ["10000/10000", "default", f"{rpc.SERVER_KEEPALIVE_MS}/10000"] * 2
    print(machine())
    print(
        f"{args.conns} idle mutual-TLS connections, CPU over {args.seconds:g} s"
        f" (default: server {rpc.SERVER_KEEPALIVE_MS} ms, client {rpc.CLIENT_KEEPALIVE_MS} ms)"
    )
    base: tuple[float, float] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        make_tls(pathlib.Path(tmp))
        for pair in pairs:
            server, client = measure(tmp, pair, args.conns, args.seconds)
            base = base or (server, client)
            per_conn = server / 100 * 1e6 / args.conns
            print(
                f"  keepalive {pair:>13}: server {server:5.1f} % of a core ({per_conn:5.1f} us/s per connection,"
                f" {server / base[0]:.2f}x the first), clients {client:5.1f} % ({client / base[1]:.2f}x)",
                flush=True,
            )


if __name__ == "__main__":
    main()
