"""agent.network.pyroute: IPRoute without pyroute2's every family, and the full package on demand."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Each test needs an interpreter that has not imported pyroute2 yet.
pytestmark = pytest.mark.allow_subprocess


def run(code: str) -> str:
    # A fresh interpreter: the lean package must be the first pyroute2 it sees.
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_load_imports_iproute_and_not_the_other_families() -> None:
    out = run(
        """
        import sys
        from agent.network import pyroute
        iproute, netlink_error = pyroute.load()
        print(iproute.__module__, netlink_error.__name__, "pyroute2.ndb.main" in sys.modules,
              "pyroute2.ipdb" in sys.modules)
        """
    )
    assert out == "pyroute2.iproute.linux NetlinkError False False"


def test_the_package_becomes_whole_when_asked_for_its_own_names() -> None:
    out = run(
        """
        import sys
        from agent.network import pyroute
        iproute, _ = pyroute.load()
        from pyroute2 import NDB, IPRoute
        import pyroute2
        print(IPRoute is iproute, NDB.__name__, type(pyroute2).__name__, pyroute2.__version__ != "")
        """
    )
    assert out == "True NDB module True"


def test_load_after_a_full_import_uses_the_full_package() -> None:
    out = run(
        """
        import pyroute2
        from agent.network import pyroute
        iproute, _ = pyroute.load()
        print(iproute is pyroute2.IPRoute)
        """
    )
    assert out == "True"


def test_threads_asking_for_package_names_at_once_all_get_them() -> None:
    out = run(
        """
        import threading
        from agent.network import pyroute
        pyroute.load()
        results, errors = [], []
        def ask():
            try:
                from pyroute2 import WireGuard, NDB
                import pyroute2
                results.append((WireGuard.__name__, NDB.__name__, bool(pyroute2.__version__)))
            except Exception as exc:
                errors.append(repr(exc))
        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(len(results), errors, results[0])
        """
    )
    assert out == "8 [] ('WireGuard', 'NDB', True)"
