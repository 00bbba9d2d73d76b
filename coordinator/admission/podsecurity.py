"""Pod security levels, after Kubernetes' Pod Security Standards.

A namespace's level is its label ``pod-security.atoll.io/enforce``:

  privileged  nothing is checked (admins only may set it);
  baseline    the default (no Namespace object, or no label): no hostPath volume
              outside the admin's allow-list (a path prefix, possibly read-only),
              no host port outside the admin's list (80, 443, 1024-65535 by default);
  restricted  baseline, and no hostPath volume and no host port at all, and every
              container must run as non-root (securityContext.runAsNonRoot, pod
              or container level; runAsUser, when set, not 0).

Kubernetes' baseline also forbids privileged containers, added capabilities,
host namespaces, sysctls, AppArmor/SELinux/seccomp overrides and /proc mounts:
the pod API has none of those, so there is nothing to check for them.

`check_pod_spec` is a pure function from a pod spec, a level and the admin's
settings to the list of problems, each naming the field; `refuse` turns them
into the error the API returns.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from atoll import errors, validation
from atoll.v1 import namespace_pb2, pod_pb2

LABEL = "pod-security.atoll.io/enforce"
PRIVILEGED = "privileged"
BASELINE = "baseline"
RESTRICTED = "restricted"
LEVELS = (PRIVILEGED, BASELINE, RESTRICTED)
DEFAULT_LEVEL = BASELINE
DEFAULT_HOST_PORTS = ("80", "443", "1024-65535")


@dataclass(frozen=True)
class HostPathRule:
    """Host paths at or below `prefix` (whole path components) may be mounted; read-only if `read_only`."""

    prefix: str
    read_only: bool

    def covers(self, path: str) -> bool:
        return self.prefix in ("/", path) or path.startswith(self.prefix + "/")

    @property
    def text(self) -> str:
        return f"{self.prefix}:ro" if self.read_only else self.prefix


@dataclass(frozen=True)
class PodSecurityConfig:
    allowed_host_paths: tuple[HostPathRule, ...] = ()
    allowed_host_ports: tuple[tuple[int, int], ...] = ((80, 80), (443, 443), (1024, 65535))

    @classmethod
    def from_config(cls, host_paths: Sequence[str], host_ports: Sequence[str]) -> PodSecurityConfig:
        return cls(parse_host_paths(host_paths), parse_host_ports(host_ports))

    def port_allowed(self, port: int) -> bool:
        return any(low <= port <= high for low, high in self.allowed_host_ports)

    @property
    def ports_text(self) -> str:
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.allowed_host_ports) or "none"


def parse_host_paths(entries: Sequence[str], option: str = "allowed_host_paths") -> tuple[HostPathRule, ...]:
    """``/srv/data:ro`` (read-only) or ``/srv/cache`` (``:rw`` also accepted), absolute paths."""
    rules = []
    for i, entry in enumerate(entries):
        path, sep, mode = entry.rpartition(":")
        if not sep or mode not in ("ro", "rw"):
            path, mode = entry, "rw"
        if not path.startswith("/"):
            raise errors.InvalidArgument(
                f"expected an absolute path with an optional :ro or :rw, got {entry!r}",
                field=f"{option}[{i}]",
            )
        rules.append(HostPathRule(posixpath.normpath(path).replace("//", "/"), mode == "ro"))
    return tuple(rules)


def parse_host_ports(
    entries: Sequence[str], option: str = "allowed_host_ports"
) -> tuple[tuple[int, int], ...]:
    """``80``, ``1024-65535``: ports and inclusive ranges of 1-65535."""
    ranges = []
    for i, entry in enumerate(entries):
        low, sep, high = entry.partition("-")
        try:
            lo, hi = int(low), int(high if sep else low)
        except ValueError:
            lo = hi = 0
        if not 1 <= lo <= hi <= 65535:
            raise errors.InvalidArgument(
                f"expected a port or a range such as 1024-65535 (1-65535), got {entry!r}",
                field=f"{option}[{i}]",
            )
        ranges.append((lo, hi))
    return tuple(ranges)


def level_of(labels: Mapping[str, str]) -> str:
    """A namespace's level from its labels (validated when the namespace is written)."""
    return labels.get(LABEL, DEFAULT_LEVEL) or DEFAULT_LEVEL


def validate_namespace(ns: namespace_pb2.Namespace) -> validation.Problems:
    """A Namespace object: a DNS-1123 label for a name, valid labels, a known level if labelled."""
    p = validation.Problems()
    validation.validate_meta(p, ns.metadata, namespaced=False, label_name=True)
    value = ns.metadata.labels.get(LABEL)
    if value is not None and value not in LEVELS:
        p.add(f"metadata.labels[{LABEL}]", f"{value!r} is not a pod security level ({', '.join(LEVELS)})")
    validation.check_object(p, ns)
    return p


@dataclass(frozen=True)
class Problem:
    field: str
    what: str  # e.g. '"/" is not allowed', completed by the level and namespace


def check_pod_spec(
    spec: pod_pb2.PodSpec, level: str, config: PodSecurityConfig, prefix: str = "spec"
) -> list[Problem]:
    """Every field of `spec` that the level forbids, in field order."""
    if level == PRIVILEGED:
        return []
    problems: list[Problem] = []
    read_only_volumes: dict[str, str] = {}  # volume name -> the host path that must be mounted read-only
    for i, volume in enumerate(spec.volumes):
        if volume.WhichOneof("source") != "host_path":
            continue
        path = volume.host_path.path
        field = f"{prefix}.volumes[{i}].hostPath.path"
        rule = None if level == RESTRICTED else _rule_for(path, config)
        if rule is None:
            problems.append(Problem(field, f"{json.dumps(path)} is not allowed"))
        elif rule.read_only:
            read_only_volumes[volume.name] = path
    pod_sc = spec.security_context
    if level == RESTRICTED and pod_sc.HasField("run_as_user") and pod_sc.run_as_user == 0:
        problems.append(Problem(f"{prefix}.securityContext.runAsUser", "0 (root) is not allowed"))
    for c, container in enumerate(spec.containers):
        cf = f"{prefix}.containers[{c}]"
        for m, mount in enumerate(container.volume_mounts):
            if mount.name in read_only_volumes and not mount.read_only:
                problems.append(
                    Problem(
                        f"{cf}.volumeMounts[{m}].readOnly",
                        f"hostPath {json.dumps(read_only_volumes[mount.name])} must be mounted read-only",
                    )
                )
        for p, port in enumerate(container.ports):
            if port.host_port and (level == RESTRICTED or not config.port_allowed(port.host_port)):
                allowed = "" if level == RESTRICTED else f" (allowed: {config.ports_text})"
                problems.append(
                    Problem(f"{cf}.ports[{p}].hostPort", f"{port.host_port} is not allowed{allowed}")
                )
        if level == RESTRICTED:
            problems.extend(_non_root(container, pod_sc, cf))
    return problems


def _rule_for(path: str, config: PodSecurityConfig) -> HostPathRule | None:
    """The most specific allow-list entry covering `path` (normalised: no `..` escapes)."""
    if not path.startswith("/"):
        return None
    normal = posixpath.normpath(path).replace("//", "/")
    covering = [r for r in config.allowed_host_paths if r.covers(normal)]
    return max(covering, key=lambda r: len(r.prefix), default=None)


def _non_root(container: pod_pb2.Container, pod_sc: pod_pb2.PodSecurityContext, field: str) -> list[Problem]:
    sc = container.security_context
    problems = []
    if sc.HasField("run_as_user") and sc.run_as_user == 0:
        problems.append(Problem(f"{field}.securityContext.runAsUser", "0 (root) is not allowed"))
    if sc.HasField("run_as_non_root"):
        if not sc.run_as_non_root:
            problems.append(Problem(f"{field}.securityContext.runAsNonRoot", "false is not allowed"))
    elif not (pod_sc.HasField("run_as_non_root") and pod_sc.run_as_non_root):
        problems.append(
            Problem(
                f"{field}.securityContext.runAsNonRoot",
                "must be true (here or in the pod's securityContext)",
            )
        )
    return problems


def refuse(problems: Sequence[Problem], level: str, namespace: str) -> None:
    """Raise PermissionDenied for the first problem, naming its field, the level and the namespace."""
    if not problems:
        return
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise errors.PermissionDenied(
        f'{first.what} at pod security level "{level}" in namespace "{namespace}"{more}', field=first.field
    )
