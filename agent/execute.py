"""The one way the agent runs a host command: an injected CommandRunner.

    runner = AsyncioRunner()                    # built once, in agent.daemon (the composition root)
    firewall = IptablesFirewall(runner)         # ... and handed to whatever shells out
    result = await runner.run(["nft", "-f", "-"], input=script, timeout=30)

Like ironic-python-agent's `utils.execute`, and unlike a scattering of
`subprocess.run` calls: an argv, never a shell; stdout and stderr captured as
text; a deadline on every call; one typed error, `atoll.errors.CommandFailed`,
for "could not start", "exited non-zero" and "ran out of time", carrying the
exit code and both outputs for callers that read them (`nft list table` tells
"no such table" apart from a real failure by its stderr).

`AsyncioRunner` is the real one (`asyncio.create_subprocess_exec`, the child in
a session of its own so that a deadline or a cancelled caller kills it and
anything it started). `RecordingRunner` is the fake: it records every call and
answers from a script, failing exactly the way the real one does, so unit tests
assert on the argv a driver built without starting anything (tests/unit forbids
it: see tests/unit/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from atoll import errors

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
_DETAIL_LIMIT = 2000  # characters of a failed command's output kept in the error message


@dataclass(frozen=True)
class Result:
    """A command that ran and exited 0."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandRunner(Protocol):
    async def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (the runner kills the command at it)
    ) -> Result:
        """Run argv (no shell) with `input` on stdin, at most `timeout` seconds.

        Raises errors.CommandFailed when the command cannot start, exits
        non-zero, or is still running at the deadline (it is then killed).
        """
        ...


def _checked(argv: tuple[str, ...], returncode: int, stdout: str, stderr: str) -> Result:
    if returncode != 0:
        detail = (stderr.strip() or stdout.strip())[:_DETAIL_LIMIT]
        raise errors.CommandFailed(
            f"{shlex.join(argv)} failed (exit {returncode}): {detail}",
            argv=argv,
            returncode=returncode,
            stdout=stdout,
            stderr=stderr,
        )
    return Result(argv, returncode, stdout, stderr)


def _timed_out(argv: tuple[str, ...], timeout: float) -> errors.CommandFailed:
    return errors.CommandFailed(
        f"{shlex.join(argv)} did not finish within {timeout:g}s", argv=argv, timed_out=True
    )


def _argv(argv: Sequence[str]) -> tuple[str, ...]:
    if isinstance(argv, str) or not argv:
        raise ValueError(f"a command is a non-empty sequence of arguments, not {argv!r}")
    return tuple(argv)


class AsyncioRunner:
    """The real runner."""

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (the runner kills the command at it)
    ) -> Result:
        cmd = _argv(argv)
        log.debug("running %s", shlex.join(cmd))
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group: the kill below reaches its children
            )
        except OSError as exc:
            raise errors.CommandFailed(f"{shlex.join(cmd)}: {exc}", argv=cmd) from None
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(input.encode() if input is not None else None), timeout
            )
        except TimeoutError:
            raise _timed_out(cmd, timeout) from None
        finally:
            if proc.returncode is None:  # the deadline passed, or our caller was cancelled
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        assert proc.returncode is not None
        log.debug("%s exited %d", cmd[0], proc.returncode)
        return _checked(cmd, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


@dataclass(frozen=True)
class Call:
    """One command a RecordingRunner was asked to run."""

    argv: tuple[str, ...]
    input: str | None
    timeout: float


@dataclass(frozen=True)
class _Answer:
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    start_error: str = ""  # non-empty: the command cannot start (e.g. the binary is missing)
    hang: bool = False  # the command outlives its deadline


class RecordingRunner:
    """The fake: records every call; answers from a script, in order, then with success and no output.

    runner = RecordingRunner().answer(stdout="*nat\\nCOMMIT\\n").answer(returncode=1, stderr="busy")
    ...
    assert runner.argvs == [("iptables-save",), ("iptables-restore", "--noflush", "--wait", "5")]
    """

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._script: deque[_Answer] = deque()

    def answer(self, *, stdout: str = "", stderr: str = "", returncode: int = 0) -> RecordingRunner:
        """The next unanswered call exits `returncode` after printing stdout and stderr."""
        self._script.append(_Answer(returncode=returncode, stdout=stdout, stderr=stderr))
        return self

    def cannot_start(self, reason: str = "No such file or directory") -> RecordingRunner:
        """The next unanswered call fails to start, as a missing binary does."""
        self._script.append(_Answer(start_error=reason))
        return self

    def time_out(self) -> RecordingRunner:
        """The next unanswered call is still running at its deadline."""
        self._script.append(_Answer(hang=True))
        return self

    @property
    def argvs(self) -> list[tuple[str, ...]]:
        return [call.argv for call in self.calls]

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (the runner kills the command at it)
    ) -> Result:
        cmd = _argv(argv)
        self.calls.append(Call(cmd, input, timeout))
        answer = self._script.popleft() if self._script else _Answer()
        if answer.start_error:
            raise errors.CommandFailed(f"{shlex.join(cmd)}: {answer.start_error}", argv=cmd)
        if answer.hang:
            raise _timed_out(cmd, timeout)
        return _checked(cmd, answer.returncode, answer.stdout, answer.stderr)
