"""Registry settings as plain data: normalisation, the three sources, and how they merge.

A node's effective settings come from three places, merged in this order:

1. the coordinator's `Registries` object, pushed to every node (RegistriesSpec);
2. the node-local YAML file (agent option `registries_file`), same fields;
3. the legacy RHEL `/etc/sysconfig/docker` keys ADD_REGISTRY, INSECURE_REGISTRY
   and BLOCK_REGISTRY (agent option `legacy_sysconfig`; see agent.registries.legacy).

Lists are concatenated in that order with duplicates dropped, so the local
file and the legacy keys *add to* what the coordinator pushes; the search
order is pushed first, then local, then legacy. For credentials of the same
registry the earlier source wins. Then **blocked wins over everything**: a
blocked registry is removed from the search list, the insecure list, the
mirrors and the credentials. `*` (or RHEL's `all`) in `blocked` blocks every
registry that is not in the search list, docker.io included.

Registry names are compared in one canonical form (lower case, no scheme,
no trailing slash, Docker Hub's aliases folded into `docker.io`), so
`https://index.docker.io/v1/` in an auth entry and `docker.io` in `blocked`
mean the same registry, as they do for the Docker Engine.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import stat
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atoll import errors
from atoll.v1 import network_pb2

log = logging.getLogger(__name__)

DOCKER_HUB = "docker.io"
#: What the Engine treats as Docker Hub; all of them fold into DOCKER_HUB.
DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
#: Where Docker's own auth config keeps Hub credentials.
DOCKER_HUB_AUTH_ADDRESS = "https://index.docker.io/v1/"
#: `blocked` entry that blocks every registry outside the search list.
BLOCK_ALL = "*"

_HOST_PORT = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*|\[[0-9a-f:.]+\])"
    r"(?::[0-9]{1,5})?\Z"
)
_FIELDS = ("search", "insecure", "blocked", "mirrors", "auths")


class SettingsError(errors.InvalidArgument):
    """A registry setting cannot be used; the message names the source and the entry."""


@dataclass(frozen=True)
class Credential:
    """Credentials for one registry. The password never shows in repr, logs or errors."""

    registry: str
    username: str
    password: str = field(repr=False)

    def __str__(self) -> str:
        return f"{self.username}@{self.registry}"


@dataclass(frozen=True)
class RegistrySettings:
    """One source's settings, or the effective merge of all of them (see `merge`)."""

    search: tuple[str, ...] = ()
    insecure: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()
    auths: tuple[Credential, ...] = ()

    @property
    def block_all(self) -> bool:
        return BLOCK_ALL in self.blocked

    def is_blocked(self, registry: str) -> bool:
        """Whether images may not come from `registry` (canonical name)."""
        return registry in self.blocked or (self.block_all and registry not in self.search)

    def summary(self) -> str:
        """For logs: every list, and for credentials only which registries have some."""
        auths = ",".join(c.registry for c in self.auths)
        return (
            f"search=[{','.join(self.search)}] insecure=[{','.join(self.insecure)}] "
            f"blocked=[{','.join(self.blocked)}] mirrors=[{','.join(self.mirrors)}] credentials=[{auths}]"
        )


def canonical_registry(name: str) -> str:
    """`HTTPS://Index.Docker.io/v1/` -> `docker.io`; `reg.lab:5000/` -> `reg.lab:5000`.

    Raises SettingsError for what cannot name a registry (a path, spaces, ...).
    """
    text = name.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.rstrip("/")
    for suffix in ("/v1", "/v2"):
        text = text.removesuffix(suffix)
    if not text or not _HOST_PORT.fullmatch(text):
        raise SettingsError(f"{name!r} is not a registry host[:port]")
    if text in DOCKER_HUB_ALIASES:
        return DOCKER_HUB
    return text


def canonical_insecure(name: str) -> str:
    """An insecure entry: a registry host[:port] or a CIDR (the Engine takes both)."""
    text = name.strip()
    if "/" in text and "://" not in text:
        try:
            return str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            pass
    return canonical_registry(text)


def canonical_mirror(url: str) -> str:
    """A Docker Hub mirror, checked with the Engine's own rules so daemon.json never breaks dockerd.

    dockerd refuses to start on a mirror without an http(s) scheme, with a
    path, query or fragment, or with credentials in it.
    """
    text = url.strip()
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise SettingsError(f"mirror {url!r} must be an http:// or https:// URL")
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        raise SettingsError(f"mirror {url!r} must not have a path, query or fragment")
    if parsed.username or parsed.password:
        raise SettingsError("a mirror URL must not carry credentials (use auths)")
    return text.rstrip("/")


def mirror_registry(url: str) -> str:
    """The registry (host[:port]) a mirror URL points at, for blocking."""
    return canonical_registry(urllib.parse.urlsplit(url).netloc)


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _blocked_entry(name: str) -> str:
    return BLOCK_ALL if name.strip().lower() in ("*", "all") else canonical_registry(name)


def build(
    *,
    search: Iterable[str] = (),
    insecure: Iterable[str] = (),
    blocked: Iterable[str] = (),
    mirrors: Iterable[str] = (),
    auths: Iterable[tuple[str, str, str]] = (),
    source: str,
    strict: bool,
) -> RegistrySettings:
    """Normalise one source. `strict`: a bad entry raises; otherwise it is logged and dropped.

    Local files are strict (the operator is told at once, at start); what the
    coordinator pushes is lenient, so one bad entry never stops the others.
    """

    def each(kind: str, items: Iterable[str], fn: Any) -> list[str]:
        out = []
        for item in items:
            if not str(item).strip():
                continue
            try:
                out.append(fn(str(item)))
            except SettingsError as exc:
                if strict:
                    raise SettingsError(f"{source}: {kind}: {exc.message}") from None
                log.warning("%s: %s: ignoring entry: %s", source, kind, exc.message)
        return out

    creds = []
    for registry, username, password in auths:
        names = each("auths", [registry], canonical_registry)
        if not names:
            continue
        if not password:
            # The cluster API never returns passwords; an empty one here means
            # the coordinator did not send it, and an empty password never works.
            log.warning("%s: credentials for %s have no password; ignoring them", source, names[0])
            continue
        creds.append(Credential(names[0], str(username), str(password)))
    return RegistrySettings(
        search=_dedupe(each("search", search, canonical_registry)),
        insecure=_dedupe(each("insecure", insecure, canonical_insecure)),
        blocked=_dedupe(each("blocked", blocked, _blocked_entry)),
        mirrors=_dedupe(each("mirrors", mirrors, canonical_mirror)),
        auths=tuple(creds),
    )


def from_proto(spec: network_pb2.RegistriesSpec | None) -> RegistrySettings:
    """The coordinator's pushed settings (lenient: bad entries are logged and dropped)."""
    if spec is None:
        return RegistrySettings()
    return build(
        search=spec.search,
        insecure=spec.insecure,
        blocked=spec.blocked,
        mirrors=spec.mirrors,
        auths=[(a.registry, a.username, a.password) for a in spec.auths],
        source="coordinator registries",
        strict=False,
    )


def _string_list(data: Mapping[str, Any], key: str, source: str) -> list[str]:
    value = data.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise SettingsError(f"{source}: {key}: expected a list of strings")
    return [str(v) for v in value]


def from_mapping(data: Any, source: str) -> RegistrySettings:
    """Settings from a YAML-shaped mapping with RegistriesSpec's fields (strict)."""
    if data is None:
        return RegistrySettings()
    if not isinstance(data, Mapping):
        raise SettingsError(f"{source}: expected a mapping with keys {', '.join(_FIELDS)}")
    unknown = sorted(str(k) for k in data if k not in _FIELDS)
    if unknown:
        raise SettingsError(f"{source}: unknown key(s) {', '.join(unknown)} (known: {', '.join(_FIELDS)})")
    auths = []
    raw_auths = data.get("auths") or []
    if not isinstance(raw_auths, list):
        raise SettingsError(f"{source}: auths: expected a list of {{registry, username, password}}")
    for i, entry in enumerate(raw_auths):
        if not isinstance(entry, Mapping) or not entry.get("registry"):
            raise SettingsError(f"{source}: auths[{i}]: expected a mapping with registry, username, password")
        extra = sorted(str(k) for k in entry if k not in ("registry", "username", "password"))
        if extra:
            raise SettingsError(f"{source}: auths[{i}]: unknown key(s) {', '.join(extra)}")
        auths.append(
            (str(entry["registry"]), str(entry.get("username") or ""), str(entry.get("password") or ""))
        )
    return build(
        search=_string_list(data, "search", source),
        insecure=_string_list(data, "insecure", source),
        blocked=_string_list(data, "blocked", source),
        mirrors=_string_list(data, "mirrors", source),
        auths=auths,
        source=source,
        strict=True,
    )


def load_file(path: Path) -> RegistrySettings:
    """The node-local YAML file; a missing file is empty settings, a bad one raises SettingsError."""
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except FileNotFoundError:
        return RegistrySettings()
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror or exc}") from None
    import yaml  # only for a node that has the file: most never load it (about 1 MB)

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # str(exc) quotes the offending line, which may hold a password: say only where.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SettingsError(f"{path}: not valid YAML{where}") from None
    settings = from_mapping(data, str(path))
    if settings.auths and mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s holds registry passwords but is readable by others; chmod 600 it", path)
    return settings


def merge(*layers: RegistrySettings) -> RegistrySettings:
    """Concatenate the layers in order (pushed, local, legacy), then let `blocked` win."""
    blocked = _dedupe(b for layer in layers for b in layer.blocked)
    explicit = set(blocked) - {BLOCK_ALL}
    search = tuple(r for r in _dedupe(r for layer in layers for r in layer.search) if r not in explicit)
    insecure = tuple(r for r in _dedupe(r for layer in layers for r in layer.insecure) if r not in explicit)
    mirrors = tuple(
        m for m in _dedupe(m for layer in layers for m in layer.mirrors) if mirror_registry(m) not in explicit
    )
    auths: dict[str, Credential] = {}
    for layer in layers:
        for cred in layer.auths:
            auths.setdefault(cred.registry, cred)
    merged = RegistrySettings(search=search, insecure=insecure, blocked=blocked, mirrors=mirrors)
    return RegistrySettings(
        search=search,
        insecure=insecure,
        blocked=blocked,
        mirrors=mirrors,
        auths=tuple(c for c in auths.values() if not merged.is_blocked(c.registry)),
    )
