"""The `coordinator` CLI's parsing and printing without a server: lazy parsers, kinds, -f DIR, tables."""

from __future__ import annotations

import argparse
import inspect
import pathlib
import subprocess
import sys

import pytest

from atoll import kinds
from atoll.v1 import pod_pb2
from coordinator import config
from coordinator.cli import completion, parser, printers
from coordinator.cli.applycmd import manifest_paths
from coordinator.cli.common import UnknownKind, UsageError, kind_info, split_kind
from coordinator.client import config as clientconfig


def _commands(p: argparse.ArgumentParser) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))


def test_the_help_lines_listed_without_a_command_are_the_commands_own() -> None:
    full = _commands(parser.build_parser())
    helps = {action.dest: action.help for action in full._choices_actions}
    assert helps == {name: text for name, (text, _) in parser.COMMANDS.items()}


def test_defaults_named_in_help_are_the_clients() -> None:
    assert parser.DEFAULT_SERVER == config.DEFAULT_SERVER
    assert parser.CLIENT_CONFIG_ENV == clientconfig.ENV_VAR
    assert str(clientconfig.DEFAULT_PATH) == parser.CLIENT_CONFIG_PATH


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["get", "pods"], "get"),
        (["--server", "h:1", "delete", "pod", "x"], "delete"),
        (["-s", "h:1", "--config", "c", "apply", "-f", "d"], "apply"),
        (["--help"], None),
        ([], None),
    ],
)
def test_command_of(argv: list[str], command: str | None) -> None:
    assert parser.command_of(argv) == command


def test_a_lazy_parser_parses_its_command_like_the_full_one() -> None:
    argv = ["--server", "h:1", "delete", "pods,svc", "-l", "app=a", "--ignore-not-found", "-n", "x"]
    lazy = parser.build_parser("delete", full=False).parse_args(argv)
    assert lazy == parser.build_parser().parse_args(argv)


def test_get_help_lists_every_kind_with_its_short_names() -> None:
    text = parser.kinds_help()
    for info in kinds.KINDS:
        assert info.plural in text
    assert "pods                    po" in text and "replicationcontrollers  rc" in text


@pytest.mark.parametrize(
    ("word", "suggestion"), [("podz", "pods"), ("servces", "services"), ("nods", "nodes"), ("xyzzy", "")]
)
def test_did_you_mean(word: str, suggestion: str) -> None:
    assert parser.did_you_mean(word) == (f'; did you mean "{suggestion}"?' if suggestion else "")


def test_unknown_kind_is_kubectls_error_and_exit_code() -> None:
    with pytest.raises(UnknownKind, match=r'resource type "podz"; did you mean "pods"\?') as caught:
        kind_info("podz")
    assert caught.value.code == 1 and kind_info("SVC").plural == "services"
    assert split_kind("po/apache", None) == (kinds.by_name("Pod"), "apache")


def test_manifest_paths_sorted_and_recursive(tmp_path: pathlib.Path) -> None:
    for rel in ("b.yaml", "a.json", "c.yml", "notes.txt", "sub/z.yaml", "sub/deeper/y.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    top = [str(tmp_path / n) for n in ("a.json", "b.yaml", "c.yml")]
    assert manifest_paths([str(tmp_path)], recursive=False) == top
    assert manifest_paths([str(tmp_path)], recursive=True) == [
        *top,
        str(tmp_path / "sub/z.yaml"),
        str(tmp_path / "sub/deeper/y.json"),
    ]
    named = str(tmp_path / "notes.txt")  # a file named on the command line is read whatever its suffix
    assert manifest_paths([named, "-"], recursive=False) == [named, "-"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no manifests"):
        manifest_paths([str(tmp_path / "empty")], recursive=True)


def _pod(name: str, namespace: str, **labels: str) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name, p.metadata.namespace = name, namespace
    p.metadata.labels.update(labels)
    return p


def test_table_options_namespace_labels_and_kind_prefix() -> None:
    from atoll.v1 import namespace_pb2

    ns = namespace_pb2.Namespace()
    ns.metadata.name = "team-a"
    ns.metadata.labels["tier"] = "web"
    text = printers.render_table(
        namespace_pb2.Namespace,
        [ns],
        False,
        options=printers.TableOptions(labels=True, kind_prefix="namespace"),
    )
    header, row = text.splitlines()
    assert header.split() == ["NAME", "POD", "SECURITY", "AGE", "LABELS"]
    assert row.split()[0] == "namespace/team-a" and row.split()[-1] == "tier=web"

    text = printers.render_table(
        pod_pb2.Pod, [_pod("p", "team-a", app="x")], False, options=printers.TableOptions(namespace=True)
    )
    header, row = text.splitlines()
    assert header.split()[:2] == ["NAMESPACE", "NAME"] and row.split()[:2] == ["team-a", "p"]
    wide = printers.render_table(
        pod_pb2.Pod, [_pod("p", "team-a")], True, options=printers.TableOptions(namespace=True)
    )
    header, row = wide.splitlines()
    assert header.split()[:2] == ["NAMESPACE", "NAME"] and header.count("NAMESPACE") == 1
    assert row.split()[:2] == ["team-a", "p"]


def test_completion_scripts_complete_kinds() -> None:
    bash = completion.script("bash")
    assert "_atoll_coordinator_kinds" in bash and " po " in bash and "get" in bash
    assert "compadd" in completion.script("zsh")


@pytest.mark.allow_subprocess
def test_get_imports_neither_the_server_nor_the_cloud_sdk_nor_yaml() -> None:
    """What a `coordinator get --help` process has imported once its parser ran (no timing)."""
    probe = (
        "import sys\n"
        "from coordinator.cli.main import main\n"
        "try:\n    main(['get', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ['coordinator.server', 'coordinator.config', 'openstack', 'yaml', 'cryptography',"
        " 'coordinator.manifests', 'coordinator.cli.security']\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1].strip() == ""


@pytest.mark.allow_subprocess
def test_bash_completes_commands_flags_and_kinds(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "coordinator.bash"
    script.write_text(completion.script("bash"))

    def complete(*words: str) -> list[str]:
        line = " ".join(f'"{w}"' for w in words)
        probe = (
            f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
            'COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}; _shtab_coordinator; '
            'printf "%s\\n" "${COMPREPLY[@]}"'
        )
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
        return sorted(done.stdout.split())

    assert complete("coordinator", "de") == ["delete", "deprovision", "describe"]
    assert complete("coordinator", "get", "po") == ["po", "pod", "pods"]
    assert complete("coordinator", "delete", "pods", "--ig") == ["--ignore-not-found"]


def test_every_client_command_has_a_runner() -> None:
    from coordinator.cli import main

    local = {"serve", "store", "version", "completion"}  # run by main() itself, no coordinator called
    assert set(main.RUNNERS) == set(parser.COMMANDS) - local
    for command in main.RUNNERS:
        assert inspect.iscoroutinefunction(main.runner(command)), command
