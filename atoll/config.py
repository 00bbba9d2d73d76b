"""Typed, layered configuration for both daemons.

A daemon's options are one dataclass; each field's metadata carries its help
text and, optionally, a parser. Values come from four layers, later ones win:

    built-in defaults  <  config file (YAML)  <  environment  <  command-line flags

The environment variable of field `docker_host` of the agent is
`ATOLL_AGENT_DOCKER_HOST`; its flag is `--docker-host`; its config-file key is
`docker_host` (`docker-host` works too). Everything is validated once, at
start, and a bad value stops the daemon with a one-line message naming the
option and where it came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from atoll import errors

C = TypeVar("C")


def option(default: Any, help: str, *, parse: Callable[[Any], Any] | None = None, flag: bool = True) -> Any:
    """Declare a config field: default, help text and an optional parser for strings."""
    meta = {"help": help, "parse": parse, "flag": flag}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "y": 365 * 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdy])")


def parse_duration(value: Any) -> float:
    """Seconds from `90`, `90s`, `10m`, `1h30m`, `7d` or `10y` (a year is 365 days)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"expected a duration such as 90s, 10m, 1h30m, 7d or 10y, got {value!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def parse_list(value: Any) -> list[str]:
    """`a,b,c` (flags, environment) or a YAML list (config file)."""
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def parse_labels(value: Any) -> dict[str, str]:
    """`k=v,k2=v2` (flags, environment) or a mapping (config file)."""
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    result = {}
    for part in str(value).split(","):
        if not part.strip():
            continue
        key, sep, val = part.partition("=")
        if not sep:
            raise ValueError(f"expected key=value, got {part!r}")
        result[key.strip()] = val.strip()
    return result


def _coerce(field: dataclasses.Field[Any], raw: Any) -> Any:
    parse = field.metadata.get("parse")
    if parse is not None:
        return parse(raw)
    kind = field.type if isinstance(field.type, type) else str(field.type)
    if kind in (bool, "bool"):
        return parse_bool(raw)
    if kind in (int, "int"):
        return int(raw)
    if kind in (float, "float"):
        return float(raw)
    if kind in (str, "str"):
        if isinstance(raw, (dict, list)):
            raise ValueError(f"expected a string, got {type(raw).__name__}")
        return str(raw)
    return raw


def add_flags(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    for field in dataclasses.fields(cls):
        if not field.metadata.get("flag", True):
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        help_text = f"{field.metadata.get('help', '')} (default: {default!r})"
        if field.type in (bool, "bool"):
            parser.add_argument(
                flag, dest=field.name, default=None, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            parser.add_argument(
                flag, dest=field.name, default=None, metavar=field.name.upper(), help=help_text
            )


def read_file(path: pathlib.Path) -> dict[str, Any]:
    import yaml  # only where a config file is given: a daemon without one never loads it (about 1 MB)

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise errors.InvalidArgument(f"cannot read config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise errors.InvalidArgument(f"config file {path} must hold a mapping of options")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def load(
    cls: type[C],
    *,
    env_prefix: str,
    args: argparse.Namespace | None = None,
    file_values: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    file_name: str = "config file",
) -> C:
    """Build `cls` from the layers; raises InvalidArgument naming the bad option and its source."""
    environ = os.environ if environ is None else environ
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, raw in (file_values or {}).items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise errors.InvalidArgument(f"{file_name}: unknown option {key!r} (known: {known})")
        values[key] = _layer(fields[key], raw, f"{file_name}: {key}")
    for name, field in fields.items():
        env = f"{env_prefix}{name.upper()}"
        if env in environ:
            values[name] = _layer(field, environ[env], env)
        flag_value = getattr(args, name, None) if args is not None else None
        if flag_value is not None:
            values[name] = _layer(field, flag_value, "--" + name.replace("_", "-"))
    config = cls(**values)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def _layer(field: dataclasses.Field[Any], raw: Any, source: str) -> Any:
    try:
        return _coerce(field, raw)
    except (TypeError, ValueError) as exc:
        raise errors.InvalidArgument(f"{source}: {exc}") from None


def split_host_port(value: str, what: str, default_port: int | None = None) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        if default_port is None:
            raise errors.InvalidArgument(f"{what}: expected HOST:PORT, got {value!r}")
        host, port = value, str(default_port)
    host = host.strip("[]")
    if not host:
        raise errors.InvalidArgument(f"{what}: expected HOST:PORT, got {value!r}")
    try:
        number = int(port)
    except ValueError:
        raise errors.InvalidArgument(f"{what}: port must be a number, got {port!r}") from None
    if not 0 <= number <= 65535:
        raise errors.InvalidArgument(f"{what}: port must be between 0 and 65535, got {number}")
    return host, number


def resolve_file(
    flag: str | None, env_var: str, default: pathlib.Path, environ: Mapping[str, str] | None = None
) -> pathlib.Path | None:
    """The config file to read: --config, then $env_var, then `default` if it exists."""
    environ = os.environ if environ is None else environ
    if flag:
        return pathlib.Path(flag)
    if environ.get(env_var):
        return pathlib.Path(environ[env_var])
    return default if default.exists() else None


def dump(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def names(cls: type[Any]) -> Sequence[str]:
    return [f.name for f in dataclasses.fields(cls)]
