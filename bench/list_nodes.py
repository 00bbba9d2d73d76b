"""What listing every node costs, through the API, beside the bytes' own floor.

    .venv/bin/python bench/list_nodes.py [--nodes 4000] [--rounds 9]

An in-process coordinator (the functional tests' harness: real gRPC on
loopback, real SQLite) with one real agent, whose Node is copied under
--nodes names straight into the registry. Then `Client.list` of every node,
--rounds times: the call the capacity probe of bench/hollow.py makes, whose
p99 is one of issue 14's targets. The baseline, in the same run, is the floor
any server and client pay for the same reply: serialising the ListResponse
once and parsing it once, with no RPC.
"""

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
from tests.functional.harness import Cluster

NODE = kinds.by_name("Node")


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
        items, _ = await cluster.client.list(NODE)
        reply = cluster_pb2.ListResponse(items=[kinds.wrap(o) for o in items])
        api, floor = [], []
        for _ in range(rounds):
            began = time.perf_counter()
            await cluster.client.list(NODE)
            api.append(time.perf_counter() - began)
            began = time.perf_counter()
            cluster_pb2.ListResponse.FromString(reply.SerializeToString())
            floor.append(time.perf_counter() - began)
        api.sort()
        floor.sort()
        mid = rounds // 2
        print(f"{len(items)} nodes of {seed.ByteSize()} bytes, {reply.ByteSize() >> 10} KiB per list")
        print(f"  Client.list through the API   p50 {api[mid] * 1000:6.1f} ms, min {api[0] * 1000:6.1f} ms")
        print(
            f"  the reply's bytes, no RPC     p50 {floor[mid] * 1000:6.1f} ms, min {floor[0] * 1000:6.1f} ms"
        )
        print(f"  ratio                         p50 {api[mid] / floor[mid]:6.1f}")
    finally:
        await cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    print(machine())
    asyncio.run(run(args.nodes, args.rounds))


if __name__ == "__main__":
    main()
