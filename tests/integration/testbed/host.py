"""One simulated host: a network namespace on the underlay, a mount namespace and its own dockerd.

A host is what an Atoll agent would run on: it has an address on a shared
L2 segment (the underlay bridge), its own Docker Engine, and processes
started "on" it see only its network. The pieces:

* network namespace `atl-<run>-h<i>`, `eth0` with 198.51.100.(10+i)/24 on the
  underlay bridge, `lo` up, no default route (nothing can leave the machine);
* a persistent mount namespace (bound on `<run>/ns/h<i>.mnt`) in which /sys
  is the namespace's own sysfs with the root's cgroup mounts mirrored,
  /run/containerd and /etc/docker are per-host directories (so engines never
  share containerd shim sockets or their engine identity key), and in which
  dockerd's overlay and netns mounts stay invisible to the rest of the
  machine. Because it outlives dockerd, a restarted dockerd finds its running
  containers' mounts and shims again (live-restore works);
* dockerd with its own data-root, exec-root, pidfile, socket, docker0 subnet
  and cgroup parent `/atl-<run>-h<i>` (so stray containers can be found).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import docker.errors
import requests

from . import mounts
from .netns import PortForward, connect
from .procs import Process, ProcessSelector, start_process
from .waiting import wait_for

if TYPE_CHECKING:
    import socket

log = logging.getLogger(__name__)

UNDERLAY_PREFIX = "198.51.100"
UNDERLAY_PREFIXLEN = 24

#: PATH for daemons: dockerd needs iptables, docker-proxy, containerd, runc.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def sh(argv: Sequence[str], *, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a setup command; on failure raise with its stderr, which is what explains it."""
    res = subprocess.run(list(argv), check=False, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}"
        )
    return res


def netns_inode(name: str) -> int | None:
    """Inode of a named network namespace (what /proc/PID/ns/net shows), None if it is gone."""
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return None


def daemon_env() -> dict[str, str]:
    """Environment for dockerd: the test's own minus anything that would steer it elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DOCKER_", "CONTAINERD_"))
        and k != "NOTIFY_SOCKET"
        and k.lower() not in _PROXY_VARS
    }
    env["PATH"] = SYSTEM_PATH
    return env


_HTTP_GET = r"""
import json, sys, urllib.error, urllib.request
url, timeout = sys.argv[1], float(sys.argv[2])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(url, timeout=timeout) as r:
        body = r.read().decode("utf-8", "replace")
        out = {"status": r.status, "headers": dict(r.headers.items()), "body": body}
except urllib.error.HTTPError as e:
    out = {"status": e.code, "headers": dict(e.headers.items()), "body": e.read().decode("utf-8", "replace")}
except Exception as e:
    out = {"error": f"{type(e).__name__}: {e}"}
print(json.dumps(out))
"""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


class Underlay:
    """The shared L2 segment: a bridge alone in its own namespace, no address, no route anywhere."""

    def __init__(self, run_id: str) -> None:
        self.name = f"atl-{run_id}-ul"
        self.bridge = "br0"

    def create(self) -> None:
        sh(["ip", "netns", "add", self.name])
        sh(["ip", "-n", self.name, "link", "set", "lo", "up"])
        sh(["ip", "-n", self.name, "link", "add", self.bridge, "type", "bridge"])
        sh(["ip", "-n", self.name, "link", "set", self.bridge, "up"])

    def attach(self, port: str, host_netns: str, host_ifname: str = "eth0") -> None:
        """Create a veth pair whose ends are born in their namespaces (never in the root one)."""
        peer = ["peer", "name", host_ifname, "netns", host_netns]
        sh(["ip", "-n", self.name, "link", "add", port, "type", "veth", *peer])
        sh(["ip", "-n", self.name, "link", "set", port, "master", self.bridge, "up"])

    def set_port(self, port: str, up: bool) -> None:
        """Set a host's bridge port up or down (the host keeps its own link state)."""
        sh(["ip", "-n", self.name, "link", "set", port, "up" if up else "down"])


class Host:
    """A simulated host; made by `TestBed`, which also tears it down."""

    def __init__(
        self,
        *,
        run_id: str,
        run_dir: Path,
        index: int,
        bip: str,
        dockerd_args: Sequence[str] = (),
        docker_timeout: float = 60.0,
    ) -> None:
        self.run_id = run_id
        self.index = index
        self.name = f"atl-{run_id}-h{index}"
        self.ip = f"{UNDERLAY_PREFIX}.{10 + index}"
        self.underlay_port = f"h{index}"
        self.dir = run_dir / f"h{index}"
        self.mntns_path = run_dir / "ns" / f"h{index}.mnt"
        self.netns_path = f"/run/netns/{self.name}"
        self.docker_sock = self.dir / "docker.sock"
        self.docker_host = f"unix://{self.docker_sock}"
        self.bip = bip
        self.dockerd_args = list(dockerd_args)
        self.docker_timeout = docker_timeout
        self.dockerd: Process | None = None
        self.processes: list[Process] = []
        self.net_inode: int | None = None
        self.mnt_inode: int | None = None
        self._client: docker.DockerClient | None = None
        self._forwards: list[PortForward] = []
        self._spawned = 0
        self._underlay: Underlay | None = None

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.ip}>"

    # -- creation -----------------------------------------------------------------

    def create(self, underlay: Underlay) -> None:
        """Network namespace, underlay link and mount namespace; no dockerd yet."""
        self.dir.mkdir(parents=True)
        sh(["ip", "netns", "add", self.name])
        self.net_inode = netns_inode(self.name)
        self._underlay = underlay
        underlay.attach(self.underlay_port, self.name)
        ns = ["ip", "-n", self.name]
        sh([*ns, "addr", "add", f"{self.ip}/{UNDERLAY_PREFIXLEN}", "dev", "eth0"])
        sh([*ns, "link", "set", "eth0", "up"])
        sh([*ns, "link", "set", "lo", "up"])
        # Forwarding on before dockerd starts: a dockerd that has to turn it on
        # itself also sets the FORWARD policy to DROP.
        sh(["nsenter", f"--net={self.netns_path}", "--", "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        self._create_mount_namespace()

    def _create_mount_namespace(self) -> None:
        run_containerd = self.dir / "run-containerd"
        etc_docker = self.dir / "etc-docker"
        run_containerd.mkdir(mode=0o711)
        etc_docker.mkdir(mode=0o755)
        self.mntns_path.touch()
        script = [
            "set -eu",
            *mounts.sysfs_and_cgroup_script(),
            "mkdir -p /run/containerd /etc/docker",
            f"mount --bind {shlex.quote(str(run_containerd))} /run/containerd",
            f"mount --bind {shlex.quote(str(etc_docker))} /etc/docker",
        ]
        # Drop this namespace's copies of the bindings of other hosts' (and
        # other beds') mount namespaces, so namespaces never pin one another.
        script += [f"umount -l {shlex.quote(d)} || true" for d in mounts.testbed_ns_dirs()]
        script_path = self.dir / "mntns-setup.sh"
        script_path.write_text("\n".join(script) + "\n")
        in_netns = ["nsenter", f"--net={self.netns_path}", "--", "sh", str(script_path)]
        sh(["unshare", f"--mount={self.mntns_path}", "--propagation", "slave", "--", *in_netns])
        self.mnt_inode = os.stat(self.mntns_path).st_ino

    # -- running things -----------------------------------------------------------

    def enter_argv(self, cwd: Path | str | None = None) -> list[str]:
        """Prefix that runs a command inside this host (its network and mount namespaces)."""
        return [
            "nsenter",
            f"--net={self.netns_path}",
            f"--mount={self.mntns_path}",
            f"--wd={cwd or os.getcwd()}",
            "--",
        ]

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The test's environment, pointed at this host's engine, plus `extra`."""
        env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
        env["DOCKER_HOST"] = self.docker_host
        env.update(extra or {})
        return env

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | str | None = None,
        cwd: Path | str | None = None,
        label: str | None = None,
    ) -> Process:
        """Start a long-lived process on this host, in its own process group, output to a log file.

        `env` is added to the test's environment (with DOCKER_HOST set to this
        host's engine). The log defaults to `<host dir>/logs/<name>-<n>.log`.
        The bed stops it at teardown (SIGTERM, then SIGKILL).
        """
        self._spawned += 1
        name = label or os.path.basename(argv[0])
        path = Path(log_path) if log_path else self.dir / "logs" / f"{name}-{self._spawned}.log"
        proc = start_process(
            self.enter_argv(cwd) + list(argv), log_path=path, env=self.env(env), label=f"{name}@{self.name}"
        )
        proc.argv = list(argv)
        self.processes.append(proc)
        return proc

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 30.0,
        *,
        check: bool = False,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command on this host and capture its output (text)."""
        return subprocess.run(
            self.enter_argv(cwd) + list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            input=input,
            env=self.env(env),
        )

    def http_get(self, url: str, timeout: float = 5.0) -> HttpResponse:
        """GET `url` from inside this host; any HTTP status is returned, no answer raises ConnectionError."""
        res = self.run([sys.executable, "-I", "-c", _HTTP_GET, url, str(timeout)], timeout=timeout + 15)
        try:
            out = json.loads(res.stdout)
        except ValueError:
            raise ConnectionError(f"GET {url} on {self.name}: helper failed: {res.stderr.strip()}") from None
        if "error" in out:
            raise ConnectionError(f"GET {url} on {self.name}: {out['error']}")
        return HttpResponse(status=out["status"], body=out["body"], headers=out["headers"])

    def ping(self, address: str, *, count: int = 1, timeout: float = 2.0) -> bool:
        """Whether `address` answers ICMP echo from this host (busybox ping, bounded by `timeout`)."""
        wait = max(1, round(timeout))
        argv = ["timeout", str(wait + 2), "busybox", "ping", "-c", str(count), "-W", str(wait), address]
        return self.run(argv, timeout=wait + 10).returncode == 0

    def connect(self, address: tuple[str, int], timeout: float = 5.0) -> socket.socket:
        """A TCP socket connected to `address` from this host's network namespace (no subprocess)."""
        return connect(self.netns_path, address, timeout)

    def forward(self, port: int, address: str | None = None) -> PortForward:
        """Expose `address`:`port` (default: this host's underlay IP) on 127.0.0.1:`forward.port`.

        For clients that must run in the test process (gRPC stubs...). Closed
        at teardown, or earlier with `close()`.
        """
        fwd = PortForward(self.netns_path, (address or self.ip, port))
        self._forwards.append(fwd)
        return fwd

    def set_link(self, up: bool) -> None:
        """Plug or unplug this host from the underlay (its bridge port), e.g. to simulate a partition."""
        if self._underlay is None:
            raise RuntimeError(f"{self!r} is not on an underlay")
        self._underlay.set_port(self.underlay_port, up)

    # -- docker -------------------------------------------------------------------

    def dockerd_argv(self) -> list[str]:
        return [
            "dockerd",
            f"--config-file={self.dir / 'daemon.json'}",
            f"--host={self.docker_host}",
            f"--data-root={self.dir / 'docker'}",
            f"--exec-root={self.dir / 'run'}",
            f"--pidfile={self.dir / 'dockerd.pid'}",
            f"--bip={self.bip}",
            f"--cgroup-parent=/{self.name}",
            "--live-restore",
            *self.dockerd_args,
        ]

    def start_docker(self, timeout: float | None = None) -> None:
        """Start this host's dockerd (again) and wait until its API answers."""
        if self.dockerd is not None and self.dockerd.alive:
            raise RuntimeError(f"dockerd on {self.name} is already running ({self.dockerd.pid})")
        config = self.dir / "daemon.json"
        if not config.exists():
            config.write_text("{}\n")
        self.dockerd = start_process(
            self.enter_argv(self.dir) + self.dockerd_argv(),
            log_path=self.dir / "dockerd.log",
            env=daemon_env(),
            label=f"dockerd@{self.name}",
        )
        self.wait_docker(timeout)

    def wait_docker(self, timeout: float | None = None) -> None:
        """Poll the engine until it answers a ping; fail at once if dockerd exits."""
        dockerd = self.dockerd
        if dockerd is None:
            raise RuntimeError(f"dockerd on {self.name} was never started")

        def answers() -> bool:
            if not dockerd.alive:
                raise RuntimeError(
                    f"dockerd on {self.name} exited with {dockerd.returncode}; "
                    f"log {dockerd.log_path}:\n{dockerd.log_tail()}"
                )
            api = docker.APIClient(base_url=self.docker_host, timeout=3)
            try:
                return bool(api.ping())
            finally:
                api.close()

        try:
            wait_for(
                answers,
                timeout=timeout or self.docker_timeout,
                interval=0.05,
                message=f"dockerd on {self.name} to answer on {self.docker_sock}",
                ignore=(docker.errors.DockerException, requests.exceptions.RequestException, OSError),
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\ndockerd log {dockerd.log_path}:\n{dockerd.log_tail()}") from None

    def stop_docker(self, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
        """Stop dockerd with `sig` (SIGKILL simulates a crash); containers keep running (live-restore)."""
        if self.dockerd is not None:
            self.dockerd.stop(timeout, sig=sig)

    def restart_docker(self, timeout: float | None = None, sig: int = signal.SIGTERM) -> None:
        self.stop_docker(sig=sig)
        self.start_docker(timeout)

    def docker(self) -> docker.DockerClient:
        """A docker SDK client for this host's engine (one per host, closed at teardown)."""
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.docker_host, timeout=60)
        return self._client

    # -- teardown -----------------------------------------------------------------

    def selector(self) -> ProcessSelector:
        """Everything running on this host: its namespaces, its containers' cgroups, their descendants."""
        return ProcessSelector(
            net_inodes=frozenset(i for i in (self.net_inode,) if i is not None),
            mnt_inodes=frozenset(i for i in (self.mnt_inode,) if i is not None),
            cgroup_marker=f":/{self.name}/",
        )

    def stop_processes(self, timeout: float = 5.0) -> None:
        """Stop what `spawn` started, newest first."""
        for fwd in reversed(self._forwards):
            fwd.close()
        self._forwards.clear()
        for proc in reversed(self.processes):
            proc.stop(timeout)

    def remove_containers(self, timeout: float = 30.0) -> None:
        """Force-remove every container, so that live-restore does not keep them past dockerd."""
        if self.dockerd is None or not self.dockerd.alive:
            return
        api = docker.APIClient(base_url=self.docker_host, timeout=int(timeout))
        try:
            for c in api.containers(all=True):
                api.remove_container(c["Id"], force=True, v=True)
        finally:
            api.close()

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
