"""The Kubernetes REST API against gRPC, same coordinator, same run: listing 5,000 pods and watch latency.

    .venv/bin/python bench/kube_api.py [--pods 5000] [--rounds 5] [--events 50]

Starts `coordinator serve --insecure` as a process on loopback (gRPC and
--kube-listen, plain text: TLS would cost both the same), creates the pods
over gRPC (bound to a node that does not exist, so that no scheduler or
agent writes meanwhile), then times, --rounds times each:

  grpc       Client.list of every pod (pages of 500, as the CLI does)
  rest-raw   GET /api/v1/namespaces/default/pods as JSON (aiohttp, json.loads)
  rest-py    the Python `kubernetes` client's list_namespaced_pod (models built)
  kubectl    `kubectl get pods -o json` (a process: discovery, list, printing)

and the watch latency of --events label changes made over gRPC, seen by a
gRPC watch and a REST watch open at the same time: from just before the
Update call to the event's arrival. Prints medians and the ratios to gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp
from common import ROOT, machine  # type: ignore[import-not-found]  # also puts the repo on sys.path

from atoll import kinds
from atoll.v1 import pod_pb2
from coordinator.client.api import Client

POD = kinds.by_name("Pod")
KUBECTL = shutil.which("kubectl", path=str(pathlib.Path(sys.executable).parent)) or "kubectl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pod(i: int) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = f"bench-{i:05d}"
    p.metadata.labels.update({"bench": "kube-api", "index": str(i)})
    p.spec.node_name = "no-such-node"  # bound: the scheduler leaves it alone
    c = p.spec.containers.add(name="web", image="atoll/busybox", command=["sleep", "3600"])
    c.ports.add(container_port=80)
    c.env.add(name="INDEX", value=str(i))
    return p


async def wait_serving(grpc_port: int, kube_port: int) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"http://127.0.0.1:{kube_port}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the coordinator did not start serving within 60 s")
            await asyncio.sleep(0.2)


async def create_pods(client: Client, count: int) -> None:
    for start in range(0, count, 200):
        await asyncio.gather(*(client.create(pod(i)) for i in range(start, min(start + 200, count))))


async def timed(rounds: int, action) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        n = await action()
        out.append(time.perf_counter() - t0)
        assert n > 0
    return out


async def measure_lists(
    client: Client, kube: str, kubeconfig: pathlib.Path, count: int, rounds: int
) -> dict[str, list[float]]:
    from kubernetes import client as kclient
    from kubernetes import config as kconfig

    async def grpc_list() -> int:
        items, _ = await client.list(POD, "default", chunk_size=500)
        assert len(items) == count
        return len(items)

    async with aiohttp.ClientSession() as session:

        async def rest_raw() -> int:
            async with session.get(f"{kube}/api/v1/namespaces/default/pods") as r:
                body = json.loads(await r.read())
            assert len(body["items"]) == count, len(body["items"])
            return len(body["items"])

        api = kclient.CoreV1Api(kconfig.new_client_from_config(str(kubeconfig)))

        async def rest_py() -> int:
            result = await asyncio.to_thread(api.list_namespaced_pod, "default")
            assert len(result.items) == count
            return len(result.items)

        async def kubectl() -> int:
            proc = await asyncio.create_subprocess_exec(
                KUBECTL, "--kubeconfig", str(kubeconfig), "get", "pods", "-o", "json",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"kubectl failed: {err.decode()}")
            return len(json.loads(out)["items"])

        results = {}
        for name, action in (
            ("grpc", grpc_list),
            ("rest-raw", rest_raw),
            ("rest-py", rest_py),
            ("kubectl", kubectl),
        ):
            await action()  # warm up (connections, kubectl's discovery cache)
            results[name] = await timed(rounds, action)
            print(f"  {name:9s} median {statistics.median(results[name]):.3f} s", flush=True)
    return results


async def measure_watch(client: Client, kube: str, events: int) -> dict[str, list[float]]:
    target = "bench-00000"
    started: dict[int, float] = {}  # label value -> perf_counter before the update
    arrived: dict[str, dict[int, float]] = {"grpc": {}, "rest": {}}
    _, revision = await client.list(POD, "default", "index=0")

    def note(path: str, labels: dict[str, str]) -> None:
        value = labels.get("tick")
        if value is not None:
            arrived[path].setdefault(int(value), time.perf_counter())

    async def grpc_watch() -> None:
        async for _, obj in client.watch(POD, "default", "index=0", revision):
            note("grpc", dict(obj.metadata.labels))  # type: ignore[attr-defined]

    async def rest_watch(session: aiohttp.ClientSession) -> None:
        url = f"{kube}/api/v1/namespaces/default/pods?watch=1&labelSelector=index%3D0&resourceVersion={revision}"
        async with session.get(url) as r:
            async for line in r.content:
                event = json.loads(line)
                note("rest", event["object"]["metadata"].get("labels") or {})

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        tasks = [asyncio.create_task(grpc_watch()), asyncio.create_task(rest_watch(session))]
        await asyncio.sleep(0.5)
        for tick in range(events):
            current = await client.get(POD, "default", target)
            current.metadata.labels["tick"] = str(tick)  # type: ignore[attr-defined]
            started[tick] = time.perf_counter()
            await client.update(current)
            deadline = time.monotonic() + 10
            while not all(tick in a for a in arrived.values()) and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {path: [a[t] - started[t] for t in started if t in a] for path, a in arrived.items()}


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=50)
    args = parser.parse_args()
    print(machine())
    grpc_port, kube_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="atoll-bench-kube-") as tmp:
        work = pathlib.Path(tmp)
        argv = [
            sys.executable, "-m", "coordinator.cli.main", "serve", "--insecure", "--token-listen", "",
            "--listen", f"127.0.0.1:{grpc_port}", "--kube-listen", f"127.0.0.1:{kube_port}",
            "--data-dir", str(work / "data"), "--store-sync", "NORMAL", "--log-level", "warning",
            "--api-rate", "100000", "--api-burst", "100000",
        ]  # fmt: skip
        log = (work / "coordinator.log").open("w")
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
        try:
            await wait_serving(grpc_port, kube_port)
            kube = f"http://127.0.0.1:{kube_port}"
            kubeconfig = work / "kubeconfig"
            kubeconfig.write_text(
                json.dumps(
                    {
                        "apiVersion": "v1",
                        "kind": "Config",
                        "clusters": [{"name": "bench", "cluster": {"server": kube}}],
                        "users": [{"name": "bench", "user": {}}],
                        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
                        "current-context": "bench",
                    }
                )
            )
            async with Client(f"127.0.0.1:{grpc_port}") as client:
                t0 = time.perf_counter()
                await create_pods(client, args.pods)
                print(f"created {args.pods} pods over gRPC in {time.perf_counter() - t0:.1f} s", flush=True)
                print(f"listing {args.pods} pods, {args.rounds} rounds each:")
                lists = await measure_lists(client, kube, kubeconfig, args.pods, args.rounds)
                print(f"watch latency, {args.events} label changes:")
                watch = await measure_watch(client, kube, args.events)
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
    base = statistics.median(lists["grpc"])
    print()
    print(f"{'list of ' + str(args.pods) + ' pods':24s} {'median s':>9s} {'vs gRPC':>8s}")
    for name, values in lists.items():
        median = statistics.median(values)
        print(f"{name:24s} {median:9.3f} {median / base:7.2f}x")
    print()
    wbase = statistics.median(watch["grpc"]) * 1000
    print(f"{'watch event latency':24s} {'p50 ms':>9s} {'p90 ms':>8s} {'vs gRPC':>8s}")
    for name, values in watch.items():
        ms = sorted(v * 1000 for v in values)
        p50, p90 = statistics.median(ms), ms[int(len(ms) * 0.9) - 1]
        print(f"{name:24s} {p50:9.2f} {p90:8.2f} {p50 / wbase:7.2f}x   ({len(ms)} events)")


if __name__ == "__main__":
    asyncio.run(main())
