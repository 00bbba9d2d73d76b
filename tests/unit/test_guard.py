"""tests/unit/conftest.py: a unit test that starts a process or connects somewhere fails, clearly."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess

import pytest

pytest_plugins = ["pytester"]

# Each of these runs as a test of its own under the guard (copied into a pytester session).
INNER = """
import asyncio, os, socket, subprocess
import pytest

def test_subprocess_run():
    subprocess.run(["true"], check=False)

def test_swallowed_is_still_a_failure():
    try:
        subprocess.check_output(["true"])
    except Exception:
        pass

async def test_asyncio_exec():
    await asyncio.create_subprocess_exec("true")

async def test_asyncio_shell():
    await asyncio.create_subprocess_shell("true")

def test_os_system():
    os.system("true")

def test_posix_spawn():
    os.posix_spawn("/bin/true", ["true"], {})

def test_create_connection():
    socket.create_connection(("192.0.2.1", 80), timeout=0.1)

def test_connect_ex():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect_ex(("192.0.2.1", 53))

async def test_open_connection():
    await asyncio.wait_for(asyncio.open_connection("192.0.2.1", 80), 0.5)

@pytest.mark.allow_subprocess
def test_marked_subprocess_is_left_alone():
    assert subprocess.Popen._execute_child.__module__ == "subprocess"
    assert socket.socket.connect.__module__ == "tests.unit.conftest"

@pytest.mark.allow_network
def test_marked_network_is_left_alone():
    assert getattr(socket.socket.connect, "__module__", None) != "tests.unit.conftest"
    assert subprocess.Popen._execute_child.__module__ == "tests.unit.conftest"
"""


# The guard under test is the inner session's: this one stands back (the inner one patches over it).
@pytest.mark.allow_subprocess
@pytest.mark.allow_network
def test_spawning_or_connecting_fails_the_test_with_the_call_in_the_message(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest("from tests.unit.conftest import no_processes_or_connections  # noqa: F401\n")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        "-o",
        "asyncio_mode=auto",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    # 8 fail where they call; those 8 and the swallowed one (its call "passed") fail at teardown.
    result.assert_outcomes(passed=3, failed=8, errors=9)
    out = result.stdout.str()
    for message in (
        "Popen._execute_child(['true'], None, None): unit tests start no process: inject "
        "agent.execute.RecordingRunner, or mark the test allow_subprocess",
        "BaseEventLoop.subprocess_exec('true', ",
        "BaseEventLoop.subprocess_shell('true', ",
        "os.system('true'): ",
        "os.posix_spawn('/bin/true', ['true'], {}): ",
        "socket.connect(('192.0.2.1', 80)) on a AF_INET socket: unit tests open no network connection",
        "socket.connect_ex(('192.0.2.1', 53)) on a AF_INET socket: ",
    ):
        assert message in out, out
    # The swallowed one fails at teardown, with the same message.
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_swallowed_is_still_a_failure*"])


def test_this_process_is_guarded_too() -> None:
    assert subprocess.Popen._execute_child.__module__ == "tests.unit.conftest"
    assert asyncio.base_events.BaseEventLoop.subprocess_exec.__module__ == "tests.unit.conftest"
    assert os.system.__module__ == "tests.unit.conftest"
    assert socket.socket.connect.__module__ == "tests.unit.conftest"
