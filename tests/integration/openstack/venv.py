"""The OpenStack services' own virtualenv: built once per lock file, then reused.

The services (keystone, glance, placement, nova, neutron) pull in some 170
packages that Atoll must never depend on, so they live in a venv of their own
under the test cache Ironic's venv uses too (``$ATOLL_TEST_CACHE``, default
``~/.cache/atoll-test``),
keyed by a hash of the lock file, the test ML2 driver and the Python version.
A ``.complete`` marker is written last, so an interrupted install is redone;
a file lock keeps two test runs from building the same venv at once. Venvs
of older lock files are removed once a new one is complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import pathlib
import shutil
import subprocess
import sys
import time

from tests.integration.ironic.harness import cache_root

log = logging.getLogger("openstack.venv")

HERE = pathlib.Path(__file__).resolve().parent
LOCK_FILE = HERE / "requirements.lock"
DRIVER_DIR = HERE / "ml2_noagent"


def _key() -> str:
    digest = hashlib.sha256()
    digest.update(LOCK_FILE.read_bytes())
    for path in sorted(DRIVER_DIR.glob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    digest.update(f"{sys.version_info[:2]}".encode())
    return digest.hexdigest()[:16]


def base_python() -> str:
    """The interpreter the project's venv was made from (the services need no extra one)."""
    candidate = pathlib.Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return str(candidate) if candidate.exists() else shutil.which("python3") or sys.executable


def ensure() -> tuple[pathlib.Path, float]:
    """Return (venv path, seconds spent installing: 0.0 when it was cached)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"openstack-{_key()}"
    with open(root / "openstack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / ".complete").exists():
            return venv, 0.0
        started = time.monotonic()
        shutil.rmtree(venv, ignore_errors=True)
        log.info("installing the OpenStack services into %s (once per lock file)", venv)
        subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        # Everything is pinned in the lock file, so pip has nothing to resolve.
        subprocess.run([*pip, "--no-deps", "-r", str(LOCK_FILE)], check=True)
        subprocess.run([*pip, "--no-deps", "--no-build-isolation", str(DRIVER_DIR)], check=True)
        # setuptools' in-tree build leaves these behind in the repo.
        shutil.rmtree(DRIVER_DIR / "build", ignore_errors=True)
        for egg in DRIVER_DIR.glob("*.egg-info"):
            shutil.rmtree(egg, ignore_errors=True)
        (venv / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
        for old in root.glob("openstack-*"):
            if old != venv and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        return venv, time.monotonic() - started
