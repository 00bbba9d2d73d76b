"""The agent as a systemd service: READY once it is useful, STATUS lines, the watchdog, reload and stop.

READY=1 means: the node is registered with the coordinator, the coordinator's
assignment is in force (not only the one saved on disk), and every pod of it
has been through one sync. Until then the unit is "activating"; its STATUS
line says what the agent waits for.

The watchdog is petted from the event loop while the pod manager's relist
loop and the coordinator link's heartbeat loop keep turning within their
bounds (atoll.sdnotify.Liveness); a hung loop or a dead task stops the pets
and systemd restarts the agent, which re-adopts its pods.

SIGHUP reloads what can change live: the log level and the local registry
files (re-applied to the engine). Other settings are read again, and a
changed one is logged as needing a restart. SIGTERM says STOPPING=1, finishes
the pod syncs in flight and leaves every container running.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

from agent.daemon import Agent
from atoll import agentconfig as config
from atoll import config as layered
from atoll import errors
from atoll.aio import SignalRoute, wait_or_stop
from atoll.sdnotify import Liveness, Notifier, monotonic_usec, pet_watchdog

log = logging.getLogger(__name__)

STATUS_INTERVAL = 10.0
# Kept live across a reload; everything else needs a restart.
_RELOADED = ("log_level",)


def loop_bounds(cfg: config.AgentConfig) -> dict[str, float]:
    """How long one turn of each watched loop may take before the agent counts as hung."""
    return {
        # A relist is one engine call (docker_timeout at most) and a wait of relist_interval.
        "pod relist loop": cfg.relist_interval + cfg.docker_timeout + 30.0,
        # A heartbeat waits at most its 10 s deadline and a backoff of up to 30 s (or the interval,
        # its own or one a coordinator told, up to LONGEST_HEARTBEAT_INTERVAL).
        "coordinator heartbeat loop": max(30.0, cfg.heartbeat_interval, config.LONGEST_HEARTBEAT_INTERVAL)
        * 1.5
        + 10.0
        + 30.0,
    }


def describe(agent: Agent) -> str:
    pods = len(agent.manager.desired) if agent.manager is not None else 0
    link = "up" if agent.link is not None and agent.link.connected else "down"
    # Of several coordinators, the one the link is on (agent.failover).
    on = agent.connection.target if agent.connection is not None else agent.cfg.coordinator
    return f"running {pods} pods; coordinator {on} link {link}"


async def wait_ready(agent: Agent, notifier: Notifier) -> bool:
    """Until registered and the coordinator's assignment synced once; False if stopped first."""
    assert agent.link is not None and agent.manager is not None
    stop = agent.stop_event
    notifier.send(f"STATUS=registering node {agent.node_name} with coordinator {agent.cfg.coordinator}")
    while not agent.link.registered.is_set() or not agent.manager.authoritative:
        if stop.is_set():
            return False
        await wait_or_stop(stop, 0.1)
    notifier.send(f"STATUS=syncing {len(agent.manager.desired)} pods of the coordinator's assignment")
    idle = asyncio.ensure_future(agent.manager.wait_idle())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({idle, stopped}, return_when=asyncio.FIRST_COMPLETED)
    idle.cancel()
    stopped.cancel()
    return not stop.is_set()


async def reload(agent: Agent, argv: Sequence[str] | None, notifier: Notifier) -> None:
    notifier.send("RELOADING=1", monotonic_usec(), "STATUS=reloading configuration")
    try:
        new, _ = config.load(argv)
    except errors.AtollError as exc:
        log.error("reload: configuration not changed: %s", exc)
    else:
        old_values, new_values = layered.dump(agent.cfg), layered.dump(new)
        changed = sorted(k for k in new_values if new_values[k] != old_values.get(k))
        logging.getLogger().setLevel(getattr(logging, new.log_level.upper(), logging.INFO))
        agent.cfg.log_level = new.log_level
        await agent.registries.reload()
        restart = [k for k in changed if k not in _RELOADED]
        log.info(
            "reloaded: log level %s, registry files re-read%s",
            new.log_level,
            f"; changed but only applied on restart: {', '.join(restart)}" if restart else "",
        )
    notifier.send("READY=1", f"STATUS={describe(agent)}")


async def run(
    agent: Agent,
    notifier: Notifier,
    *,
    argv: Sequence[str] | None = None,
    watchdog_interval: float | None = None,
    liveness: Liveness | None = None,
    install_signals: bool = True,
) -> None:
    """Start `agent`, tell systemd how it goes, run until SIGTERM/SIGINT (or stop_event), stop it."""
    reloads: asyncio.Queue[None] = asyncio.Queue()
    signals = None
    if install_signals:
        # A socket of their own: asyncio's, shared with every cross-thread wake-up, drops a
        # signal when a storm of those fills it (atoll.aio.SignalRoute).
        stop_on = agent.stop_event.set
        signals = SignalRoute(
            asyncio.get_running_loop(),
            {
                signal.SIGTERM: stop_on,
                signal.SIGINT: stop_on,
                signal.SIGHUP: lambda: reloads.put_nowait(None),
            },
        )
    try:
        await _run(
            agent,
            notifier,
            reloads,
            signals=signals,
            argv=argv,
            watchdog_interval=watchdog_interval,
            liveness=liveness,
        )
    finally:
        if signals is not None:
            signals.close()


async def _run(
    agent: Agent,
    notifier: Notifier,
    reloads: asyncio.Queue[None],
    *,
    signals: SignalRoute | None,
    argv: Sequence[str] | None,
    watchdog_interval: float | None,
    liveness: Liveness | None,
) -> None:
    notifier.send("STATUS=starting")
    await agent.start()
    assert agent.manager is not None and agent.link is not None
    liveness = liveness or Liveness()
    bounds = loop_bounds(agent.cfg)
    tasks = {t.get_name(): t for t in agent.tasks}
    agent.manager.tick = liveness.watch(
        "pod relist loop", bounds["pod relist loop"], tasks.get("pod-manager")
    )
    agent.link.tick = liveness.watch(
        "coordinator heartbeat loop", bounds["coordinator heartbeat loop"], tasks.get("coordinator-link")
    )
    helpers: list[asyncio.Task[None]] = []
    if watchdog_interval is not None:
        helpers.append(
            asyncio.create_task(
                pet_watchdog(notifier, watchdog_interval, liveness.problems, agent.stop_event),
                name="watchdog",
            )
        )
    try:
        if await wait_ready(agent, notifier):
            notifier.send("READY=1", f"STATUS={describe(agent)}")
            log.info("ready: %s", describe(agent))
            helpers.append(asyncio.create_task(_status_loop(agent, notifier, signals), name="status"))
            helpers.append(asyncio.create_task(_reload_loop(agent, argv, notifier, reloads), name="reload"))
        await agent.stop_event.wait()
    finally:
        pods = len(agent.manager.desired)
        notifier.send("STOPPING=1", "STATUS=stopping: finishing pod syncs in flight")
        log.info("stopping: %d pods keep running; finishing syncs in flight", pods)
        agent.stop_event.set()
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await agent.stop()
        log.info("stopped; %d pods left running", pods)


async def _status_loop(
    agent: Agent, notifier: Notifier, signals: SignalRoute | None = None, interval: float = STATUS_INTERVAL
) -> None:
    last = ""
    while not agent.stop_event.is_set():
        if signals is not None:
            signals.ensure()
        now = describe(agent)
        if now != last:
            notifier.send(f"STATUS={now}")
            last = now
        await wait_or_stop(agent.stop_event, interval)


async def _reload_loop(
    agent: Agent, argv: Sequence[str] | None, notifier: Notifier, reloads: asyncio.Queue[None]
) -> None:
    while True:
        await reloads.get()
        try:
            await reload(agent, argv, notifier)
        except Exception:
            log.exception("reload failed; running on")
            notifier.send("READY=1")
