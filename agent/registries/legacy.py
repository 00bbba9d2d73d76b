"""The RHEL/Atomic `/etc/sysconfig/docker` registry keys, for hosts migrating to Atoll.

RHEL's docker read three shell variables there and passed them to dockerd
as flags (projectatomic's --add-registry, --insecure-registry, --block-registry):

    ADD_REGISTRY='--add-registry registry.access.redhat.com --add-registry kubernetes.lab.com:5000'
    INSECURE_REGISTRY='--insecure-registry kubernetes.lab.com:5000'
    BLOCK_REGISTRY='--block-registry docker.io'

Operators have years of these files, so the agent honours them as the last
settings layer (agent.registries.settings). The file is a shell fragment:
single or double quotes, `#` comments, `export`, `--flag=value` and several
flags per variable all occur; later assignments win, like in the shell. Shell
expansions (`$VAR`) are not evaluated; an entry that still holds one is skipped
with a warning. Nothing else in the file is read.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

from agent.registries.settings import RegistrySettings, SettingsError, build

log = logging.getLogger(__name__)

#: sysconfig variable -> (flag it holds, settings field)
KEYS = {
    "ADD_REGISTRY": ("--add-registry", "search"),
    "INSECURE_REGISTRY": ("--insecure-registry", "insecure"),
    "BLOCK_REGISTRY": ("--block-registry", "blocked"),
}


def assignments(text: str) -> dict[str, str]:
    """The shell variable assignments of a sysconfig file (`NAME=value`, quotes removed).

    Raises SettingsError when the quoting does not balance.
    """
    lexer = shlex.shlex(text.replace("\\\n", ""), posix=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    values: dict[str, str] = {}
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise SettingsError(f"cannot parse: {exc}") from None
    for token in tokens:
        name, sep, value = token.partition("=")
        if sep and name.isidentifier():
            values[name] = value
    return values


def flag_values(value: str, flag: str, *, source: str) -> list[str]:
    """Every argument of `flag` in a flags string: `--f a --f=b` -> [a, b]; other flags are skipped."""
    try:
        words = shlex.split(value, comments=False)
    except ValueError as exc:
        raise SettingsError(f"{source}: cannot parse {value!r}: {exc}") from None
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == flag and i + 1 < len(words):
            out.append(words[i + 1])
            i += 2
            continue
        if word.startswith(flag + "="):
            out.append(word[len(flag) + 1 :])
        elif word.startswith("-"):
            log.warning("%s: ignoring %s (only %s is understood here)", source, word, flag)
        i += 1
    kept = []
    for item in out:
        if "$" in item:
            log.warning("%s: ignoring %r: shell expansions are not evaluated", source, item)
        else:
            kept.append(item)
    return kept


def parse(text: str, source: str = "sysconfig") -> RegistrySettings:
    """Registry settings from the text of a sysconfig file."""
    try:
        values = assignments(text)
    except SettingsError as exc:
        raise SettingsError(f"{source}: {exc.message}") from None
    lists: dict[str, list[str]] = {"search": [], "insecure": [], "blocked": []}
    for key, (flag, field_name) in KEYS.items():
        if key in values:
            lists[field_name] = flag_values(values[key], flag, source=f"{source}: {key}")
    return build(
        search=lists["search"],
        insecure=lists["insecure"],
        blocked=lists["blocked"],
        source=source,
        strict=True,
    )


def load_file(path: Path) -> RegistrySettings:
    """The sysconfig file's registry keys; a missing file is empty settings."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return RegistrySettings()
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse(text, str(path))
