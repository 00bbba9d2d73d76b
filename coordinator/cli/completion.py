"""`coordinator completion bash|zsh|tcsh`: a completion script generated from the parser (shtab).

The script is static, like kubectl's: completing a word runs no Python, so it costs nothing.
Load it with ``source <(coordinator completion bash)`` (zsh: ``coordinator completion zsh >
"${fpath[1]}/_coordinator"``).
"""

from __future__ import annotations

import argparse

from atoll import kinds
from coordinator.cli import parser as cli_parser

# Completion of a `get`/`describe`/`delete` kind: every CLI name of every kind.
_KINDS_FUNCTION = "_atoll_coordinator_kinds"


def _kind_words() -> list[str]:
    words = {name for info in kinds.KINDS for name in info.names}
    return sorted(words | set(cli_parser.COORDINATORS))


def _preamble(shell: str) -> str:
    words = " ".join(_kind_words())
    if shell == "bash":
        return f'{_KINDS_FUNCTION}() {{\n  compgen -W "{words}" -- "$1"\n}}\n'
    if shell == "zsh":
        return f"{_KINDS_FUNCTION}() {{\n  compadd -- {words}\n}}\n"
    return ""


def script(shell: str) -> str:
    import shtab  # only here: the completion script is generated on request

    parser = cli_parser.build_parser()
    complete = {"bash": _KINDS_FUNCTION, "zsh": _KINDS_FUNCTION}
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("get", "describe", "delete", "scale"):
        for arg in commands.choices[name]._actions:
            if arg.dest == "kind":
                arg.complete = complete
    return str(shtab.complete(parser, shell=shell, preamble=_preamble(shell)))


def main(args: argparse.Namespace) -> int:
    print(script(args.shell), end="")
    return 0
