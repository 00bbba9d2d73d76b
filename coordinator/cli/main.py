"""`coordinator`: run the control plane (`serve`) or operate it, the kubectl way.

Only the chosen command's module is imported (see parser.py): `coordinator get` loads neither the
server nor the OpenStack SDK, and YAML only when it reads or prints some.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from coordinator.cli import parser as cli_parser
from coordinator.cli.parser import build_parser

if TYPE_CHECKING:
    from atoll import errors, sdnotify
    from atoll.aio import SignalRoute
    from atoll.gcpolicy import GCPauses
    from coordinator.config import ServeConfig
    from coordinator.server import Coordinator

__all__ = ["build_parser", "main"]

log = logging.getLogger("coordinator")

# Client commands: "module:function", imported when the command runs.
RUNNERS: dict[str, str] = {
    "get": "coordinator.cli.getcmd:cmd_get",
    "describe": "coordinator.cli.getcmd:cmd_describe",
    "create": "coordinator.cli.applycmd:cmd_create",
    "apply": "coordinator.cli.applycmd:cmd_apply",
    "delete": "coordinator.cli.deletecmd:cmd_delete",
    "scale": "coordinator.cli.nodecmd:cmd_scale",
    "cordon": "coordinator.cli.nodecmd:cmd_cordon",
    "uncordon": "coordinator.cli.nodecmd:cmd_uncordon",
    "drain": "coordinator.cli.nodecmd:cmd_drain",
    "logs": "coordinator.cli.nodecmd:cmd_logs",
    "token": "coordinator.cli.security:cmd_token",
    "config": "coordinator.cli.security:cmd_config",
    "enroll": "coordinator.cli.enroll:cmd_enroll",
    "unenroll": "coordinator.cli.enroll:cmd_unenroll",
    "provision": "coordinator.cli.provision:cmd_provision",
    "deprovision": "coordinator.cli.provision:cmd_deprovision",
}


def runner(command: str) -> Callable[[Any, argparse.Namespace], Awaitable[int]]:
    module, function = RUNNERS[command].split(":")
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


async def _run_client(
    args: argparse.Namespace, run: Callable[[Any, argparse.Namespace], Awaitable[int]] | None = None
) -> int:
    from coordinator import config
    from coordinator.client import config as clientconfig
    from coordinator.client.api import Client

    settings = clientconfig.load(args.client_config, os.environ)
    server = config.server_address(args.server, os.environ, settings.server if settings else "")
    run = run or runner(args.command)
    async with Client(server, config=settings) as client:
        return await run(client, args)


async def _server_version(client: Any, args: argparse.Namespace) -> int:
    """The second half of `coordinator version`, as kubectl's: what the coordinator runs."""
    info = await client.version()
    print(f"Server Version: {info.server_version}\nAPI Version: {info.api_version}")
    print(f"Features: {', '.join(info.features)}")
    return 0


async def _serve(args: argparse.Namespace) -> int:
    from atoll import errors, files, gcpolicy, logs, rlimits
    from coordinator import config

    try:
        cfg = config.load_serve(args)
    except errors.AtollError as exc:  # a bad option, not an answer from a server
        print(f"coordinator serve: {exc}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_level, cfg.log_format)
    os.umask(files.DAEMON_UMASK)  # the store holds secrets: nothing it writes is for others to read
    rlimits.raise_nofile()
    # The collector is the process's, not one coordinator's: one serve per process sets it.
    policy = gcpolicy.GCPolicy(young=cfg.gc_young_threshold)
    with gcpolicy.governing(policy) as (pauses, may_freeze):
        return await _serve_with(cfg, pauses, may_freeze)


async def _serve_with(cfg: ServeConfig, pauses: GCPauses, may_freeze: bool) -> int:
    """`may_freeze`: freeze what start-up built (not when something froze objects before)."""
    import asyncio
    import gc

    from atoll import gcpolicy, sdnotify
    from atoll.aio import SignalRoute
    from atoll.metrics import GCPauseMetrics
    from coordinator.server import Coordinator

    coordinator = Coordinator(cfg)
    loop = asyncio.get_running_loop()
    # A signal of its own socket: asyncio's is shared with every cross-thread wake-up and, full
    # under a storm of them, drops the signal (atoll.aio.SignalRoute).
    stop_on = coordinator.stop_event.set
    signals = SignalRoute(loop, {signal.SIGTERM: stop_on, signal.SIGINT: stop_on})
    try:
        # systemd (Type=notify): READY once it serves, STATUS lines, the watchdog while its loops live.
        notifier = sdnotify.notifier_from_env(os.environ)
        interval = sdnotify.watchdog_interval(os.environ, os.getpid())
        notifier.send("STATUS=opening the store and starting")
        try:
            await coordinator.start()
        except BaseException:  # e.g. a wrong cluster secret: said by main(), after letting go of the store
            await coordinator.stop()
            raise
        # What start-up built lives as long as the process: no collection rescans it.
        frozen = gcpolicy.freeze_start_up() if may_freeze else gc.get_freeze_count()
        log.info(
            "garbage collection: thresholds %s, %d objects from start-up frozen", gc.get_threshold(), frozen
        )
        if coordinator.prom is not None:
            coordinator.prom.registry.register(GCPauseMetrics(pauses))
        notifier.send("READY=1", f"STATUS={coordinator.describe()}")
        liveness = sdnotify.Liveness()
        for name, task in coordinator.tasks.items():
            liveness.watch(name, float("inf"), task)
        stop = coordinator.stop_event
        helpers = [asyncio.create_task(_status_loop(coordinator, notifier, signals), name="status")]
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
    finally:
        signals.close()


async def _status_loop(coordinator: Coordinator, notifier: sdnotify.Notifier, signals: SignalRoute) -> None:
    from atoll.aio import wait_or_stop

    last = ""
    while not coordinator.stop_event.is_set():
        signals.ensure()
        now = coordinator.describe()
        if now != last:
            notifier.send(f"STATUS={now}")
            last = now
        await wait_or_stop(coordinator.stop_event, 10.0)


def _error_line(args: argparse.Namespace, exc: errors.AtollError, where: str = "") -> str:
    """One line for an error of a client command; `where` names the file and object it was about."""
    from atoll import errors
    from coordinator.client import config as clientconfig

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
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(cli_parser.command_of(argv), full=False).parse_args(argv)
    if args.command == "version":
        from atoll import version

        print(f"Client Version: {version()}")
        if args.client:
            return 0
    import asyncio

    try:
        if args.command == "version":
            return asyncio.run(_run_client(args, _server_version))
        if args.command == "completion":
            from coordinator.cli import completion

            return completion.main(args)
        if args.command == "serve":
            return asyncio.run(_serve(args))
        if args.command == "store":
            from coordinator.cli import storecmd

            return storecmd.main(args)
        if args.command == "config" and args.config_command == "set-server":
            from coordinator.cli import security

            return security.set_server(args)  # a file edit: no coordinator to call
        return asyncio.run(_run_client(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # sorted by _report: ours become one line, a bug's traceback is raised
        return _report(args, exc)


def _report(args: argparse.Namespace, exc: Exception) -> int:
    """The exit code for an error, after its one line on stderr (a bug's traceback is raised)."""
    from atoll import errors
    from coordinator.cli.common import ObjectError, UsageError
    from coordinator.manifests import ManifestError

    if isinstance(exc, ManifestError):
        print(f"error: {exc.report()}", file=sys.stderr)
        return 1
    if isinstance(exc, ObjectError):
        print(_error_line(args, exc.cause, f"{exc.where}: "), file=sys.stderr)
        return 1
    if isinstance(exc, errors.AtollError):
        print(_error_line(args, exc), file=sys.stderr)
        return 1
    if isinstance(exc, UsageError):
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    raise exc


if __name__ == "__main__":
    sys.exit(main())
