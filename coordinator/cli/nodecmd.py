"""`scale`, `cordon`, `uncordon`, `drain` and `logs`: the commands about nodes and running pods."""

from __future__ import annotations

import argparse
import sys

from atoll import errors, kinds
from atoll.v1 import cluster_pb2, node_pb2, pod_pb2, workloads_pb2
from coordinator.cli.common import UsageError, kind_info
from coordinator.client.api import Client


async def cmd_scale(client: Client, args: argparse.Namespace) -> int:
    info = kind_info(args.kind)
    if info.message is not workloads_pb2.ReplicationController:
        raise UsageError(f"cannot scale {info.plural}; scale a replication controller (rc)")
    if args.replicas < 0:
        raise UsageError("--replicas must not be negative")
    for _ in range(10):
        rc = await client.get(info, args.namespace or "default", args.name)
        assert isinstance(rc, workloads_pb2.ReplicationController)
        rc.spec.replicas = args.replicas
        try:
            await client.update(rc)
        except errors.Conflict:
            continue
        print(f"replicationcontroller/{args.name} scaled")
        return 0
    raise errors.Conflict(f"replicationcontroller {args.name} kept changing; try again")


async def _set_unschedulable(client: Client, name: str, value: bool) -> bool:
    node_kind = kinds.by_name("Node")
    for _ in range(10):
        node = await client.get(node_kind, "", name)
        assert isinstance(node, node_pb2.Node)
        if node.spec.unschedulable == value:
            return False
        node.spec.unschedulable = value
        try:
            await client.update(node)
        except errors.Conflict:
            continue
        return True
    raise errors.Conflict(f"node {name} kept changing; try again")


async def cmd_cordon(client: Client, args: argparse.Namespace) -> int:
    changed = await _set_unschedulable(client, args.node, True)
    print(f"node/{args.node} {'cordoned' if changed else 'already cordoned'}")
    return 0


async def cmd_uncordon(client: Client, args: argparse.Namespace) -> int:
    changed = await _set_unschedulable(client, args.node, False)
    print(f"node/{args.node} {'uncordoned' if changed else 'already uncordoned'}")
    return 0


async def cmd_drain(client: Client, args: argparse.Namespace) -> int:
    pod_kind = kinds.by_name("Pod")
    pods, _ = await client.list(pod_kind)
    on_node = [p for p in pods if isinstance(p, pod_pb2.Pod) and p.spec.node_name == args.node]
    unmanaged = [p for p in on_node if not any(r.controller for r in p.metadata.owner_references)]
    if unmanaged and not args.force:
        names = ", ".join(f"{p.metadata.namespace}/{p.metadata.name}" for p in unmanaged)
        raise UsageError(f"cannot delete pods not managed by a ReplicationController (use --force): {names}")
    await _set_unschedulable(client, args.node, True)
    print(f"node/{args.node} cordoned")
    for pod in on_node:
        try:
            await client.delete(pod_kind, pod.metadata.namespace, pod.metadata.name)
        except errors.NotFound:
            continue
        print(f'pod "{pod.metadata.name}" deleted')
    print(f"node/{args.node} drained")
    return 0


async def cmd_logs(client: Client, args: argparse.Namespace) -> int:
    request = cluster_pb2.GetLogsRequest(
        namespace=args.namespace or "default",
        pod=args.pod,
        container=args.container,
        follow=args.follow,
        tail_lines=args.tail,
        previous=args.previous,
        timestamps=args.timestamps,
    )
    out = sys.stdout.buffer
    async for data in client.logs(request):
        out.write(data)
        out.flush()
    return 0
