"""Half-open TLS handshakes from one source against a real coordinator process.

    .venv/bin/python bench/handshake_flood.py [--connections 20000] [--target token|api]
        [--unprotected] [--seconds 10]

A coordinator runs as its own process (`coordinator serve`, loopback only).
A flooder process opens --connections TCP connections to the token port
(--target api: the API port) from 127.0.0.2, each sending the first bytes
of a TLS ClientHello and nothing more, as fast as it can with up to
--window open at once, and waits for the server to end each one (--hold s at
most). Meanwhile this process measures good clients from 127.0.0.1, each a new
connection plus one List call: an admin with a client certificate on the API
port and a bearer-token viewer on the token port.

Printed: each good client's connect+call latency p50/p99 and failures, for
--seconds without the flood (baseline) and during the flood, and their ratio;
how the flood's connections ended: reset at once (refused by a cap), closed
by the server (the handshake deadline, with the time it took), still open
when the flooder gave up, or not connected at all; and the coordinator's
open descriptors at the peak.

--unprotected runs the coordinator as it was before the caps (handshake
deadline 120 s, caps too high to matter), the finding's set-up.
Everything is bounded in time: the flooder stops after --hold seconds per
connection and --flood-timeout in all.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import pathlib
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil
from common import machine, summary  # type: ignore[import-not-found]

from atoll import errors, kinds, rlimits
from coordinator.auth import tokens
from coordinator.client import config as clientconfig
from coordinator.client.api import Client
from coordinator.client.config import ClientConfig

NODE = kinds.by_name("Node")
FLOOD_SOURCE = "127.0.0.2"
PARTIAL_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
PROBE_TIMEOUT = 15.0
CONNECT_TIMEOUT = 30.0
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the flooder (a child process: its descriptors and CPU are its own) ----


async def flood(port: int, count: int, window: int, hold: float, deadline: float) -> dict[str, object]:
    ends = {"reset": 0, "closed": 0, "held": 0, "not_connected": 0}
    closed_after: list[float] = []
    failures: dict[str, int] = {}
    slots = asyncio.Semaphore(window)

    loop = asyncio.get_running_loop()

    async def one() -> None:
        # Raw sockets: streams cost too much CPU per connection for a flood.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # The port is picked at connect(), per 4-tuple: a bound flood must not use up the
            # ephemeral ports the good clients' connect() needs (a bench artefact otherwise).
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((FLOOD_SOURCE, 0))
            sock.setblocking(False)
            started = time.monotonic()
            try:
                await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), CONNECT_TIMEOUT)
                sock.send(PARTIAL_HELLO)
            except ConnectionResetError:  # reset right after the connect: refused at once
                ends["reset"] += 1
                return
            except (OSError, TimeoutError) as exc:
                ends["not_connected"] += 1
                code = getattr(exc, "errno", None)
                why = errno.errorcode.get(code, type(exc).__name__) if code else type(exc).__name__
                failures[why] = failures.get(why, 0) + 1
                return
            try:
                left = max(0.1, min(hold, deadline - time.monotonic()))
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), left)
                if data:  # gRPC never answers a partial hello; anything else counts as still open
                    ends["held"] += 1
                else:
                    ends["closed"] += 1
                    closed_after.append(time.monotonic() - started)
            except (ConnectionResetError, BrokenPipeError):
                ends["reset"] += 1
            except TimeoutError:
                ends["held"] += 1
        finally:
            sock.close()
            slots.release()

    started = time.monotonic()
    tasks = []
    for _ in range(count):
        await slots.acquire()
        if time.monotonic() > deadline:
            slots.release()
            break
        tasks.append(asyncio.create_task(one()))
    opened_in = time.monotonic() - started
    await asyncio.gather(*tasks)
    return {
        "attempted": len(tasks),
        "opened_in_s": round(opened_in, 2),
        "took_s": round(time.monotonic() - started, 2),
        **ends,
        "not_connected_why": failures,
        "closed_after_s": {k: round(v, 2) for k, v in summary(closed_after).items()} if closed_after else {},
    }


def flood_child(args: argparse.Namespace) -> None:
    rlimits.raise_nofile()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    window = min(args.window, soft - 100)
    deadline = time.monotonic() + args.flood_timeout
    result = asyncio.run(flood(args.port, args.connections, window, args.hold, deadline))
    print(json.dumps({"window": window, **result}))


# ---- the coordinator and the good clients ----


async def probe(config: ClientConfig) -> float | None:
    """Seconds for a new connection plus one List call; None when it failed or took too long."""
    started = time.monotonic()
    try:
        async with Client(config.server, config=config) as client:
            await asyncio.wait_for(client.list(NODE), PROBE_TIMEOUT)
    except (errors.AtollError, TimeoutError):
        return None
    return time.monotonic() - started


async def probe_for(
    configs: dict[str, ClientConfig], until: float | asyncio.Task[Any]
) -> dict[str, list[float | None]]:
    """Probe every client in turn until the time or the task ends."""
    samples: dict[str, list[float | None]] = {name: [] for name in configs}
    while True:
        done = until.done() if isinstance(until, asyncio.Task) else time.monotonic() >= until
        if done and all(samples.values()):
            return samples
        for name, config in configs.items():
            samples[name].append(await probe(config))
        await asyncio.sleep(0.05)


def report(name: str, base: list[float | None], during: list[float | None]) -> None:
    ok_base = [x * 1000 for x in base if x is not None]
    ok_during = [x * 1000 for x in during if x is not None]
    b, d = summary(ok_base), summary(ok_during)
    print(f"  {name}:")
    print(
        f"    without flood: n={len(base)} failed={len(base) - len(ok_base)} p50={b['p50']:.1f} ms p99={b['p99']:.1f} ms"
    )
    print(
        f"    during flood:  n={len(during)} failed={len(during) - len(ok_during)} p50={d['p50']:.1f} ms p99={d['p99']:.1f} ms"
    )
    print(f"    ratio during/without: p50 x{d['p50'] / b['p50']:.2f}, p99 x{d['p99'] / b['p99']:.2f}")


async def watch_fds(proc: psutil.Process, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], proc.num_fds())
        except psutil.Error:
            return
        await asyncio.sleep(0.2)


async def main_async(args: argparse.Namespace) -> None:
    port, token_port = free_port(), free_port()
    data = pathlib.Path(tempfile.mkdtemp(prefix="atoll-flood-"))
    extra = (
        ["--handshake-timeout", "120", "--max-unauthenticated-conns-per-source", "1000000",
         "--max-unauthenticated-conns", "1000000"]
        if args.unprotected else []
    )  # fmt: skip
    log = open(data / "coordinator.log", "w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli.main", "serve", "--listen", f"127.0.0.1:{port}",
         "--data-dir", str(data / "store"), "--token-listen", f"127.0.0.1:{token_port}",
         "--log-level", "warning", *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    admin_conf = data / "store" / "admin.conf"
    try:
        for _ in range(150):
            if admin_conf.exists():
                break
            await asyncio.sleep(0.2)
        admin = clientconfig.parse(admin_conf.read_text(), str(admin_conf))
        async with Client(config=admin) as client:
            for _ in range(100):
                try:
                    await client.list(NODE)
                    break
                except errors.AtollError:
                    await asyncio.sleep(0.2)
            token_id, secret = tokens.generate()
            await client.create(
                tokens.new_token(
                    token_id, secret, ttl=3600, usages=(tokens.USAGE_AUTH,), user="probe", role="viewer"
                )
            )
        viewer = ClientConfig(server=f"127.0.0.1:{token_port}", ca=admin.ca, token=f"{token_id}.{secret}")
        configs = {"admin, certificate, API port": admin, "viewer, bearer token, token port": viewer}
        coord = psutil.Process(proc.pid)
        limit = coord.rlimit(psutil.RLIMIT_NOFILE)
        print(f"coordinator pid {proc.pid}, descriptor limit {limit[0]} (hard {limit[1]}), "
              f"{'UNPROTECTED' if args.unprotected else 'protected'}; flood on the {args.target} port")  # fmt: skip

        base = await probe_for(configs, time.monotonic() + args.seconds)
        target = token_port if args.target == "token" else port
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--flood-child", "--port", str(target),
            "--connections", str(args.connections), "--window", str(args.window),
            "--hold", str(args.hold), "--flood-timeout", str(args.flood_timeout),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stop, peak = asyncio.Event(), [0]
        watcher = asyncio.create_task(watch_fds(coord, stop, peak))
        flooding = asyncio.create_task(child.communicate())
        during = await probe_for(configs, flooding)
        out, _ = await flooding
        stop.set()
        await watcher
        result = json.loads(out.decode().strip().splitlines()[-1])

        print(f"flood: {args.connections} half-open connections from {FLOOD_SOURCE}")
        print("  " + json.dumps(result))
        print(f"  coordinator descriptors at peak: {peak[0]} (limit {limit[0]})")
        print("good clients from 127.0.0.1 (new connection + List):")
        for name in configs:
            report(name, base[name], during[name])
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=19_000, help="flood connections open at once at most")
    parser.add_argument(
        "--hold", type=float, default=15.0, help="seconds a flood connection waits for its end"
    )
    parser.add_argument(
        "--flood-timeout", type=float, default=120.0, help="seconds the flood may take in all"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="baseline probing time")
    parser.add_argument("--target", choices=("token", "api"), default="token")
    parser.add_argument("--unprotected", action="store_true", help="the coordinator as before the caps")
    parser.add_argument("--flood-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood_child:
        flood_child(args)
    else:
        print(machine())
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
