"""`delete`: by name, by label selector (-l), every object of a kind (--all), or what -f names."""

from __future__ import annotations

import argparse
import sys

from atoll import errors, kinds
from atoll.kinds import KindInfo
from coordinator.cli.applycmd import load
from coordinator.cli.common import UsageError, kind_info, namespace_of, split_kind, split_kinds
from coordinator.client.api import Client

Target = tuple[KindInfo, str, str]  # kind, namespace ("" for cluster-scoped kinds), name

USAGE = "delete needs a kind and names, a kind and -l SELECTOR or --all, or -f FILE"


async def _targets(client: Client, args: argparse.Namespace) -> list[Target]:
    by_query = bool(args.selector or args.all)
    if args.filename:
        if args.kind or by_query:
            raise UsageError("-f names what to delete: give no kind, names, -l or --all with it")
        targets = []
        for _, obj in load(args):
            info = kinds.of(obj)
            meta = obj.metadata  # type: ignore[attr-defined]
            targets.append((info, (meta.namespace or "default") if info.namespaced else "", meta.name))
        return targets
    if not args.kind:
        raise UsageError(USAGE)
    if by_query:
        if args.names or "/" in args.kind:
            raise UsageError("names cannot be given with -l or --all")
        targets = []
        for word in split_kinds(args.kind):
            info = kind_info(word)
            items, _ = await client.list(info, namespace_of(args, info), args.selector)
            targets += [(info, o.metadata.namespace, o.metadata.name) for o in items]  # type: ignore[attr-defined]
        return targets
    info, first = split_kind(args.kind, args.names[0] if args.names else None)
    names = [first, *args.names[1:]] if first else []
    if not names:
        raise UsageError(f"{USAGE} (to delete every {info.field}, say --all)")
    namespace = (args.namespace or "default") if info.namespaced else ""
    return [(info, namespace, n) for n in names]


async def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    targets = await _targets(client, args)
    if not targets and (args.selector or args.all):
        print("No resources found", file=sys.stderr)
        return 0
    code = 0
    for info, namespace, name in targets:
        try:
            await client.delete(info, namespace, name, orphan=args.cascade != "true")
        except errors.NotFound as exc:
            # kubectl goes on with the other names and fails at the end (--ignore-not-found: not at all).
            if not args.ignore_not_found:
                sys.stdout.flush()
                print(f"Error from server (NotFound): {exc}", file=sys.stderr)
                code = 1
            continue
        print(f'{info.name.lower()} "{name}" deleted')
    return code
