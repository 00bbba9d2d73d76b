"""systemd's service notification protocol, spoken by both daemons (sd_notify(3), without libsystemd).

A unit of Type=notify starts when the daemon says READY=1, shows its STATUS=
lines in `systemctl status`, and with WatchdogSec= kills and restarts a
daemon that stops saying WATCHDOG=1. The protocol is one datagram per message
to the AF_UNIX socket named by $NOTIFY_SOCKET (a leading '@' is the abstract
namespace). Outside systemd (no $NOTIFY_SOCKET) every call is a no-op.

The watchdog is only petted while the daemon's own loops are healthy: each
loop that matters ticks a `Liveness` once per iteration, with a bound on how
long one iteration may take; a loop that stops ticking within its bound, or
whose task died, stops the pets, and systemd restarts the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from atoll.aio import wait_or_stop

log = logging.getLogger(__name__)


class Notifier(Protocol):
    def send(self, *fields: str) -> None:
        """Send `fields` ("READY=1", "STATUS=...") as one message."""


class NullNotifier:
    """Not under systemd: say nothing."""

    def send(self, *fields: str) -> None:
        return None


class SocketNotifier:
    """The real one: datagrams to $NOTIFY_SOCKET. A failed send is logged, never raised."""

    def __init__(self, address: str) -> None:
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._warned = False

    def send(self, *fields: str) -> None:
        try:
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd at %s: %s", self.address.lstrip("\0"), exc)
                self._warned = True


class RecordingNotifier:
    """A fake for tests: every message, in order."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, ...]] = []

    def send(self, *fields: str) -> None:
        self.messages.append(fields)

    def sent(self, prefix: str) -> list[str]:
        return [f for m in self.messages for f in m if f.startswith(prefix)]


def notifier_from_env(environ: Mapping[str, str]) -> Notifier:
    address = environ.get("NOTIFY_SOCKET", "")
    return SocketNotifier(address) if address else NullNotifier()


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pets (half of WATCHDOG_USEC), or None when systemd runs no watchdog for us."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (owner and owner != str(pid)):
        return None
    return int(usec) / 2 / 1_000_000


class Liveness:
    """Loops that must keep turning: each `tick`s once per iteration, within its own bound."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._bounds: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def watch(self, name: str, bound: float, task: asyncio.Task[None] | None = None) -> Callable[[], None]:
        """Register a loop; returns its tick. `task`, if given, must not end while the daemon runs."""
        self._bounds[name] = bound
        self._last[name] = self._clock()
        if task is not None:
            self._tasks[name] = task
        return lambda: self.tick(name)

    def tick(self, name: str) -> None:
        self._last[name] = self._clock()

    def problems(self) -> list[str]:
        now = self._clock()
        found = [f"{name} has stopped" for name, task in self._tasks.items() if task.done()]
        found += [
            f"{name} has not turned for {now - self._last[name]:.0f}s (bound {bound:.0f}s)"
            for name, bound in self._bounds.items()
            if now - self._last[name] > bound
        ]
        return found


async def pet_watchdog(
    notifier: Notifier, interval: float, problems: Callable[[], list[str]], stop: asyncio.Event
) -> None:
    """WATCHDOG=1 every `interval` while `problems()` is empty; runs on the event loop it vouches for."""
    reported: list[str] = []
    while not stop.is_set():
        found = problems()
        if not found:
            notifier.send("WATCHDOG=1")
            if reported:
                log.info("healthy again: petting systemd's watchdog")
        elif found != reported:
            log.error("not petting systemd's watchdog (it will restart us): %s", "; ".join(found))
        reported = found
        await wait_or_stop(stop, interval)


def monotonic_usec() -> str:
    """MONOTONIC_USEC=, which systemd wants beside RELOADING=1."""
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
