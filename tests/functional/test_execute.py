"""agent.execute.AsyncioRunner, the agent's one runner of host commands, on real processes."""

from __future__ import annotations

import asyncio
import pathlib
import time

import pytest

from agent.execute import AsyncioRunner, Result
from atoll import errors
from tests.functional.harness import eventually


def _gone(pid: int) -> bool:
    """The process has exited (and been reaped, or is a zombie waiting for it)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def _read_pid(path: pathlib.Path) -> int:
    text = path.read_text() if path.exists() else ""
    return int(text) if text.strip() else 0


async def _pid_in(path: pathlib.Path) -> int:
    async def written() -> int:
        return _read_pid(path)

    return await eventually(written, timeout=10, what=f"a pid in {path}")


async def test_runs_an_argv_with_stdin_and_captures_both_outputs() -> None:
    runner = AsyncioRunner()
    res = await runner.run(["sh", "-c", 'cat; echo "$1" >&2', "sh", "$HOME; x"], input="from stdin\n")
    assert res == Result(
        ("sh", "-c", 'cat; echo "$1" >&2', "sh", "$HOME; x"), 0, "from stdin\n", "$HOME; x\n"
    )
    # Without input, stdin is /dev/null (a command that reads it does not wait for ever).
    assert (await runner.run(["cat"], timeout=10)).stdout == ""


async def test_failures_carry_the_exit_code_and_outputs() -> None:
    runner = AsyncioRunner()
    with pytest.raises(errors.CommandFailed, match=r"^sh -c .* failed \(exit 3\): Error: no$") as failed:
        await runner.run(["sh", "-c", "echo out; echo 'Error: no' >&2; exit 3"])
    assert (failed.value.returncode, failed.value.stdout, failed.value.stderr) == (3, "out\n", "Error: no\n")
    with pytest.raises(errors.CommandFailed, match="No such file or directory") as missing:
        await runner.run(["/nonexistent/atoll-test-binary"])
    assert missing.value.returncode is None and not missing.value.timed_out


async def test_the_deadline_kills_the_command_and_what_it_started(tmp_path: pathlib.Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(errors.CommandFailed, match=r"did not finish within 0.5s") as late:
        # The grandchild keeps stdout open: only killing the whole group ends the wait.
        await AsyncioRunner().run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"], timeout=0.5)
    assert late.value.timed_out and late.value.returncode is None
    assert time.monotonic() - started < 10
    grandchild = await _pid_in(pidfile)

    async def dead() -> bool:
        return _gone(grandchild)

    await eventually(dead, timeout=10, what=f"the grandchild {grandchild} to be killed")


async def test_a_cancelled_caller_leaves_no_process_behind(tmp_path: pathlib.Path) -> None:
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(AsyncioRunner().run(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"]))
    pid = await _pid_in(pidfile)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _gone(pid)
