"""What listing every node costs, through the API, beside the bytes' own floor.

    .venv/bin/python bench/list_nodes.py [--nodes 4000] [--rounds 15]

An in-process coordinator (the functional tests' harness: real gRPC on
loopback, real SQLite) with one real agent, whose Node is copied under
--nodes names straight into the registry, each marked as heartbeating. Once
the store is quiet, `Client.list` of every node, --rounds times: the call the
capacity probe of bench/hollow.py makes, whose p99 is one of issue 14's
targets (client and server share this process's loop). Beside it, the
servicer's List alone, as a gRPC caller gets it (each object's encoding,
kept per revision, joined) and with each object parsed into the reply (how
it was built before). The baseline, in the same run, is the floor any server and
client pay for the same reply: serialising the ListResponse once and parsing
it once, with no RPC."""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import shutil
import tempfile
import time

from common import ROOT, machine  # type: ignore[import-not-found]  # noqa: F401 - puts the repo on sys.path

from atoll import kinds
from atoll.v1 import cluster_pb2, node_pb2
from coordinator.api.cluster import ClusterServicer
from coordinator.network.serviceips import ServiceIPAllocator
from coordinator.objects.registry import Registry
from tests.functional.harness import Cluster

NODE = kinds.by_name("Node")
GRPC_CALLER = object()  # any context but None: the servicer answers as to a gRPC client


async def settled(registry: Registry, quiet: float = 2.0, timeout: float = 120.0) -> None:
    """Until the store has taken no write for `quiet` seconds: the creates' aftermath (leases,
    informers, the lifecycle's first pass) is not timed as part of a list."""
    deadline = time.monotonic() + timeout
    last, since = registry.store.revision, time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if registry.store.revision != last:
            last, since = registry.store.revision, time.monotonic()


async def run(nodes: int, rounds: int) -> None:
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="atoll-list-bench-"))
    cluster = await Cluster(tmp).start()
    try:
        await cluster.add_node("seed")
        registry = cluster.coordinator.registry
        assert registry is not None and cluster.client is not None
        seed = await registry.get(NODE, "", "seed")
        assert isinstance(seed, node_pb2.Node)
        for i in range(nodes - 1):
            node = node_pb2.Node()
            node.CopyFrom(seed)
            node.metadata.name = node.metadata.labels["kubernetes.io/hostname"] = f"hollow-{i:05d}"
            node.metadata.uid, node.metadata.resource_version = "", 0
            await registry.create(node)
        health = cluster.coordinator.health
        assert health is not None
        for i in range(nodes - 1):  # hollow nodes that heartbeat: their live time is in every list
            health.last_heartbeat[f"hollow-{i:05d}"] = time.time()
        await settled(registry)
        items, _ = await cluster.client.list(NODE)
        reply = cluster_pb2.ListResponse(items=[kinds.wrap(o) for o in items])
        # The servicer's List alone, on the coordinator's registry and heartbeats: the reply
        # joined from kept encodings (what a gRPC caller gets), and each object parsed (as before).
        servicer = ClusterServicer(registry, health, None, ServiceIPAllocator(registry.store, "10.0.0.0/24"))  # type: ignore[arg-type]
        request = cluster_pb2.ListRequest(kind=NODE.kind)
        timings: dict[str, list[float]] = {"api": [], "encoded": [], "parsed": [], "floor": []}
        for _ in range(rounds):
            began = time.perf_counter()
            await cluster.client.list(NODE)
            timings["api"].append(time.perf_counter() - began)
            began = time.perf_counter()
            await servicer.List(request, GRPC_CALLER)
            timings["encoded"].append(time.perf_counter() - began)
            began = time.perf_counter()
            (await servicer.list_objects(request, GRPC_CALLER)).SerializeToString()
            timings["parsed"].append(time.perf_counter() - began)
            began = time.perf_counter()
            cluster_pb2.ListResponse.FromString(reply.SerializeToString())
            timings["floor"].append(time.perf_counter() - began)
        mid = rounds // 2
        p50 = {k: sorted(v)[mid] for k, v in timings.items()}
        print(f"{len(items)} nodes of {seed.ByteSize()} bytes, {reply.ByteSize() >> 10} KiB per list")
        for key, label in (
            ("api", "Client.list through the API"),
            ("encoded", "server: List, kept encodings joined"),
            ("parsed", "server: List, each object parsed"),
            ("floor", "the reply's bytes, no RPC"),
        ):
            print(f"  {label:32} p50 {p50[key] * 1000:6.1f} ms, min {min(timings[key]) * 1000:6.1f} ms")
        print(f"  ratio API / bytes' floor         p50 {p50['api'] / p50['floor']:6.1f}")
        print(f"  ratio server joined / parsed     p50 {p50['encoded'] / p50['parsed']:6.2f}")
    finally:
        await cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(machine())
    asyncio.run(run(args.nodes, args.rounds))


if __name__ == "__main__":
    main()
