"""`atoll-agent`: parse options, set up logging and signals, run the Agent."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
from collections.abc import Sequence

from agent import service
from agent.daemon import Agent
from agent.host.heap import ARENAS, GlibcHeap, Heap
from atoll import agentconfig as config
from atoll import config as layered
from atoll import errors, files, logs, rlimits, sdnotify

log = logging.getLogger("agent")


async def _run(cfg: config.AgentConfig, argv: Sequence[str] | None, heap: Heap) -> None:
    # systemd's side of things, read once at start: where to notify, and how often to pet.
    await service.run(
        Agent(cfg, heap=heap),
        sdnotify.notifier_from_env(os.environ),
        argv=argv,
        watchdog_interval=sdnotify.watchdog_interval(os.environ, os.getpid()),
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg, args = config.load(argv)
    except errors.AtollError as exc:
        print(f"atoll-agent: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        shown = layered.dump(cfg)
        if shown.get("join_token"):
            shown["join_token"] = shown["join_token"].split(".")[0] + ".<secret>"
        print(json.dumps(shown, indent=2, sort_keys=True))
        return 0
    # Every line names the node (the same default as Agent.node_name): fleets ship logs elsewhere.
    logs.setup(cfg.log_level, cfg.log_format, fields={"node": cfg.node_name or socket.gethostname().lower()})
    os.umask(files.DAEMON_UMASK)  # state, keys and credentials are the agent's own
    rlimits.raise_nofile()
    heap = GlibcHeap()
    heap.limit_arenas(ARENAS)  # before the first thread: each would get an arena of its own
    try:
        asyncio.run(_run(cfg, argv, heap))
    except errors.AtollError as exc:
        log.error("agent stopped: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
