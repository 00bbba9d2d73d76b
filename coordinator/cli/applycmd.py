"""`create -f` and `apply -f`: manifest files, directories of them (-R: and below), or stdin."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from google.protobuf.message import Message

from atoll import errors, kinds
from atoll.v1 import workloads_pb2
from coordinator import manifests
from coordinator.cli.common import UsageError, about, name_of, subject
from coordinator.cli.getcmd import print_objects
from coordinator.client.api import Client

MANIFEST_SUFFIXES = (".json", ".yaml", ".yml")


def manifest_paths(paths: Sequence[str], recursive: bool) -> list[str]:
    """Files as given; a directory's manifests in sorted order, as kubectl reads them (-R: and below).

    A file named on the command line is read whatever its suffix; in a directory only .json, .yaml
    and .yml files are, so an editor's backup or a README beside the manifests is left alone.
    """
    found: list[str] = []
    for path in paths:
        if path == "-" or not os.path.isdir(path):
            found.append(path)
            continue
        before = len(found)
        if recursive:
            for top, dirs, names in os.walk(path):
                dirs.sort()
                found += [os.path.join(top, n) for n in sorted(names) if n.endswith(MANIFEST_SUFFIXES)]
        else:
            found += [
                os.path.join(path, n)
                for n in sorted(os.listdir(path))
                if n.endswith(MANIFEST_SUFFIXES) and os.path.isfile(os.path.join(path, n))
            ]
        if len(found) == before:
            raise UsageError(
                f"no manifests (.json, .yaml, .yml) in {path}{'' if recursive else ' (-R: below it too)'}"
            )
    return found


def load(args: argparse.Namespace) -> list[tuple[str, Message]]:
    """Every object of -f's files, in order, with the file it came from; -n fills in namespaces."""
    objects: list[tuple[str, Message]] = []
    for path in manifest_paths(args.filename, getattr(args, "recursive", False)):
        items = manifests.load_text(sys.stdin.read(), "<stdin>") if path == "-" else manifests.load_file(path)
        for obj in items:
            meta = obj.metadata  # type: ignore[attr-defined]
            if args.namespace and kinds.of(obj).namespaced and not meta.namespace:
                meta.namespace = args.namespace
            objects.append(("<stdin>" if path == "-" else path, obj))
    return objects


async def cmd_create(client: Client, args: argparse.Namespace) -> int:
    loaded = load(args)
    objects = [obj for _, obj in loaded]
    # Validate everything on the server first, so that a bad file stores nothing at all.
    for path, obj in loaded:
        with about(path, obj):
            await client.create(obj, dry_run=True)
    if args.dry_run:
        for obj in objects:
            print(f"{name_of(obj)} created (dry run)")
        return 0
    created = []
    for path, obj in loaded:
        with about(path, obj):
            created.append(await client.create(obj))
        if not args.output:
            print(f"{name_of(obj)} created")
    if args.output:
        print_objects(created, args.output, kinds.of(created[0]), len(created) == 1, True)
    return 0


def same_intent(current: Message, wanted: Message) -> bool:
    """True when applying `wanted` (already defaulted) would change nothing the user wrote."""
    spec = type(wanted.spec)()  # type: ignore[attr-defined]
    spec.CopyFrom(wanted.spec)  # type: ignore[attr-defined]
    # What the server fills in where the file leaves it empty: a pod's node, a service's cluster IP.
    for assigned in ("node_name", "cluster_ip"):
        if hasattr(spec, assigned) and not getattr(spec, assigned):
            setattr(spec, assigned, getattr(current.spec, assigned))  # type: ignore[attr-defined]
    if isinstance(spec, workloads_pb2.ServiceSpec) and isinstance(current, workloads_pb2.Service):
        for port, had in zip(spec.ports, current.spec.ports, strict=False):  # allocated node ports
            port.node_port = port.node_port or had.node_port
    return (
        spec == current.spec  # type: ignore[attr-defined]
        and dict(wanted.metadata.labels) == dict(current.metadata.labels)  # type: ignore[attr-defined]
        and dict(wanted.metadata.annotations) == dict(current.metadata.annotations)  # type: ignore[attr-defined]
    )


async def cmd_apply(client: Client, args: argparse.Namespace) -> int:
    loaded = load(args)
    defaulted = []
    for path, obj in loaded:
        with about(path, obj):
            defaulted.append(await client.create(obj, dry_run=True))
    for (path, obj), wanted in zip(loaded, defaulted, strict=True):
        with about(path, obj):
            await _apply_one(client, path, obj, wanted, skip_conflicts=args.skip_conflicts)
    return 0


async def _apply_one(
    client: Client, path: str, obj: Message, wanted: Message, *, skip_conflicts: bool
) -> None:
    info = kinds.of(obj)
    meta = obj.metadata  # type: ignore[attr-defined]
    try:
        current = await client.get(info, meta.namespace or ("default" if info.namespaced else ""), meta.name)
    except errors.NotFound:
        await client.create(obj)
        print(f"{name_of(obj)} created")
        return
    if same_intent(current, wanted):
        print(f"{name_of(obj)} unchanged")
        return
    meta.resource_version = current.metadata.resource_version  # type: ignore[attr-defined]
    try:
        await client.update(obj)
    except (errors.InvalidArgument, errors.FailedPrecondition) as exc:
        # The file itself passed validation (the dry run), so the server refused the change from
        # the live object: it differs where no update may change it (someone changed it).
        if not skip_conflicts:
            raise
        sys.stdout.flush()  # after the lines of the objects before it, also when piped
        print(
            f"warning: {path}: {subject(obj)} differs from the file where apply cannot update it ({exc}); "
            "left as it is: delete it and apply again to replace it",
            file=sys.stderr,
        )
        return
    print(f"{name_of(obj)} configured")
