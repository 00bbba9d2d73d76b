"""A real Ironic for the enrollment tests: PyPI's `ironic` in its own venv, one process, SQLite.

Why real: enrollment is a conversation with Ironic's state machine (which
transitions exist from which state, what a failure leaves behind, what the
API masks), and a mock would only encode our own reading of it.

The venv lives outside the repository and the project's venv, under
``$ATOLL_TEST_CACHE`` (default ``~/.cache/atoll-test``), named by a digest of
requirements.lock and the Python version, so a changed lock installs afresh
and an unchanged one is reused between runs. An empty schema database is
built once per venv (``ironic-dbsync create_schema`` takes ~10 s) and copied
for each run. Installs take a file lock, so concurrent runs do not race.

The server is the all-in-one ``ironic`` launcher (API + conductor, no message
bus) on a free loopback port, with the fake-hardware type (plus the `direct`
deploy interface, whose image check makes a deploy fail for real). It runs
in its own process group and is stopped through it.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
LOCK_FILE = HERE / "requirements.lock"
INSTALL_TIMEOUT = 900.0
START_TIMEOUT = 90.0

CONF = """\
[DEFAULT]
auth_strategy = {auth}
http_basic_auth_user_file = {htpasswd}
rpc_transport = none
host = atoll-test
state_path = {state}
tempdir = {state}/tmp
log_file = {log}
debug = false
enabled_hardware_types = fake-hardware
enabled_boot_interfaces = fake
enabled_deploy_interfaces = fake,direct
default_deploy_interface = fake
enabled_power_interfaces = fake
enabled_management_interfaces = fake
enabled_inspect_interfaces = fake,no-inspect
default_inspect_interface = fake
enabled_network_interfaces = noop
enabled_vendor_interfaces = no-vendor
enabled_console_interfaces = no-console
enabled_raid_interfaces = fake,no-raid
enabled_bios_interfaces = fake,no-bios
enabled_firmware_interfaces = fake,no-firmware
enabled_rescue_interfaces = fake,no-rescue
enabled_storage_interfaces = noop

[api]
host_ip = 127.0.0.1
port = {port}

[database]
connection = sqlite:///{db}

[dhcp]
dhcp_provider = none

[conductor]
automated_clean = false

[fake]
deploy_delay = {deploy_delay}

[oslo_concurrency]
lock_path = {state}/locks
"""


def cache_root() -> pathlib.Path:
    root = os.environ.get("ATOLL_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "atoll-test"
    )
    return pathlib.Path(root)


def venv_dir() -> pathlib.Path:
    """Named by the lock file and the interpreter the venv is built from: either changing installs afresh."""
    base = os.path.realpath(_base_python())
    digest = hashlib.sha256(LOCK_FILE.read_bytes() + base.encode()).hexdigest()[:12]
    return cache_root() / f"ironic-{digest}"


def _usable(venv: pathlib.Path) -> bool:
    """A finished install whose interpreter still runs (a base Python upgraded in place breaks venvs)."""
    if not (venv / ".atoll-complete").exists() or not (venv / "bin" / "ironic").exists():
        return False
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import ironic"], check=False, capture_output=True, timeout=60
    )
    return probe.returncode == 0


def _base_python() -> str:
    """The interpreter to build the venv from: python3 on PATH, else this one's base."""
    return shutil.which("python3") or getattr(sys, "_base_executable", sys.executable)


def ensure_venv(log: Any = print) -> tuple[pathlib.Path, float]:
    """The installed venv and the seconds spent installing (0.0 when cached)."""
    venv = venv_dir()
    done = venv / ".atoll-complete"
    if _usable(venv):
        return venv, 0.0
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _usable(venv):
            return venv, 0.0
        started = time.monotonic()
        shutil.rmtree(venv, ignore_errors=True)
        log(f"installing Ironic into {venv} (once per machine and lock file)")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
        try:
            subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True, env=env, timeout=120)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
            subprocess.run(
                [*pip, "install", "-c", str(LOCK_FILE), "ironic"],
                check=True,
                env=env,
                timeout=INSTALL_TIMEOUT,
            )
            _build_schema(venv)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        done.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
        return venv, time.monotonic() - started


def _build_schema(venv: pathlib.Path) -> None:
    """The empty database every run starts from (create_schema is slow; a copy is not)."""
    work = venv / "schema-build"
    work.mkdir(exist_ok=True)
    conf = work / "ironic.conf"
    db = venv / "schema.sqlite"
    conf.write_text(_conf(work, db, port=0, deploy_delay=0))
    subprocess.run(
        [str(venv / "bin" / "ironic-dbsync"), "--config-file", str(conf), "create_schema"],
        check=True,
        capture_output=True,
        timeout=300,
    )


def _conf(
    state: pathlib.Path, db: pathlib.Path, *, port: int, deploy_delay: int, auth: str = "noauth"
) -> str:
    (state / "tmp").mkdir(parents=True, exist_ok=True)
    (state / "locks").mkdir(parents=True, exist_ok=True)
    return CONF.format(
        state=state,
        log=state / "ironic.log",
        port=port,
        db=db,
        deploy_delay=deploy_delay,
        auth=auth,
        htpasswd=state / "htpasswd",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Ironic:
    """One running Ironic (API + conductor). ``url`` is its endpoint; ``db`` its SQLite file."""

    def __init__(
        self,
        venv: pathlib.Path,
        state: pathlib.Path,
        *,
        deploy_delay: int = 1,
        basic_auth: tuple[str, str] | None = None,
    ) -> None:
        """``basic_auth``: (user, password) to run with auth_strategy = http_basic instead of noauth."""
        self.venv = venv
        self.state = state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = state / "ironic.sqlite"
        self.log = state / "ironic.log"
        self.deploy_delay = deploy_delay
        self.basic_auth = basic_auth
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0

    def start(self) -> Ironic:
        started = time.monotonic()
        self.state.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.venv / "schema.sqlite", self.db)
        conf = self.state / "ironic.conf"
        auth = "noauth"
        if self.basic_auth is not None:
            auth = "http_basic"
            self._write_htpasswd(*self.basic_auth)
        conf.write_text(_conf(self.state, self.db, port=self.port, deploy_delay=self.deploy_delay, auth=auth))
        console = open(self.state / "ironic.console", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(self.venv / "bin" / "ironic"), "--config-file", str(conf)],
            stdout=console,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._console = console
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _write_htpasswd(self, user: str, password: str) -> None:
        """Ironic reads bcrypt entries; bcrypt is in its venv, so its Python writes the file."""
        script = (
            "import bcrypt, sys; "
            "print(sys.argv[1] + ':' + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(4)).decode())"
        )
        line = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", script, user, password],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        (self.state / "htpasswd").write_text(line)

    def _wait_ready(self) -> None:
        """Until the API answers and the conductor has registered fake-hardware (nodes need both)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"ironic exited with {self.process.returncode}:\n{self.tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                drivers = self.get("/v1/drivers")
                if any(d.get("name") == "fake-hardware" for d in drivers.get("drivers", [])):
                    return
            time.sleep(0.2)
        raise RuntimeError(f"ironic did not come up in {START_TIMEOUT:.0f}s:\n{self.tail()}")

    def get(self, path: str) -> Any:
        headers = {"X-OpenStack-Ironic-API-Version": "latest"}
        if self.basic_auth is not None:
            headers["Authorization"] = (
                "Basic " + base64.b64encode(":".join(self.basic_auth).encode()).decode()
            )
        request = urllib.request.Request(self.url + path, headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def tail(self, lines: int = 40) -> str:
        text = ""
        for path in (self.state / "ironic.console", self.log):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def node_row(self, name: str) -> dict[str, Any]:
        """A node's row straight from Ironic's database: instance_info unmasked (the API shows '******')."""
        with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM nodes WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise KeyError(name)
        out = dict(row)
        for key in ("instance_info", "driver_info", "properties"):
            if isinstance(out.get(key), str):
                out[key] = json.loads(out[key])
        return out

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)
        self._console.close()
        self.process = None
