"""agent.execute.RecordingRunner: the fake every driver's unit tests run on fails the way the real one does.

The real AsyncioRunner starts processes, so its tests are in tests/functional/test_execute.py.
"""

from __future__ import annotations

import pytest

from agent.execute import Call, RecordingRunner, Result
from atoll import errors


async def test_records_every_call_and_answers_in_order_then_with_success() -> None:
    runner = RecordingRunner().answer(stdout="one\n").answer(stdout="two\n", stderr="warning\n")
    assert await runner.run(["a", "--flag"], input="in", timeout=3) == Result(("a", "--flag"), 0, "one\n", "")
    assert (await runner.run(("b",))).stderr == "warning\n"
    assert await runner.run(["c"]) == Result(("c",), 0, "", "")  # the script is used up: success
    assert runner.calls == [
        Call(("a", "--flag"), "in", 3),
        Call(("b",), None, 60.0),
        Call(("c",), None, 60.0),
    ]
    assert runner.argvs == [("a", "--flag"), ("b",), ("c",)]


async def test_failures_are_one_typed_error_carrying_what_the_command_said() -> None:
    runner = RecordingRunner().answer(returncode=2, stdout="partial\n", stderr="Error: bad thing\n")
    with pytest.raises(errors.CommandFailed) as failed:
        await runner.run(["nft", "-f", "-"], input="junk")
    exc = failed.value
    assert isinstance(exc, errors.Unavailable)
    assert str(exc) == "nft -f - failed (exit 2): Error: bad thing"
    assert (exc.argv, exc.returncode, exc.stdout, exc.stderr, exc.timed_out) == (
        ("nft", "-f", "-"),
        2,
        "partial\n",
        "Error: bad thing\n",
        False,
    )
    runner.answer(returncode=1, stdout="only stdout\n")
    with pytest.raises(errors.CommandFailed, match=r"^x failed \(exit 1\): only stdout$"):
        await runner.run(["x"])


async def test_cannot_start_and_time_out() -> None:
    runner = RecordingRunner().cannot_start().time_out()
    with pytest.raises(errors.CommandFailed, match=r"^nft -j: No such file or directory$") as missing:
        await runner.run(["nft", "-j"])
    assert missing.value.returncode is None and not missing.value.timed_out
    with pytest.raises(errors.CommandFailed, match=r"^sleep 9 did not finish within 0.5s$") as late:
        await runner.run(["sleep", "9"], timeout=0.5)
    assert late.value.returncode is None and late.value.timed_out
    assert len(runner.calls) == 2


@pytest.mark.parametrize("argv", ["iptables-save", [], ()])
async def test_a_command_is_an_argv_never_a_shell_line(argv: list[str]) -> None:
    runner = RecordingRunner()
    with pytest.raises(ValueError, match="non-empty sequence of arguments"):
        await runner.run(argv)
    assert runner.calls == []
