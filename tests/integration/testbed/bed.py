"""The test bed: N simulated hosts on one machine, and the guarantee that nothing outlives it.

Layout of one run (run id: 6 hex digits, unique per bed)::

    /run/atoll-testbed/<id>.lock   flock held while the bed lives; says where the run dir is
    <base>/<id>/                   run dir (base: /tmp/atl, or $ATOLL_TESTBED_DIR)
        ns/                        private bind mount holding the hosts' mount-namespace files
        h<i>/                      per host: docker data and exec roots, socket, logs
    netns atl-<id>-ul              underlay: bridge br0, one veth port per host
    netns atl-<id>-h<i>            host i, 198.51.100.(10+i)/24 on eth0
    cgroups /atl-<id>-h<i>         parent of the host's containers, in every hierarchy

A live bed holds its lock, so `sweep_stale()` (run at the start and end of a
pytest session) can remove what crashed runs left behind without touching a
bed that another process is using. Teardown and sweep share one destroy
routine and check afterwards that nothing is left.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from . import mounts
from .host import Host, Underlay, netns_inode, sh
from .procs import ProcessSelector, ProcInfo, wait_gone

log = logging.getLogger(__name__)

#: Where live beds register (fixed, so every process finds every bed whatever base dir it uses).
LOCK_DIR = Path("/run/atoll-testbed")
DEFAULT_BASE_DIR = Path(os.environ.get("ATOLL_TESTBED_DIR", "/tmp/atl"))
REPO_ROOT = Path(__file__).resolve().parents[3]

_RUN_ID = re.compile(r"^[0-9a-f]{6}$")
_NETNS = re.compile(r"^atl-([0-9a-f]{6})-")

_live_beds: weakref.WeakSet[TestBed] = weakref.WeakSet()


class TeardownError(RuntimeError):
    """Teardown finished but could not remove everything (the message lists what is left)."""


@functools.cache
def _load_demo_images() -> ModuleType:
    """scripts/demo_images.py is a standalone script, not a package: load it by path."""
    path = REPO_ROOT / "scripts" / "demo_images.py"
    spec = importlib.util.spec_from_file_location("atoll_demo_images", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def require_root() -> None:
    if os.geteuid() != 0:
        raise PermissionError(
            "the integration test bed needs root (network namespaces, mounts, dockerd); "
            "run the integration tests as root, as CI does"
        )


def _list_netns() -> list[str]:
    res = sh(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


class _RunLock:
    """The flock that marks a run as live, with its lock file in LOCK_DIR."""

    def __init__(self, run_id: str, fd: int) -> None:
        self.run_id = run_id
        self.fd = fd

    @property
    def path(self) -> Path:
        return LOCK_DIR / f"{self.run_id}.lock"

    @classmethod
    def create(cls, run_dir_for: Callable[[str], Path]) -> _RunLock:
        while True:
            run_id = secrets.token_hex(3)
            run_dir = run_dir_for(run_id)
            if run_dir.exists() or any(n.startswith(f"atl-{run_id}-") for n in _list_netns()):
                continue
            LOCK_DIR.mkdir(mode=0o755, exist_ok=True)
            try:
                fd = os.open(
                    LOCK_DIR / f"{run_id}.lock", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
                )
            except (FileExistsError, FileNotFoundError):
                continue  # id taken, or LOCK_DIR removed by a finishing bed in between
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(
                fd, json.dumps({"run_dir": str(run_dir), "pid": os.getpid(), "started": time.time()}).encode()
            )
            # A sweeper may have judged the empty file stale and unlinked it
            # between our create and flock: then start over with a new id.
            if os.fstat(fd).st_nlink == 0:
                os.close(fd)
                continue
            return cls(run_id, fd)

    @classmethod
    def try_acquire(cls, run_id: str) -> tuple[_RunLock | None, dict[str, Any]]:
        """(lock, info) if the run is stale (nobody holds its lock), (None, {}) if it is live.

        A missing lock file means stale too (lock = `_RunLock(run_id, -1)`).
        """
        path = LOCK_DIR / f"{run_id}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return cls(run_id, -1), {}
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None, {}
        raw = os.read(fd, 65536)
        try:
            info = json.loads(raw) if raw else {}
        except ValueError:
            info = {}
        if not info and time.time() - os.fstat(fd).st_mtime < 60:
            os.close(fd)  # being created right now
            return None, {}
        return cls(run_id, fd), info

    def release(self, unlink: bool = True) -> None:
        if self.fd < 0:
            return
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            with contextlib.suppress(OSError):
                LOCK_DIR.rmdir()  # only if this was the last bed
        os.close(self.fd)
        self.fd = -1


def _selector_for_run(
    run_id: str, run_dir: Path, extra_net: Sequence[int] = (), extra_mnt: Sequence[int] = ()
) -> ProcessSelector:
    """Every process of a run, from what can still be found on the machine plus what the caller knows."""
    nets = {i for i in (netns_inode(n) for n in _list_netns() if n.startswith(f"atl-{run_id}-")) if i}
    mnts = set()
    ns_dir = run_dir / "ns"
    if ns_dir.is_dir():
        for f in ns_dir.glob("*.mnt"):
            if any(m.mount_point == str(f) for m in mounts.mounts_under(f)):
                mnts.add(os.stat(f).st_ino)
    return ProcessSelector(
        net_inodes=frozenset(nets | set(extra_net)),
        mnt_inodes=frozenset(mnts | set(extra_mnt)),
        cgroup_marker=f":/atl-{run_id}-",
        path_marker=f"{run_dir}/",
    )


def find_leftovers(run_id: str, run_dir: Path) -> list[str]:
    """What of run `run_id` still exists: processes, namespaces, mounts, cgroups, directories."""
    left = [f"process {p.pid}: {p.cmdline}" for p in _selector_for_run(run_id, run_dir).find().values()]
    left += [f"netns {n}" for n in _list_netns() if n.startswith(f"atl-{run_id}-")]
    left += [f"mount {m.mount_point}" for m in mounts.mounts_under(run_dir)]
    left += [f"cgroup {p}" for p in mounts.cgroup_dirs(f"atl-{run_id}-")]
    if run_dir.exists():
        left.append(f"directory {run_dir}")
    if (LOCK_DIR / f"{run_id}.lock").exists():
        left.append(f"lock file {LOCK_DIR / f'{run_id}.lock'}")
    return left


def destroy_run(
    run_id: str,
    run_dir: Path,
    *,
    known: Sequence[Host] = (),
    keep_logs: Path | None = None,
    seen: Sequence[ProcInfo] = (),
) -> list[str]:
    """Remove every trace of a run, hard (SIGKILL); returns error messages (empty if all went well).

    Order matters: processes first (they pin namespaces and mounts), then
    the mounts holding mount namespaces, cgroups, network namespaces (which
    takes the veths and the bridge with them) and finally the files.
    """
    errors: list[str] = []

    def step(what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as exc:
            log.warning("teardown of run %s: %s failed: %s", run_id, what, exc)
            errors.append(f"{what}: {exc}")

    selector = _selector_for_run(
        run_id,
        run_dir,
        extra_net=[h.net_inode for h in known if h.net_inode],
        extra_mnt=[h.mnt_inode for h in known if h.mnt_inode],
    )

    def kill() -> None:
        killed = selector.kill_all(timeout=15)
        # Wait for the killed (and the earlier `seen`) to be reaped too, so
        # that not even a zombie of the run shows up in `pgrep` afterwards.
        lingering = wait_gone([*seen, *killed], timeout=10)
        if lingering:
            log.warning("run %s: still in the process table: %s", run_id, lingering)
        if killed:
            log.info(
                "run %s: killed %d leftover processes: %s", run_id, len(killed), [p.cmdline for p in killed]
            )

    step("kill processes", kill)

    def unmount() -> None:
        remaining = mounts.unmount_under(run_dir)
        if remaining:
            raise RuntimeError(f"still mounted: {remaining}")

    step("unmount", unmount)

    def cgroups() -> None:
        failed = mounts.remove_cgroups(f"atl-{run_id}-")
        if failed:
            raise RuntimeError("; ".join(failed))

    step("remove cgroups", cgroups)
    # Hosts before the underlay, so no veth end is ever left dangling.
    names = sorted(
        (n for n in _list_netns() if n.startswith(f"atl-{run_id}-")), key=lambda n: n.endswith("-ul")
    )
    for name in names:
        step(f"delete netns {name}", functools.partial(sh, ["ip", "netns", "delete", name]))
    if keep_logs is not None and run_dir.is_dir():
        step("keep logs", lambda: _copy_logs(run_dir, keep_logs))

    def remove_dir() -> None:
        if not run_dir.exists():
            return
        if mounts.mounts_under(run_dir):
            raise RuntimeError(f"not removing {run_dir}: something is still mounted below it")
        shutil.rmtree(run_dir)

    step(f"remove {run_dir}", remove_dir)
    return errors


def _copy_logs(run_dir: Path, dest: Path) -> None:
    """Keep the logs (dockerd, spawned processes) of a run for post-mortems."""
    for path in run_dir.rglob("*.log"):
        if path.is_file():
            target = dest / path.relative_to(run_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def sweep_stale(base_dir: Path = DEFAULT_BASE_DIR) -> list[str]:
    """Remove what earlier, crashed runs left behind; beds that are alive (lock held) are untouched.

    Stale runs are found from their lock files, from `atl-<id>-*` network
    namespaces and from run directories under `base_dir`. Returns the ids swept.
    """
    require_root()
    ids: set[str] = set()
    if LOCK_DIR.is_dir():
        ids |= {p.stem for p in LOCK_DIR.glob("*.lock") if _RUN_ID.match(p.stem)}
    ids |= {m.group(1) for m in (_NETNS.match(n) for n in _list_netns()) if m}
    if base_dir.is_dir():
        ids |= {p.name for p in base_dir.iterdir() if _RUN_ID.match(p.name)}
    live = {bed.run_id for bed in list(_live_beds)}
    swept = []
    for run_id in sorted(ids - live):
        lock, info = _RunLock.try_acquire(run_id)
        if lock is None:
            continue
        run_dir = Path(info.get("run_dir") or base_dir / run_id)
        log.warning("sweeping stale test-bed run %s (%s)", run_id, run_dir)
        try:
            errors = destroy_run(run_id, run_dir)
            if errors:
                log.warning("sweep of run %s incomplete: %s", run_id, errors)
        finally:
            lock.release(unlink=True)
        swept.append(run_id)
    with contextlib.suppress(OSError):
        base_dir.rmdir()  # only if empty
    return swept


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block is done (teardown must not be cut in half); then raise it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            raise KeyboardInterrupt


class TestBed:
    """N simulated hosts, each with its own network namespace and (optionally) dockerd.

    Usage::

        with TestBed(3) as bed:
            h0, h1 = bed.hosts[0], bed.hosts[1]
            h0.docker().containers.run("fedora/apache", detach=True, ports={"80/tcp": 8080})
            wait_for(lambda: "Apache" in h1.http_get(f"http://{h0.ip}:8080/").body, 20, message="web")

    Everything is torn down on exit, after failures and Ctrl-C too; teardown
    raises `TeardownError` if anything could not be removed.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        n_hosts: int = 1,
        *,
        docker: bool = True,
        images: bool = True,
        base_dir: Path | str | None = None,
        bip: str = "172.31.{index}.1/24",
        dockerd_args: Sequence[str] = (),
        docker_timeout: float = 60.0,
        keep_logs: Path | str | None = None,
    ) -> None:
        if not 0 <= n_hosts <= 200:
            raise ValueError(f"n_hosts must be within 0..200, not {n_hosts}")
        self.n_hosts = n_hosts
        self.with_docker = docker
        self.with_images = images and docker
        self.base_dir = Path(base_dir) if base_dir else DEFAULT_BASE_DIR
        self.bip_template = bip
        self.dockerd_args = list(dockerd_args)
        self.docker_timeout = docker_timeout
        self.keep_logs = Path(keep_logs) if keep_logs else None
        self.hosts: list[Host] = []
        self.run_id = ""
        self.dir = Path()
        self.underlay: Underlay | None = None
        self.timings: dict[str, float] = {}
        self._lock: _RunLock | None = None
        self._torn_down = False

    def __repr__(self) -> str:
        return f"<TestBed {self.run_id or '(not started)'} hosts={len(self.hosts)}>"

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def __len__(self) -> int:
        return len(self.hosts)

    def __enter__(self) -> TestBed:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.teardown()
        except TeardownError:
            if exc is None:
                raise
            log.exception("teardown after %s failed too", exc_type.__name__ if exc_type else "error")

    # -- setup --------------------------------------------------------------------

    def start(self) -> TestBed:
        """Create the run, the underlay and the hosts; on any failure undo all of it and re-raise."""
        require_root()
        if self._lock is not None:
            raise RuntimeError(f"{self!r} was already started")
        t0 = time.monotonic()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _RunLock.create(lambda rid: self.base_dir / rid)
        self.run_id = self._lock.run_id
        self.dir = self.base_dir / self.run_id
        _live_beds.add(self)
        try:
            self.dir.mkdir(mode=0o755, parents=True)
            ns_dir = self.dir / "ns"
            ns_dir.mkdir()
            # Mount-namespace files may only be bound below a private mount.
            sh(["mount", "--bind", str(ns_dir), str(ns_dir)])
            sh(["mount", "--make-private", str(ns_dir)])
            self.underlay = Underlay(self.run_id)
            self.underlay.create()
            for _ in range(self.n_hosts):
                self._create_host()
            self.timings["network"] = time.monotonic() - t0
            if self.with_docker:
                self._parallel(self.hosts, self._start_engine)
            self.timings["setup"] = time.monotonic() - t0
            log.info("test bed %s up: %d hosts in %.1fs", self.run_id, len(self.hosts), self.timings["setup"])
        except BaseException:
            log.exception("test bed %s failed to start; tearing down", self.run_id)
            with contextlib.suppress(TeardownError):
                self.teardown()
            raise
        return self

    def _create_host(self, *, index: int | None = None) -> Host:
        assert self.underlay is not None
        i = len(self.hosts) if index is None else index
        host = Host(
            run_id=self.run_id,
            run_dir=self.dir,
            index=i,
            bip=self.bip_template.format(index=i),
            dockerd_args=self.dockerd_args,
            docker_timeout=self.docker_timeout,
        )
        self.hosts.append(host)  # before create(): a half-made host must be torn down too
        host.create(self.underlay)
        return host

    def _start_engine(self, host: Host) -> None:
        t0 = time.monotonic()
        host.start_docker()
        t1 = time.monotonic()
        if self.with_images:
            demo = _load_demo_images()
            client = host.docker()
            demo.ensure_images(client)
        log.info("%s: dockerd up in %.2fs, images in %.2fs", host.name, t1 - t0, time.monotonic() - t1)

    @staticmethod
    def _parallel(hosts: Sequence[Host], fn: Callable[[Host], None]) -> None:
        if len(hosts) <= 1:
            for host in hosts:
                fn(host)
            return
        with ThreadPoolExecutor(max_workers=min(8, len(hosts))) as pool:
            for future in [pool.submit(fn, h) for h in hosts]:
                future.result()

    def add_host(self, *, docker: bool | None = None) -> Host:
        """Add one more host to a running bed (with dockerd and images unless `docker=False`)."""
        if self._lock is None or self._torn_down:
            raise RuntimeError(f"{self!r} is not running")
        host = self._create_host()
        if self.with_docker if docker is None else docker:
            self._start_engine(host)
        return host

    # -- teardown -----------------------------------------------------------------

    def teardown(self) -> None:
        """Remove everything the bed made, in reverse order; safe to call twice.

        Graceful first (spawned processes get SIGTERM, containers are removed
        through their engine, dockerd gets SIGTERM), then the run-wide hard
        sweep catches whatever is left. Raises `TeardownError` listing what
        could not be removed.
        """
        if self._torn_down or self._lock is None:
            return
        self._torn_down = True
        t0 = time.monotonic()
        errors: list[str] = []
        with _sigint_deferred():
            seen = list(_selector_for_run(self.run_id, self.dir).find().values())

            def graceful(host: Host) -> None:
                for what, fn in (
                    ("stop spawned processes", host.stop_processes),
                    ("remove containers", host.remove_containers),
                    ("close docker client", host.close_client),
                    ("stop dockerd", host.stop_docker),
                ):
                    try:
                        fn()
                    except Exception as exc:
                        log.warning("teardown %s: %s failed: %s", host.name, what, exc)
                        errors.append(f"{host.name}: {what}: {exc}")

            self._parallel(list(reversed(self.hosts)), graceful)
            errors += destroy_run(
                self.run_id, self.dir, known=self.hosts, keep_logs=self.keep_logs, seen=seen
            )
            left = find_leftovers(self.run_id, self.dir)
            left = [item for item in left if not item.startswith("lock file")]
            self._lock.release(unlink=True)
            _live_beds.discard(self)
            with contextlib.suppress(OSError):
                self.base_dir.rmdir()  # only if no other bed uses it
        self.timings["teardown"] = time.monotonic() - t0
        log.info("test bed %s torn down in %.1fs", self.run_id, self.timings["teardown"])
        if left:
            raise TeardownError(f"test bed {self.run_id} left behind: {left}; errors: {errors}")
        if errors:
            log.warning("test bed %s: teardown errors (nothing left behind though): %s", self.run_id, errors)

    def leftovers(self) -> list[str]:
        """What of this bed still exists on the machine (empty after a clean teardown)."""
        return find_leftovers(self.run_id, self.dir)

    def pgrep(self) -> str:
        """`pgrep -a -f <run dir>`: processes whose command line mentions this bed (for assertions)."""
        res = subprocess.run(
            ["pgrep", "-a", "-f", f"{self.dir}/"], check=False, capture_output=True, text=True
        )
        return res.stdout.strip()


@atexit.register
def _teardown_forgotten_beds() -> None:
    """Last resort for beds whose owner never reached teardown (e.g. an interpreter exiting on an error)."""
    for bed in list(_live_beds):
        with contextlib.suppress(Exception):
            log.warning("tearing down %r at exit", bed)
            bed.teardown()
