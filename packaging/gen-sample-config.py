#!/usr/bin/env python3
"""Print the sample config file of the agent or the coordinator, every option commented out.

    gen-sample-config.py agent          # -> /etc/atoll/agent.yaml
    gen-sample-config.py coordinator    # -> /etc/atoll/coordinator.yaml

The RPMs ship what this prints, made at build time from the config
dataclasses (atoll/agentconfig.py, coordinator/config.py), so the samples list
exactly the options the daemons accept, with their real defaults and help
texts, and cannot drift from the code. Uncommenting an option line (deleting
its leading '#') gives a valid setting equal to the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
from typing import Any, NamedTuple

import yaml

# Run from a source tree (the RPM build, `make rpm`) without installing it.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

_NO_WRAP = 1_000_000


class Daemon(NamedTuple):
    title: str
    cls: type[Any]
    env_prefix: str
    path: pathlib.Path
    help_command: str
    unit: str


def daemons() -> dict[str, Daemon]:
    from atoll import agentconfig as agent_config
    from coordinator import config as coordinator_config

    return {
        "agent": Daemon(
            "Atoll agent",
            agent_config.AgentConfig,
            agent_config.ENV_PREFIX,
            agent_config.DEFAULT_CONFIG_FILE,
            "atoll-agent --help",
            "atoll-agent",
        ),
        "coordinator": Daemon(
            "Atoll coordinator",
            coordinator_config.ServeConfig,
            coordinator_config.ENV_PREFIX,
            coordinator_config.DEFAULT_CONFIG_FILE,
            "coordinator serve --help",
            "atoll-coordinator",
        ),
    }


def default_of(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def render_setting(name: str, value: Any) -> str:
    """`name: value` as one line of YAML that reads back as `value`."""
    if isinstance(value, (dict, list)):
        # Flow style ({k: v} / [a, b]) keeps a collection on the option's own
        # line, so that uncommenting one line is all it takes to set an option.
        flow: str = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=_NO_WRAP)
        text = f"{name}: {flow.rstrip()}"
    else:
        text = yaml.safe_dump({name: value}, default_flow_style=False, width=_NO_WRAP).rstrip("\n")
    if "\n" in text:
        raise ValueError(f"default of {name!r} does not fit on one line: {value!r}")
    return text


def render(daemon: Daemon) -> str:
    lines = [
        f"# {daemon.title} configuration: {daemon.path}",
        "#",
        "# Every option is listed with its default value, commented out: delete the",
        "# leading '#' of an option's line to change it. Later sources win:",
        f"#   defaults < this file < {daemon.env_prefix}<OPTION> environment variables < flags",
        f"# ({daemon.unit}.service reads environment variables from /etc/sysconfig/{daemon.unit}).",
        f"# See `{daemon.help_command}`.",
        f"# Generated from {daemon.cls.__module__}.{daemon.cls.__name__} by packaging/gen-sample-config.py.",
    ]
    for field in dataclasses.fields(daemon.cls):
        lines += [
            "",
            f"# {field.metadata.get('help', field.name)}",
            f"# (environment: {daemon.env_prefix}{field.name.upper()}, flag: --{field.name.replace('_', '-')})",
            "#" + render_setting(field.name, default_of(field)),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    known = daemons()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("daemon", choices=sorted(known))
    args = parser.parse_args(argv)
    sys.stdout.write(render(known[args.daemon]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
