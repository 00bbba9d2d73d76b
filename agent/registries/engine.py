"""The Engine's half of the registry settings: insecure registries and Docker Hub mirrors.

Search order, blocking and credentials are the agent's business (it picks
the names it pulls); whether a registry may be reached over plain HTTP and
which mirrors stand in for Docker Hub only the Engine can do. The agent
writes those two keys of dockerd's config file (daemon.json) and sends
dockerd SIGHUP: `insecure-registries` and `registry-mirrors` are both
reloadable without a restart (checked on Docker 20.10 by
tests/integration/test_registries.py), so running containers are untouched.

Rules the writer keeps, because a bad daemon.json stops dockerd from starting:

* every other key in the file is preserved, in its order; the file is
  replaced atomically (temp file, fsync, rename) with its mode and owner;
* the agent owns the two keys: their value is the effective settings, and
  entries put there by hand are replaced (put them in `registries_file`);
* a list that becomes empty is written as `[]`, not deleted: dockerd's reload
  only touches keys present in the file, so a deleted key would keep the old
  registries until the next restart;
* a key is left alone when dockerd was started with the same setting as a
  flag (`--insecure-registry`, as RHEL's unit does from INSECURE_REGISTRY):
  dockerd refuses a setting given both ways, at reload and at its next start;
* nothing is written and nobody is signalled when nothing changed, and only
  a dockerd (per `docker_pidfile`) that reads this very file is signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from atoll import files

log = logging.getLogger(__name__)

KEY_INSECURE = "insecure-registries"
KEY_MIRRORS = "registry-mirrors"
#: The daemon.json key of each setting and the dockerd flag that sets it too.
FLAGS = {KEY_INSECURE: "--insecure-registry", KEY_MIRRORS: "--registry-mirror"}
#: Where dockerd reads its config without --config-file.
DEFAULT_CONFIG_FILE = "/etc/docker/daemon.json"
#: Insecure CIDRs the Engine always has.
DEFAULT_INSECURE_CIDRS = frozenset({"127.0.0.0/8", "::1/128"})


@dataclass(frozen=True)
class EngineSettings:
    insecure: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()

    def as_keys(self) -> dict[str, list[str]]:
        return {KEY_INSECURE: list(self.insecure), KEY_MIRRORS: list(self.mirrors)}


class EngineConfigurator(Protocol):
    async def apply(self, settings: EngineSettings) -> bool:
        """Make the Engine use `settings`; True when anything had to change."""
        ...


class RecordingEngineConfigurator:
    """Fake for tests and hollow agents: remembers every change it was asked for."""

    def __init__(self, *, fail: Exception | None = None) -> None:
        self.current = EngineSettings()
        self.applied: list[EngineSettings] = []
        self.fail = fail

    async def apply(self, settings: EngineSettings) -> bool:
        if self.fail is not None:
            raise self.fail
        if settings == self.current:
            return False
        self.current = settings
        self.applied.append(settings)
        return True


class EngineConfigError(Exception):
    """daemon.json could not be read or written; the Engine keeps its settings."""


def merge_config(
    current: Mapping[str, Any], settings: EngineSettings, *, skip: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """`current` with the two registry keys set to `settings` (pure; order of other keys kept)."""
    new = dict(current)
    for key, value in settings.as_keys().items():
        if key in skip:
            continue
        if value or key in new:
            new[key] = value
    return new


def flag_values(cmdline: Sequence[str]) -> dict[str, list[str]]:
    """daemon.json keys that dockerd's command line already sets as flags, with the flags' values."""
    found: dict[str, list[str]] = {}
    for key, flag in FLAGS.items():
        for i, arg in enumerate(cmdline):
            if arg == flag:
                found.setdefault(key, []).append(cmdline[i + 1] if i + 1 < len(cmdline) else "")
            elif arg.startswith(flag + "="):
                found.setdefault(key, []).append(arg.split("=", 1)[1])
    return found


def flag_conflicts(cmdline: Sequence[str]) -> frozenset[str]:
    return frozenset(flag_values(cmdline))


def config_file_flag(cmdline: Sequence[str]) -> str | None:
    for i, arg in enumerate(cmdline):
        if arg.startswith("--config-file="):
            return arg.split("=", 1)[1]
        if arg == "--config-file" and i + 1 < len(cmdline):
            return cmdline[i + 1]
    return None


def engine_mismatches(
    settings: EngineSettings, registry_config: Mapping[str, Any], keys: frozenset[str]
) -> list[str]:
    """What `docker info`'s RegistryConfig still lacks or has in excess (pure; empty: applied)."""
    problems = []
    if KEY_INSECURE in keys:
        cidrs = set(registry_config.get("InsecureRegistryCIDRs") or []) - DEFAULT_INSECURE_CIDRS
        hosts = {
            name
            for name, index in (registry_config.get("IndexConfigs") or {}).items()
            if index and not index.get("Secure", True) and not index.get("Official")
        }
        want_cidrs = {s for s in settings.insecure if "/" in s}
        want_hosts = set(settings.insecure) - want_cidrs
        if cidrs != want_cidrs - DEFAULT_INSECURE_CIDRS or hosts != want_hosts:
            problems.append(
                f"insecure registries are {sorted(hosts | cidrs)}, want {sorted(settings.insecure)}"
            )
    if KEY_MIRRORS in keys:
        mirrors = [str(m).rstrip("/") for m in registry_config.get("Mirrors") or []]
        if mirrors != list(settings.mirrors):
            problems.append(f"mirrors are {mirrors}, want {list(settings.mirrors)}")
    return problems


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise EngineConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise EngineConfigError(f"{path} is not valid JSON ({exc}); not touching it") from None
    if not isinstance(data, dict):
        raise EngineConfigError(f"{path} does not hold a JSON object; not touching it")
    return data


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so that readers see the old or the new file, never half of one."""
    try:
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        st = None
    files.public_dirs(path.parent)  # /etc/docker, 0755 like the engine's own
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".atoll", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), (st.st_mode & 0o7777) if st else 0o644)
            if st is not None:
                with contextlib.suppress(PermissionError):
                    os.fchown(f.fileno(), st.st_uid, st.st_gid)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class DaemonJsonConfigurator:
    """EngineConfigurator for a local dockerd: edit daemon.json, then SIGHUP the pid in `pidfile`.

    `check`, when given, returns `docker info`'s RegistryConfig
    (DockerRuntime.registry_config); after a reload the configurator waits
    until the Engine reports the new settings and logs a warning if it does
    not (dockerd only logs a rejected reload in its own log).
    """

    def __init__(
        self,
        config_path: Path | str,
        pidfile: Path | str,
        *,
        check: Callable[[], Awaitable[Mapping[str, Any]]] | None = None,
        reload_timeout: float = 10.0,
    ) -> None:
        self.path = Path(config_path)
        self.pidfile = Path(pidfile)
        self.check = check
        self.reload_timeout = reload_timeout

    def _dockerd(self) -> tuple[int, list[str]] | None:
        """The running dockerd's pid and command line, None when the pid file names no dockerd."""
        try:
            pid = int(self.pidfile.read_text().strip())
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if not comm.startswith("dockerd"):  # RHEL 7's is dockerd-current
            log.warning(
                "%s names pid %d, which is %r, not dockerd; not signalling it", self.pidfile, pid, comm
            )
            return None
        return pid, [a.decode(errors="replace") for a in cmdline if a]

    def _apply_sync(self, settings: EngineSettings) -> tuple[bool, frozenset[str]]:
        """Write and signal; returns (changed, keys written and reloaded)."""
        dockerd = self._dockerd()
        skip: frozenset[str] = frozenset()
        if dockerd is not None:
            pid, cmdline = dockerd
            flagged = flag_values(cmdline)
            skip = frozenset(flagged)
            wanted = settings.as_keys()
            for key in sorted(skip):
                missing = [v for v in wanted[key] if v not in flagged[key]]
                if missing:
                    log.warning(
                        "dockerd (pid %d) was started with %s flags, so %s cannot go to %s; %s do "
                        "not apply (drop the flags, e.g. INSECURE_REGISTRY in /etc/sysconfig/docker, "
                        "to let the agent manage them)",
                        pid,
                        FLAGS[key],
                        key,
                        self.path,
                        ", ".join(missing),
                    )
            used = config_file_flag(cmdline) or DEFAULT_CONFIG_FILE
            if Path(used).resolve() != self.path.resolve():
                # Not the engine whose file this is: signalling it would reload nothing of ours.
                log.warning(
                    "dockerd (pid %d from %s) reads %s, but the agent writes %s (option docker_config); "
                    "not signalling it",
                    pid,
                    self.pidfile,
                    used,
                    self.path,
                )
                dockerd = None
        current = _read_json(self.path)
        new = merge_config(current, settings, skip=skip)
        if new == current:
            return False, frozenset()
        for key in FLAGS:
            if current.get(key) != new.get(key):
                log.info("%s: %s %s -> %s", self.path, key, current.get(key, "(unset)"), new.get(key))
        try:
            write_atomically(self.path, json.dumps(new, indent=2) + "\n")
        except OSError as exc:
            raise EngineConfigError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        if dockerd is None:
            log.warning(
                "wrote %s but found no running dockerd reading it in %s; the settings apply when it starts",
                self.path,
                self.pidfile,
            )
            return True, frozenset()
        try:
            os.kill(dockerd[0], signal.SIGHUP)
        except OSError as exc:
            log.warning("wrote %s but cannot signal dockerd (pid %d): %s", self.path, dockerd[0], exc)
            return True, frozenset()
        log.info("sent SIGHUP to dockerd (pid %d) to reload its registry settings", dockerd[0])
        return True, frozenset(FLAGS) - skip

    async def apply(self, settings: EngineSettings) -> bool:
        changed, reloaded = await asyncio.to_thread(self._apply_sync, settings)
        if reloaded and self.check is not None:
            await self._confirm(settings, reloaded)
        return changed

    async def _confirm(self, settings: EngineSettings, keys: frozenset[str]) -> None:
        assert self.check is not None
        deadline = time.monotonic() + self.reload_timeout
        problems: list[str] = []
        while True:
            try:
                problems = engine_mismatches(settings, await self.check(), keys)
            except Exception as exc:  # a probe failure must not fail the apply; say so and stop
                log.warning("cannot confirm dockerd's registry settings: %s", exc)
                return
            if not problems or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.1)
        if problems:
            log.warning(
                "dockerd did not take the new registry settings after SIGHUP (see its log): %s",
                "; ".join(problems),
            )
