"""Enrollment requests from flags or from an inventory file (YAML or JSON), as `EnrollSpec`s.

An inventory is a list of hosts, or a mapping with ``defaults`` (merged into
every host) and ``hosts``::

    defaults:
      driver: ipmi
      bmcUser: admin
      bmcPasswordFile: bmc.pass        # relative to the inventory file
      image: http://images.example/atomic.qcow2
      imageChecksum: sha256:9f86d0...
      labels: {rack: r1}
    hosts:
      - name: bm-01
        bmc: 10.0.0.5
        macs: ["52:54:00:12:34:56"]
        properties: {cpus: 32, memory_mb: 262144}
        sriovPFs: ["ens1f0:8"]

Keys are camelCase like manifests (snake_case works too). Passwords are only
ever read from files: an inventory is the kind of file that ends up in git,
so an inline ``bmcPassword`` is refused with a pointer to ``bmcPasswordFile``.
Command-line flags given beside ``-f`` act as the outermost defaults.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from atoll import errors
from coordinator.cli.provisioning.cloudinit import SriovPF
from coordinator.cli.provisioning.enroll import EnrollSpec
from coordinator.cli.provisioning.ironic import Secret
from coordinator.manifests import loader

KEYS = (
    "name",
    "driver",
    "bmc",
    "bmcUser",
    "bmcPasswordFile",
    "macs",
    "image",
    "imageChecksum",
    "rootGB",
    "properties",
    "interfaces",
    "sriovPFs",
    "labels",
    "addHosts",
)
_CAMEL = {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): k for k in KEYS} | {
    "root_gb": "rootGB",
    "sriov_pfs": "sriovPFs",
}


def read_secret_file(path: str | pathlib.Path, what: str = "--bmc-password-file") -> Secret:
    """The first line of a password file (trailing newline dropped); the path is named in errors, never the content."""
    try:
        text = pathlib.Path(path).read_text()
    except OSError as exc:
        raise errors.InvalidArgument(f"{what} {path}: {exc.strerror}") from None
    value = text.splitlines()[0] if text.strip() else ""
    if not value:
        raise errors.InvalidArgument(f"{what} {path}: file is empty")
    return Secret(value)


def parse_pairs(items: Sequence[str] | Mapping[str, Any] | None, what: str) -> dict[str, str]:
    """``k=v`` strings (repeated flags or comma lists) or a mapping."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return {str(k): str(v) for k, v in items.items()}
    out: dict[str, str] = {}
    for item in items:
        for part in str(item).split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise errors.InvalidArgument(f"{what}: expected key=value, got {part!r}")
            out[key.strip()] = value.strip()
    return out


def property_values(pairs: Mapping[str, str]) -> dict[str, object]:
    """Ironic properties: numbers as numbers (cpus=32 -> 32), the rest as text (cpu_arch=x86_64)."""
    return {k: int(v) if re.fullmatch(r"-?\d+", v) else v for k, v in pairs.items()}


def parse_add_host(text: str) -> tuple[str, str]:
    """``NAME:IP`` (docker's --add-host), or ``NAME[ NAME...]=IP``; returns (ip, names) for /etc/hosts."""
    if "=" in text:
        names, _, address = text.partition("=")
    else:
        names, _, address = text.partition(":")
    if not names.strip() or not address.strip():
        raise errors.InvalidArgument(f"--add-host {text!r}: expected NAME:IP")
    return address.strip(), " ".join(names.replace(",", " ").split())


def _normalise(entry: Mapping[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if str(key) in ("bmcPassword", "bmc_password", "password"):
            raise errors.InvalidArgument(
                f"{source}: put the BMC password in a file and name it with bmcPasswordFile"
            )
        canonical = key if key in KEYS else _CAMEL.get(str(key))
        if canonical is None:
            raise errors.InvalidArgument(f"{source}: unknown key {key!r} (known: {', '.join(KEYS)})")
        out[canonical] = value
    return out


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        return [str(v) for v in value]
    raise errors.InvalidArgument(f"{what}: expected a list")


def spec_of(entry: Mapping[str, Any], source: str, base_dir: pathlib.Path | None = None) -> EnrollSpec:
    """One host's EnrollSpec from canonical keys (see KEYS)."""
    name = str(entry.get("name") or "")
    where = f"{source}: {name or '<no name>'}"
    password = Secret("")
    if path := entry.get("bmcPasswordFile"):
        file = pathlib.Path(str(path))
        if base_dir is not None and not file.is_absolute():
            file = base_dir / file
        password = read_secret_file(file, f"{where}: bmcPasswordFile")
    try:
        root_gb = int(entry.get("rootGB") or 10)
    except (TypeError, ValueError):
        raise errors.InvalidArgument(f"{where}: rootGB must be a number") from None
    interfaces = entry.get("interfaces") or {}
    spec = EnrollSpec(
        name=name,
        driver=str(entry.get("driver") or ""),
        bmc=str(entry.get("bmc") or ""),
        bmc_user=str(entry.get("bmcUser") or ""),
        bmc_password=password,
        macs=tuple(m.strip().lower() for m in _strings(entry.get("macs"), f"{where}: macs")),
        image=str(entry.get("image") or ""),
        image_checksum=str(entry.get("imageChecksum") or ""),
        root_gb=root_gb,
        properties=property_values(parse_pairs(entry.get("properties"), f"{where}: properties")),
        interfaces=parse_pairs(
            interfaces if isinstance(interfaces, Mapping) else _strings(interfaces, "interfaces"),
            f"{where}: interfaces",
        ),
        sriov_pfs=tuple(SriovPF.parse(p) for p in _strings(entry.get("sriovPFs"), f"{where}: sriovPFs")),
        labels=parse_pairs(entry.get("labels"), f"{where}: labels"),
        hosts_entries=tuple(parse_add_host(h) for h in _strings(entry.get("addHosts"), f"{where}: addHosts")),
    )
    try:
        spec.validate()
    except errors.InvalidArgument as exc:
        raise errors.InvalidArgument(f"{source}: {exc}") from None
    return spec


def load(path: str, flag_defaults: Mapping[str, Any]) -> list[EnrollSpec]:
    """Every host of an inventory file; flags, then the file's ``defaults``, then each host's own keys."""
    text, source = loader.read_file(path)
    documents = loader.parse(text, source)
    data: Any = documents[0].data if len(documents) == 1 else [d.data for d in documents]
    defaults: dict[str, Any] = dict(flag_defaults)
    if isinstance(data, Mapping):
        unknown = set(data) - {"defaults", "hosts"}
        if unknown:
            raise errors.InvalidArgument(
                f"{source}: expected the keys defaults and hosts, got {sorted(unknown)}"
            )
        defaults.update(_normalise(data.get("defaults") or {}, f"{source}: defaults"))
        hosts = data.get("hosts")
    else:
        hosts = data
    if not isinstance(hosts, list) or not hosts:
        raise errors.InvalidArgument(f"{source}: expected a non-empty list of hosts")
    base_dir = pathlib.Path(path).resolve().parent if path != "-" else None
    specs = []
    for i, entry in enumerate(hosts):
        if not isinstance(entry, Mapping):
            raise errors.InvalidArgument(f"{source}: hosts[{i}]: expected a mapping")
        merged = {**defaults, **_normalise(entry, f"{source}: hosts[{i}]")}
        specs.append(spec_of(merged, source, base_dir))
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise errors.InvalidArgument(f"{source}: hosts named more than once: {', '.join(duplicates)}")
    return specs
