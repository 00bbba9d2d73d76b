"""The `coordinator` command line: every command's flags, built without importing what runs it.

Start-up time is the user's first impression of a CLI (`coordinator get` is typed hundreds of
times a day), so this module imports only argparse and `atoll.kinds`. A command's own parser is
built only when that command runs (or for `--help`, `completion`): the others are listed by name
and help text from COMMANDS, so `coordinator get pods` never imports the OpenStack SDK, the
server's config or the PKI code that `provision`, `serve` and `config` need.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Sequence
from typing import Any

from atoll import kinds

# What `--server` falls back to; coordinator.config.DEFAULT_SERVER (kept equal by a unit test:
# importing that module costs the server's whole configuration).
DEFAULT_SERVER = "127.0.0.1:6443"
CLIENT_CONFIG_ENV = "ATOLL_CONFIG"
CLIENT_CONFIG_PATH = "~/.atoll/config"

# Every command: its help line and the group whose parsers define it (see _GROUPS).
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("run the coordinator (API, scheduler, controllers)", "serve"),
    "store": ("operate on a coordinator's store directly (the coordinator stopped)", "store"),
    "get": ("list or show objects", "core"),
    "describe": ("show one object in detail", "core"),
    "create": ("create objects from manifest files", "core"),
    "apply": ("create objects from manifests, or update the ones that exist", "core"),
    "delete": ("delete objects by name, label selector or manifest", "core"),
    "scale": ("set a replication controller's replica count", "core"),
    "cordon": ("mark a node unschedulable", "core"),
    "uncordon": ("mark a node schedulable again", "core"),
    "drain": ("cordon a node and delete its pods (controllers recreate them elsewhere)", "core"),
    "logs": ("print a container's logs", "core"),
    "token": ("join tokens: create, list, revoke", "security"),
    "config": ("client configs for users", "security"),
    "enroll": ("enroll bare-metal hosts through Ironic and deploy them with the agent", "enroll"),
    "unenroll": (
        "undeploy and delete a bare-metal host, revoke its join token, remove its node",
        "enroll",
    ),
    "provision": (
        "boot Atoll hosts as OpenStack servers (idempotent; --ensure N scales the set)",
        "provision",
    ),
    "deprovision": (
        "delete provisioned servers, their floating IPs, join tokens and Machine records",
        "provision",
    ),
    "completion": ("print a shell completion script (bash, zsh, tcsh)", "core"),
    "version": ("print the client's and the server's versions", "core"),
}

# Global options that take a value: the command is the first word that is not one of them.
_VALUED = {"--server", "-s", "--config"}

COORDINATORS = ("coordinators", "coordinator", "coord")


def command_of(argv: Sequence[str]) -> str | None:
    """The command word of `argv` (None when there is none, e.g. `coordinator --help`)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in _VALUED:
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def kinds_help() -> str:
    """The kinds `get` knows, with their short names, as `get --help` lists them."""
    lines = ["resource types (short names):"]
    for info in sorted(kinds.KINDS, key=lambda k: k.plural):
        short = ", ".join(a for a in info.aliases if a != info.plural)
        lines.append(f"  {info.plural:<24}{short}")
    lines.append(f"  {COORDINATORS[0]:<24}{', '.join(COORDINATORS[1:])}")
    lines += [
        "",
        "several kinds at once: get pods,svc; one object: get pod NAME or get pod/NAME",
    ]
    return "\n".join(lines)


def did_you_mean(word: str) -> str:
    """``; did you mean "pods"?`` for a mistyped kind, or nothing when no name is close."""
    names = [name for info in kinds.KINDS for name in info.names] + list(COORDINATORS)
    close = difflib.get_close_matches(word.lower(), names, n=1, cutoff=0.6)
    if not close:
        return ""
    plural = COORDINATORS[0] if close[0] in COORDINATORS else kinds.by_cli_name(close[0]).plural
    return f'; did you mean "{plural}"?'


def _namespaced(p: argparse.ArgumentParser) -> None:
    p.add_argument("--namespace", "-n", default="", help="namespace (default: default)")
    p.add_argument("--all-namespaces", "-A", action="store_true", help="list across every namespace")


def _filenames(p: argparse.ArgumentParser, verb: str, required: bool) -> None:
    p.add_argument(
        "--filename",
        "-f",
        action="append",
        required=required,
        help=f"JSON or YAML manifest, or a directory of them (.json, .yaml, .yml; '-' reads stdin) to {verb}",
    )
    p.add_argument(
        "--recursive", "-R", action="store_true", help="also the manifests in directories below -f DIR"
    )


def _add_core(sub: Any) -> None:
    def parser(name: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=COMMANDS[name][0], **kw)  # type: ignore[no-any-return]

    get = parser("get", epilog=kinds_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    get.add_argument("kind", help="one kind or several, comma-separated (pods,svc); see below")
    get.add_argument("name", nargs="?", help="one object's name")
    get.add_argument("--output", "-o", choices=["json", "yaml", "wide", "name"], help="output format")
    get.add_argument("--selector", "-l", default="", help="label selector, e.g. name=apache")
    get.add_argument("--watch", "-w", action="store_true", help="after listing, watch for changes")
    get.add_argument("--no-headers", action="store_true", help="omit the table header")
    get.add_argument("--show-labels", action="store_true", help="add a LABELS column")
    get.add_argument(
        "--chunk-size", type=int, default=500, help="list this many objects per call (0: as many as fit)"
    )
    _namespaced(get)
    describe = parser("describe")
    describe.add_argument("kind")
    describe.add_argument("name")
    _namespaced(describe)
    create = parser("create")
    _filenames(create, "create", True)
    create.add_argument("--dry-run", action="store_true", help="validate on the server, store nothing")
    create.add_argument("--output", "-o", choices=["json", "yaml", "name"], help="print the created objects")
    _namespaced(create)
    apply = parser("apply")
    _filenames(apply, "apply", True)
    apply.add_argument(
        "--skip-conflicts",
        action="store_true",
        help="an object that differs from its file where an update cannot change it (a pod's "
        "containers, say) is reported, left as it is and not an error",
    )
    _namespaced(apply)
    delete = parser("delete")
    delete.add_argument("kind", nargs="?", help="one kind or several, comma-separated")
    delete.add_argument("names", nargs="*")
    _filenames(delete, "delete what they name", False)
    delete.add_argument("--selector", "-l", default="", help="delete the objects these labels select")
    delete.add_argument("--all", action="store_true", help="delete every object of the kind")
    delete.add_argument(
        "--ignore-not-found", action="store_true", help="an object that does not exist is no error"
    )
    delete.add_argument(
        "--cascade",
        default="true",
        choices=["true", "false", "orphan"],
        help="delete a controller's pods too (default), or leave them running (false/orphan)",
    )
    _namespaced(delete)
    scale = parser("scale")
    scale.add_argument("kind", help="rc (replicationcontroller)")
    scale.add_argument("name")
    scale.add_argument("--replicas", type=int, required=True)
    _namespaced(scale)
    for verb in ("cordon", "uncordon", "drain"):
        p = parser(verb)
        p.add_argument("node")
        if verb == "drain":
            p.add_argument("--force", action="store_true", help="also delete pods that no controller manages")
    logs = parser("logs")
    logs.add_argument("pod")
    logs.add_argument(
        "--container", "-c", default="", help="container name (needed when the pod has several)"
    )
    logs.add_argument("--follow", "-f", action="store_true", help="stream new output")
    logs.add_argument("--tail", type=int, default=0, help="only the last N lines")
    logs.add_argument("--previous", "-p", action="store_true", help="the previous, dead instance")
    logs.add_argument("--timestamps", action="store_true")
    _namespaced(logs)
    completion = parser("completion")
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    parser("version").add_argument(
        "--client", action="store_true", help="only the client's version: ask no coordinator"
    )


def _add_serve(sub: Any) -> None:
    from coordinator import config

    config.add_serve_flags(sub.add_parser("serve", help=COMMANDS["serve"][0]))


def _add_store(sub: Any) -> None:
    from coordinator.cli import storecmd

    storecmd.add_parser(sub)


def _add_security(sub: Any) -> None:
    from coordinator.cli import security

    security.add_parsers(sub)


def _add_enroll(sub: Any) -> None:
    from coordinator.cli import enroll

    enroll.add_parsers(sub)


def _add_provision(sub: Any) -> None:
    from coordinator.cli import provision

    provision.add_parsers(sub)


_GROUPS: dict[str, Callable[[Any], None]] = {
    "serve": _add_serve,
    "store": _add_store,
    "core": _add_core,
    "security": _add_security,
    "enroll": _add_enroll,
    "provision": _add_provision,
}


def build_parser(command: str | None = None, *, full: bool = True) -> argparse.ArgumentParser:
    """Every command's parser (`full`), or only `command`'s with the others listed by help line."""
    parser = argparse.ArgumentParser(
        prog="coordinator", description="Atoll's control plane and operator CLI."
    )
    parser.add_argument(
        "--server",
        "-s",
        help=f"coordinator address (default: $ATOLL_SERVER, else the client config's, else {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--config",
        dest="client_config",
        help=f"client config with the server's CA and your credentials (default: ${CLIENT_CONFIG_ENV}, "
        f"else {CLIENT_CONFIG_PATH} if it exists)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = COMMANDS[command][1] if command in COMMANDS else None
    built: set[str] = set()
    for name, (text, group) in COMMANDS.items():
        if full or group == chosen:
            if group not in built:
                built.add(group)
                _GROUPS[group](sub)
        else:  # listed for `coordinator --help` and argparse's choices; never parsed
            sub.add_parser(name, help=text, add_help=False)
    return parser
