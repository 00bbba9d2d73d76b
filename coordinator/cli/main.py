"""`coordinator`: run the control plane (`serve`) or operate it, the kubectl way."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import yaml
from google.protobuf.message import Message

from atoll import errors, files, kinds, logs, rlimits, sdnotify
from atoll.aio import wait_or_stop
from atoll.kinds import KindInfo
from atoll.v1 import cluster_pb2, node_pb2, pod_pb2, workloads_pb2
from coordinator import config, manifests
from coordinator.cli import enroll as enroll_cli
from coordinator.cli import printers, security, storecmd
from coordinator.cli import provision as provision_cli
from coordinator.client import config as clientconfig
from coordinator.client.api import Client

if TYPE_CHECKING:
    from coordinator.server import Coordinator

log = logging.getLogger("coordinator")

EVENT_NAMES: dict[int, str] = {
    cluster_pb2.EVENT_TYPE_ADDED: "ADDED",
    cluster_pb2.EVENT_TYPE_MODIFIED: "MODIFIED",
    cluster_pb2.EVENT_TYPE_DELETED: "DELETED",
}


class UsageError(Exception):
    pass


class ObjectError(Exception):
    """An error about one object of a manifest file (`create -f`, `apply -f`): reported naming both."""

    def __init__(self, path: str, obj: Message, cause: errors.AtollError) -> None:
        self.where = f"{path}: {_subject(obj)}"
        self.cause = cause
        super().__init__(f"{self.where}: {cause}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coordinator", description="Atoll's control plane and operator CLI."
    )
    parser.add_argument(
        "--server",
        "-s",
        help=f"coordinator address (default: $ATOLL_SERVER, else the client config's, else {config.DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--config",
        dest="client_config",
        help=f"client config with the server's CA and your credentials (default: ${clientconfig.ENV_VAR}, "
        f"else {clientconfig.DEFAULT_PATH} if it exists)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    serve = sub.add_parser("serve", help="run the coordinator (API, scheduler, controllers)")
    config.add_serve_flags(serve)
    storecmd.add_parser(sub)

    def namespaced(p: argparse.ArgumentParser) -> None:
        p.add_argument("--namespace", "-n", default="", help="namespace (default: default)")
        p.add_argument("--all-namespaces", "-A", action="store_true", help="list across every namespace")

    get = sub.add_parser("get", help="list or show objects")
    get.add_argument("kind", help="nodes (no, minions), pods (po)")
    get.add_argument("name", nargs="?", help="one object's name")
    get.add_argument("--output", "-o", choices=["json", "yaml", "wide", "name"], help="output format")
    get.add_argument("--selector", "-l", default="", help="label selector, e.g. name=apache")
    get.add_argument("--watch", "-w", action="store_true", help="after listing, watch for changes")
    get.add_argument("--no-headers", action="store_true", help="omit the table header")
    get.add_argument(
        "--chunk-size", type=int, default=500, help="list this many objects per call (0: as many as fit)"
    )
    namespaced(get)

    describe = sub.add_parser("describe", help="show one object in detail")
    describe.add_argument("kind")
    describe.add_argument("name")
    namespaced(describe)

    create = sub.add_parser("create", help="create objects from manifest files")
    create.add_argument(
        "--filename", "-f", action="append", required=True, help="JSON or YAML manifest ('-' reads stdin)"
    )
    create.add_argument("--dry-run", action="store_true", help="validate on the server, store nothing")
    create.add_argument("--output", "-o", choices=["json", "yaml", "name"], help="print the created objects")
    namespaced(create)

    apply = sub.add_parser("apply", help="create objects from manifests, or update the ones that exist")
    apply.add_argument(
        "--filename", "-f", action="append", required=True, help="JSON or YAML manifest ('-' reads stdin)"
    )
    apply.add_argument(
        "--skip-conflicts",
        action="store_true",
        help="an object that differs from its file where an update cannot change it (a pod's containers, "
        "say) is reported, left as it is and not an error",
    )
    namespaced(apply)

    delete = sub.add_parser("delete", help="delete objects by name or by manifest")
    delete.add_argument("kind", nargs="?")
    delete.add_argument("names", nargs="*")
    delete.add_argument("--filename", "-f", action="append", help="delete what these manifests name")
    namespaced(delete)

    delete.add_argument(
        "--cascade",
        default="true",
        choices=["true", "false", "orphan"],
        help="delete a controller's pods too (default), or leave them running (false/orphan)",
    )

    scale = sub.add_parser("scale", help="set a replication controller's replica count")
    scale.add_argument("kind", help="rc (replicationcontroller)")
    scale.add_argument("name")
    scale.add_argument("--replicas", type=int, required=True)
    namespaced(scale)

    for verb, text in (
        ("cordon", "mark a node unschedulable"),
        ("uncordon", "mark a node schedulable again"),
        ("drain", "cordon a node and delete its pods (controllers recreate them elsewhere)"),
    ):
        p = sub.add_parser(verb, help=text)
        p.add_argument("node")
        if verb == "drain":
            p.add_argument("--force", action="store_true", help="also delete pods that no controller manages")

    logs = sub.add_parser("logs", help="print a container's logs")
    logs.add_argument("pod")
    logs.add_argument(
        "--container", "-c", default="", help="container name (needed when the pod has several)"
    )
    logs.add_argument("--follow", "-f", action="store_true", help="stream new output")
    logs.add_argument("--tail", type=int, default=0, help="only the last N lines")
    logs.add_argument("--previous", "-p", action="store_true", help="the previous, dead instance")
    logs.add_argument("--timestamps", action="store_true")
    namespaced(logs)

    security.add_parsers(sub)
    enroll_cli.add_parsers(sub)
    provision_cli.add_parsers(sub)
    sub.add_parser("version", help="print the client version")
    return parser


def _split_kind(kind: str, name: str | None) -> tuple[KindInfo, str | None]:
    if "/" in kind and name is None:
        kind, name = kind.split("/", 1)
    return kinds.by_cli_name(kind), name


def _namespace(args: argparse.Namespace, info: KindInfo) -> str:
    if not info.namespaced or getattr(args, "all_namespaces", False):
        return ""
    return args.namespace or "default"


def _dump(items: Sequence[Message], fmt: str, single: bool) -> str:
    doc = manifests.to_dict(items[0]) if single else manifests.to_list_dict(items)
    return manifests.dumps(doc, "json" if fmt == "json" else "yaml").rstrip()


def _name_of(obj: Message) -> str:
    return f"{kinds.of(obj).name.lower()}/{obj.metadata.name}"  # type: ignore[attr-defined]


def _subject(obj: Message) -> str:
    """An object as errors name it: ``pod "apache"`` (as ManifestError.report does)."""
    return f'{kinds.of(obj).name.lower()} "{obj.metadata.name}"'  # type: ignore[attr-defined]


@contextlib.contextmanager
def _about(path: str, obj: Message) -> Iterator[None]:
    """Errors of the calls made for `obj` name the file and the object (ObjectError)."""
    try:
        yield
    except errors.AtollError as exc:
        raise ObjectError(path, obj, exc) from exc


def _print_objects(
    items: Sequence[Message],
    fmt: str | None,
    info: KindInfo,
    single: bool,
    headers: bool,
    *,
    nodes: Sequence[node_pb2.Node] | None = None,
) -> None:
    if fmt in ("json", "yaml"):
        print(_dump(items, fmt, single))
    elif fmt == "name":
        for obj in items:
            print(_name_of(obj))
    elif items or not headers:
        text = printers.render_table(info.message, items, fmt == "wide", headers, nodes=nodes)
        if text:
            print(text)
    else:
        print("No resources found.", file=sys.stderr)


async def _beside(client: Client, info: KindInfo, args: argparse.Namespace) -> list[node_pb2.Node] | None:
    """Machines are shown beside the nodes their agents registered as: those nodes, for the table."""
    if info.name != "Machine" or args.output not in (None, "wide"):
        return None
    nodes, _ = await client.list(kinds.by_name("Node"))
    return [n for n in nodes if isinstance(n, node_pb2.Node)]


COORDINATORS = ("coordinators", "coordinator", "coord")


async def cmd_get_coordinators(client: Client, args: argparse.Namespace) -> int:
    """``get coordinators``: the members of the control plane, the leader first."""
    members = (await client.coordinators()).members
    if args.output in ("json", "yaml"):
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


async def cmd_get(client: Client, args: argparse.Namespace) -> int:
    if args.kind in COORDINATORS:
        return await cmd_get_coordinators(client, args)
    info, name = _split_kind(args.kind, args.name)
    namespace = _namespace(args, info)
    if args.chunk_size < 0:
        raise UsageError("--chunk-size must not be negative")
    if name:
        # Watch from the store's revision: the object's own may be older than the kept history.
        revision = (await client.list_page(info, namespace, limit=1)).resource_version if args.watch else 0
        items = [await client.get(info, namespace or "default" if info.namespaced else "", name)]
    else:
        items, revision = await client.list(info, namespace, args.selector, chunk_size=args.chunk_size)
    _print_objects(
        items, args.output, info, bool(name), not args.no_headers, nodes=await _beside(client, info, args)
    )
    while args.watch:
        try:
            async for type_, obj in client.watch(info, namespace, args.selector, revision):
                if not name or obj.metadata.name == name:  # type: ignore[attr-defined]
                    await _print_event(client, info, args, type_, obj)
            return 0
        except errors.Gone as exc:
            # The history to resume from was compacted (or the watch fell behind): list again.
            print(f"watch: {exc}; listing again", file=sys.stderr)
            items, revision = await client.list(info, namespace, args.selector, chunk_size=args.chunk_size)
            for obj in items:
                if not name or obj.metadata.name == name:  # type: ignore[attr-defined]
                    await _print_event(client, info, args, cluster_pb2.EVENT_TYPE_ADDED, obj)
    return 0


async def _print_event(
    client: Client, info: KindInfo, args: argparse.Namespace, type_: int, obj: Message
) -> None:
    if args.output in ("json", "yaml"):
        doc = {"type": EVENT_NAMES.get(type_, "UNKNOWN"), "object": manifests.to_dict(obj)}
        print(json.dumps(doc) if args.output == "json" else yaml.safe_dump(doc, sort_keys=False) + "---")
    else:
        _print_objects([obj], args.output, info, True, False, nodes=await _beside(client, info, args))
    sys.stdout.flush()


async def cmd_describe(client: Client, args: argparse.Namespace) -> int:
    info, name = _split_kind(args.kind, args.name)
    assert name is not None
    namespace = _namespace(args, info) or ("default" if info.namespaced else "")
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


def _load(paths: Sequence[str], namespace: str) -> list[tuple[str, Message]]:
    objects: list[tuple[str, Message]] = []
    for path in paths:
        items = manifests.load_text(sys.stdin.read(), "<stdin>") if path == "-" else manifests.load_file(path)
        for obj in items:
            meta = obj.metadata  # type: ignore[attr-defined]
            if namespace and kinds.of(obj).namespaced and not meta.namespace:
                meta.namespace = namespace
            objects.append(("<stdin>" if path == "-" else path, obj))
    return objects


async def cmd_create(client: Client, args: argparse.Namespace) -> int:
    loaded = _load(args.filename, args.namespace)
    objects = [obj for _, obj in loaded]
    # Validate everything on the server first, so that a bad file stores nothing at all.
    for path, obj in loaded:
        with _about(path, obj):
            await client.create(obj, dry_run=True)
    if args.dry_run:
        for obj in objects:
            print(f"{_name_of(obj)} created (dry run)")
        return 0
    created = []
    for path, obj in loaded:
        with _about(path, obj):
            created.append(await client.create(obj))
        if not args.output:
            print(f"{_name_of(obj)} created")
    if args.output:
        _print_objects(created, args.output, kinds.of(created[0]), len(created) == 1, True)
    return 0


def _same_intent(current: Message, wanted: Message) -> bool:
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
    loaded = _load(args.filename, args.namespace)
    defaulted = []
    for path, obj in loaded:
        with _about(path, obj):
            defaulted.append(await client.create(obj, dry_run=True))
    for (path, obj), wanted in zip(loaded, defaulted, strict=True):
        with _about(path, obj):
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
        print(f"{_name_of(obj)} created")
        return
    if _same_intent(current, wanted):
        print(f"{_name_of(obj)} unchanged")
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
            f"warning: {path}: {_subject(obj)} differs from the file where apply cannot update it ({exc}); "
            "left as it is: delete it and apply again to replace it",
            file=sys.stderr,
        )
        return
    print(f"{_name_of(obj)} configured")


async def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    targets: list[tuple[KindInfo, str, str]] = []
    if args.filename:
        for _, obj in _load(args.filename, args.namespace):
            meta = obj.metadata  # type: ignore[attr-defined]
            targets.append((kinds.of(obj), meta.namespace or "default", meta.name))
    elif args.kind:
        info, first = _split_kind(args.kind, args.names[0] if args.names else None)
        names = [first, *args.names[1:]] if first else []
        if not names:
            raise UsageError("delete needs a kind and at least one name, or -f FILE")
        targets = [(info, _namespace(args, info) or "default", n) for n in names]
    else:
        raise UsageError("delete needs a kind and at least one name, or -f FILE")
    for info, namespace, name in targets:
        await client.delete(info, namespace if info.namespaced else "", name, orphan=args.cascade != "true")
        print(f'{info.field} "{name}" deleted')
    return 0


async def cmd_scale(client: Client, args: argparse.Namespace) -> int:
    info = kinds.by_cli_name(args.kind)
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


COMMANDS = {
    "get": cmd_get,
    "describe": cmd_describe,
    "create": cmd_create,
    "apply": cmd_apply,
    "delete": cmd_delete,
    "scale": cmd_scale,
    "cordon": cmd_cordon,
    "uncordon": cmd_uncordon,
    "drain": cmd_drain,
    "logs": cmd_logs,
    "token": security.cmd_token,
    "config": security.cmd_config,
    **enroll_cli.COMMANDS,
    **provision_cli.COMMANDS,
}


async def _run_client(args: argparse.Namespace) -> int:
    settings = clientconfig.load(args.client_config, os.environ)
    server = config.server_address(args.server, os.environ, settings.server if settings else "")
    async with Client(server, config=settings) as client:
        return await COMMANDS[args.command](client, args)


async def _serve(args: argparse.Namespace) -> int:
    from coordinator.server import Coordinator

    try:
        cfg = config.load_serve(args)
    except errors.AtollError as exc:  # a bad option, not an answer from a server
        print(f"coordinator serve: {exc}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_level, cfg.log_format)
    os.umask(files.DAEMON_UMASK)  # the store holds secrets: nothing it writes is for others to read
    rlimits.raise_nofile()
    coordinator = Coordinator(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, coordinator.stop_event.set)
    # systemd (Type=notify): READY once it serves, STATUS lines, the watchdog while its loops live.
    notifier = sdnotify.notifier_from_env(os.environ)
    interval = sdnotify.watchdog_interval(os.environ, os.getpid())
    notifier.send("STATUS=opening the store and starting")
    try:
        await coordinator.start()
    except BaseException:  # e.g. a wrong cluster secret: said by main(), after letting go of the store
        await coordinator.stop()
        raise
    notifier.send("READY=1", f"STATUS={coordinator.describe()}")
    liveness = sdnotify.Liveness()
    for name, task in coordinator.tasks.items():
        liveness.watch(name, float("inf"), task)
    stop = coordinator.stop_event
    helpers = [asyncio.create_task(_status_loop(coordinator, notifier), name="status")]
    if interval is not None:
        helpers.append(
            asyncio.create_task(sdnotify.pet_watchdog(notifier, interval, liveness.problems, stop))
        )
    await stop.wait()
    notifier.send("STOPPING=1", "STATUS=stopping")
    logging.getLogger("coordinator").info("stopping: closing the API and the store")
    for task in helpers:
        task.cancel()
    await asyncio.gather(*helpers, return_exceptions=True)
    await coordinator.stop()
    return 0


async def _status_loop(coordinator: Coordinator, notifier: sdnotify.Notifier) -> None:
    last = ""
    while not coordinator.stop_event.is_set():
        now = coordinator.describe()
        if now != last:
            notifier.send(f"STATUS={now}")
            last = now
        await wait_or_stop(coordinator.stop_event, 10.0)


def _error_line(args: argparse.Namespace, exc: errors.AtollError, where: str = "") -> str:
    """One line for an error of a client command; `where` names the file and object it was about."""
    if args.command in ("serve", "store") or getattr(args, "config_command", "") == "set-server":
        return f"coordinator {args.command}: {where}{exc}"  # no server answered: this process refused
    if isinstance(exc, errors.Unavailable):
        hint = ""
        if args.command != "serve" and clientconfig.resolve(args.client_config, os.environ) is None:
            hint = (
                f" (no client config: pass --config, set ${clientconfig.ENV_VAR} or create "
                f"{clientconfig.DEFAULT_PATH}; the coordinator writes admin.conf in its data dir)"
            )
        return f"error: {where}cannot reach the coordinator: {exc}{hint}"
    return f"Error from server ({type(exc).__name__}): {where}{exc}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "version":
        from atoll import version

        print(f"coordinator {version()}")
        return 0
    try:
        if args.command == "serve":
            return asyncio.run(_serve(args))
        if args.command == "store":
            return storecmd.main(args)
        if args.command == "config" and args.config_command == "set-server":
            return security.set_server(args)  # a file edit: no coordinator to call
        return asyncio.run(_run_client(args))
    except manifests.ManifestError as exc:
        print(f"error: {exc.report()}", file=sys.stderr)
        return 1
    except ObjectError as exc:
        print(_error_line(args, exc.cause, f"{exc.where}: "), file=sys.stderr)
        return 1
    except errors.AtollError as exc:
        print(_error_line(args, exc), file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
