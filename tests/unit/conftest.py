"""Unit tests start no process and open no network connection (cloud-init's `disable_subp_usage`).

Host commands go through agent.execute.CommandRunner, so a unit test hands the
code a RecordingRunner; anything that reaches for a real process or a real
peer fails here, with the call in the message, even if the code under test
swallows the error (the test then fails at teardown). Tests that must do it
belong in tests/functional; a unit test that really needs to can say so with
`@pytest.mark.allow_subprocess` or `@pytest.mark.allow_network`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

_PROCESS_HINT = (
    "unit tests start no process: inject agent.execute.RecordingRunner, or mark the test allow_subprocess"
)
_NETWORK_HINT = "unit tests open no network connection: use a fake, or mark the test allow_network"


class SideEffectForbidden(AssertionError):
    """A unit test tried to start a process or to connect somewhere."""


class _Guard:
    def __init__(self) -> None:
        self.violations: list[str] = []

    def trip(self, what: str, hint: str) -> SideEffectForbidden:
        message = f"{what}: {hint}"
        self.violations.append(message)
        return SideEffectForbidden(message)


# The choke points: everything that starts a process ends in one of these (subprocess.run and
# friends in Popen._execute_child, asyncio's subprocesses in the loop's subprocess_exec/_shell).
_SPAWNERS = [
    (subprocess.Popen, "_execute_child"),
    (asyncio.base_events.BaseEventLoop, "subprocess_exec"),
    (asyncio.base_events.BaseEventLoop, "subprocess_shell"),
    *[
        (os, name)
        for name in (
            "system",
            "popen",
            "posix_spawn",
            "posix_spawnp",
            "fork",
            "forkpty",
            "execv",
            "execve",
            "execl",
            "execle",
            "execlp",
            "execlpe",
            "execvp",
            "execvpe",
            "spawnv",
            "spawnve",
            "spawnvp",
            "spawnvpe",
        )
        if hasattr(os, name)
    ],
]


def _describe(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    shown = [repr(a) for a in args[:3]] + [f"{k}={v!r}" for k, v in list(kwargs.items())[:2]]
    return ", ".join(shown)[:300]


@pytest.fixture(autouse=True)
def no_processes_or_connections(request: pytest.FixtureRequest) -> Iterator[_Guard]:
    guard = _Guard()
    with pytest.MonkeyPatch.context() as mp:
        if request.node.get_closest_marker("allow_subprocess") is None:
            for owner, name in _SPAWNERS:
                mp.setattr(owner, name, _spawner(guard, owner, name))
        if request.node.get_closest_marker("allow_network") is None:
            for name in ("connect", "connect_ex"):
                mp.setattr(socket.socket, name, _connector(guard, name))
        yield guard
    if guard.violations:
        pytest.fail("\n".join(guard.violations), pytrace=False)


def _spawner(guard: _Guard, owner: object, name: str) -> Any:
    qualname = f"{getattr(owner, '__name__', owner)}.{name}"
    # Methods: leave out self (and the loop's protocol factory) to show the command.
    skip = 0 if owner is os else 2 if owner is asyncio.base_events.BaseEventLoop else 1
    if asyncio.iscoroutinefunction(getattr(owner, name)):

        async def forbidden_async(*args: Any, **kwargs: Any) -> Any:
            raise guard.trip(f"{qualname}({_describe(args[skip:], kwargs)})", _PROCESS_HINT)

        return forbidden_async

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise guard.trip(f"{qualname}({_describe(args[skip:], kwargs)})", _PROCESS_HINT)

    return forbidden


def _connector(guard: _Guard, name: str) -> Any:
    def forbidden(sock: socket.socket, address: Any) -> Any:
        raise guard.trip(f"socket.{name}({address!r}) on a {sock.family.name} socket", _NETWORK_HINT)

    return forbidden
