"""`get` and `describe`: tables (one block per kind for `get pods,svc`), -o json|yaml|name, -w."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from google.protobuf.message import Message

from atoll import errors, kinds
from atoll.kinds import KindInfo
from atoll.v1 import cluster_pb2, node_pb2, pod_pb2, workloads_pb2
from coordinator.cli import printers
from coordinator.cli.common import (
    UsageError,
    is_coordinators,
    kind_info,
    name_of,
    namespace_of,
    split_kind,
    split_kinds,
)
from coordinator.client.api import Client

EVENT_NAMES: dict[int, str] = {
    cluster_pb2.EVENT_TYPE_ADDED: "ADDED",
    cluster_pb2.EVENT_TYPE_MODIFIED: "MODIFIED",
    cluster_pb2.EVENT_TYPE_DELETED: "DELETED",
}


def _dump(items: Sequence[Message], fmt: str, single: bool) -> str:
    from coordinator import manifests  # YAML and the v1 encoding: only for -o json|yaml

    doc = manifests.to_dict(items[0]) if single else manifests.to_list_dict(items)
    return manifests.dumps(doc, "json" if fmt == "json" else "yaml").rstrip()


def print_objects(
    items: Sequence[Message],
    fmt: str | None,
    info: KindInfo,
    single: bool,
    headers: bool,
    *,
    nodes: Sequence[node_pb2.Node] | None = None,
    options: printers.TableOptions | None = None,
    empty_note: bool = True,
) -> bool:
    """Print `items`; False when a table had nothing to show (the caller says "No resources found")."""
    if fmt in ("json", "yaml"):
        print(_dump(items, fmt, single))
    elif fmt == "name":
        for obj in items:
            print(name_of(obj))
    elif items or not headers:
        text = printers.render_table(
            info.message, items, fmt == "wide", headers, nodes=nodes, options=options
        )
        if text:
            print(text)
    else:
        if empty_note:
            print("No resources found.", file=sys.stderr)
        return False
    return True


async def _beside(client: Client, info: KindInfo, args: argparse.Namespace) -> list[node_pb2.Node] | None:
    """Machines are shown beside the nodes their agents registered as: those nodes, for the table."""
    if info.name != "Machine" or args.output not in (None, "wide"):
        return None
    nodes, _ = await client.list(kinds.by_name("Node"))
    return [n for n in nodes if isinstance(n, node_pb2.Node)]


async def cmd_get_coordinators(client: Client, args: argparse.Namespace) -> int:
    """``get coordinators``: the members of the control plane, the leader first."""
    members = (await client.coordinators()).members
    if args.output in ("json", "yaml"):
        from coordinator import manifests

        doc = {
            "kind": "CoordinatorList",
            "items": [
                {
                    "id": m.id,
                    "address": m.address,
                    "leader": m.leader,
                    "started": printers.common.timestamp(m.started),
                    **({"leaderSince": printers.common.timestamp(m.leader_since)} if m.leader else {}),
                }
                for m in members
            ],
        }
        print(manifests.dumps(doc, args.output), end="")
        return 0
    rows = [
        [
            m.id,
            m.address,
            "leader" if m.leader else "follower",
            printers.common.age(m.leader_since) if m.leader else "-",
            printers.common.age(m.started),
        ]
        for m in members
    ]
    text = printers.common.table(["NAME", "ADDRESS", "ROLE", "LEADING FOR", "AGE"], rows)
    print(text.split("\n", 1)[1] if args.no_headers and rows else "" if args.no_headers else text)
    return 0


def _options(args: argparse.Namespace, info: KindInfo, several: bool) -> printers.TableOptions:
    return printers.TableOptions(
        namespace=bool(args.all_namespaces and info.namespaced),
        labels=bool(getattr(args, "show_labels", False)),
        kind_prefix=info.name.lower() if several else "",
    )


async def cmd_get(client: Client, args: argparse.Namespace) -> int:
    if args.chunk_size < 0:
        raise UsageError("--chunk-size must not be negative")
    words = split_kinds(args.kind.split("/", 1)[0]) if "/" in args.kind else split_kinds(args.kind)
    if len(words) == 1:
        if is_coordinators(words[0]):
            return await cmd_get_coordinators(client, args)
        return await _get_one_kind(client, args)
    if args.name or "/" in args.kind:
        raise UsageError("a name needs a single kind: get pod NAME, not get pods,svc NAME")
    if args.watch:
        raise UsageError("watch one kind at a time")
    infos = [kind_info(w) for w in words]
    if args.output in ("json", "yaml"):  # one List of every kind, as kubectl prints it
        everything: list[Message] = []
        for info in infos:
            items, _ = await client.list(
                info, namespace_of(args, info), args.selector, chunk_size=args.chunk_size
            )
            everything += items
        print(_dump(everything, args.output, False))
        return 0
    printed = 0
    for info in infos:
        items, _ = await client.list(
            info, namespace_of(args, info), args.selector, chunk_size=args.chunk_size
        )
        if not items:
            continue
        if printed and args.output != "name":
            print()  # kubectl separates the kinds' tables by a blank line
        print_objects(
            items,
            args.output,
            info,
            False,
            not args.no_headers,
            nodes=await _beside(client, info, args),
            options=_options(args, info, several=True),
        )
        printed += 1
    if not printed:
        print("No resources found.", file=sys.stderr)
    return 0


async def _get_one_kind(client: Client, args: argparse.Namespace) -> int:
    info, name = split_kind(args.kind, args.name)
    namespace = namespace_of(args, info)
    options = _options(args, info, several=False)
    if name:
        # Watch from the store's revision: the object's own may be older than the kept history.
        revision = (await client.list_page(info, namespace, limit=1)).resource_version if args.watch else 0
        items = [await client.get(info, namespace or "default" if info.namespaced else "", name)]
    else:
        items, revision = await client.list(info, namespace, args.selector, chunk_size=args.chunk_size)
    nodes = await _beside(client, info, args)
    print_objects(items, args.output, info, bool(name), not args.no_headers, nodes=nodes, options=options)
    while args.watch:
        try:
            async for type_, obj in client.watch(info, namespace, args.selector, revision):
                if not name or obj.metadata.name == name:  # type: ignore[attr-defined]
                    await _print_event(client, info, args, type_, obj, options=options)
            return 0
        except errors.Gone as exc:
            # The history to resume from was compacted (or the watch fell behind): list again.
            print(f"watch: {exc}; listing again", file=sys.stderr)
            items, revision = await client.list(info, namespace, args.selector, chunk_size=args.chunk_size)
            for obj in items:
                if not name or obj.metadata.name == name:  # type: ignore[attr-defined]
                    await _print_event(client, info, args, cluster_pb2.EVENT_TYPE_ADDED, obj, options=options)
    return 0


async def _print_event(
    client: Client,
    info: KindInfo,
    args: argparse.Namespace,
    type_: int,
    obj: Message,
    *,
    options: printers.TableOptions,
) -> None:
    if args.output in ("json", "yaml"):
        import yaml

        from coordinator import manifests

        doc = {"type": EVENT_NAMES.get(type_, "UNKNOWN"), "object": manifests.to_dict(obj)}
        print(json.dumps(doc) if args.output == "json" else yaml.safe_dump(doc, sort_keys=False) + "---")
    else:
        nodes = await _beside(client, info, args)
        print_objects([obj], args.output, info, True, False, nodes=nodes, options=options)
    sys.stdout.flush()


async def cmd_describe(client: Client, args: argparse.Namespace) -> int:
    info, name = split_kind(args.kind, args.name)
    if name is None:
        raise UsageError("describe needs a kind and a name")
    namespace = namespace_of(args, info) or ("default" if info.namespaced else "")
    obj = await client.get(info, namespace, name)
    uid = obj.metadata.uid  # type: ignore[attr-defined]
    events_all, _ = await client.list(kinds.by_name("Event"), namespace if info.namespaced else "")
    events = sorted(
        (e for e in events_all if isinstance(e, workloads_pb2.Event) and e.involved_object.uid == uid),
        key=lambda e: e.last_timestamp.ToNanoseconds(),
    )
    pods: list[pod_pb2.Pod] | None = None
    endpoints: workloads_pb2.Endpoints | None = None
    if isinstance(obj, node_pb2.Node):
        listed, _ = await client.list(kinds.by_name("Pod"))
        pods = [p for p in listed if isinstance(p, pod_pb2.Pod) and p.spec.node_name == name]
    elif isinstance(obj, workloads_pb2.ReplicationController):
        listed, _ = await client.list(kinds.by_name("Pod"), namespace)
        pods = [
            p
            for p in listed
            if isinstance(p, pod_pb2.Pod) and any(r.uid == uid for r in p.metadata.owner_references)
        ]
    elif isinstance(obj, workloads_pb2.Service):
        try:
            found = await client.get(kinds.by_name("Endpoints"), namespace, name)
            endpoints = found if isinstance(found, workloads_pb2.Endpoints) else None
        except errors.NotFound:
            endpoints = None
    print(printers.describe(obj, pods=pods, endpoints=endpoints, events=events))
    return 0
