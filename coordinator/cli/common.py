"""What the object commands share: naming kinds and objects, namespaces, the CLI's own errors."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from google.protobuf.message import Message

from atoll import errors, kinds
from atoll.kinds import KindInfo
from coordinator.cli.parser import COORDINATORS, did_you_mean


class UsageError(Exception):
    """A command line that cannot be run as given; exits 2, like argparse's own refusals."""

    code = 2


class UnknownKind(UsageError):
    code = 1  # kubectl's exit code for a resource type the server does not have


class ObjectError(Exception):
    """An error about one object of a manifest file (`create -f`, `apply -f`): reported naming both."""

    def __init__(self, path: str, obj: Message, cause: errors.AtollError) -> None:
        self.where = f"{path}: {subject(obj)}"
        self.cause = cause
        super().__init__(f"{self.where}: {cause}")


def kind_info(word: str) -> KindInfo:
    """A kind by any of its CLI names; a mistyped one answered kubectl's way, with a suggestion."""
    try:
        return kinds.by_cli_name(word)
    except errors.InvalidArgument:
        raise UnknownKind(f'the server doesn\'t have a resource type "{word}"{did_you_mean(word)}') from None


def split_kinds(words: str) -> list[str]:
    """`pods,svc` -> ["pods", "svc"] (kubectl's several kinds at once)."""
    parts = [w for w in words.split(",") if w]
    if not parts:
        raise UsageError("a resource type is required, e.g. pods")
    return parts


def split_kind(kind: str, name: str | None) -> tuple[KindInfo, str | None]:
    if "/" in kind and name is None:
        kind, name = kind.split("/", 1)
    return kind_info(kind), name


def is_coordinators(word: str) -> bool:
    return word.lower() in COORDINATORS


def namespace_of(args: argparse.Namespace, info: KindInfo) -> str:
    if not info.namespaced or getattr(args, "all_namespaces", False):
        return ""
    return args.namespace or "default"


def name_of(obj: Message) -> str:
    return f"{kinds.of(obj).name.lower()}/{obj.metadata.name}"  # type: ignore[attr-defined]


def subject(obj: Message) -> str:
    """An object as errors name it: ``pod "apache"`` (as ManifestError.report does)."""
    return f'{kinds.of(obj).name.lower()} "{obj.metadata.name}"'  # type: ignore[attr-defined]


@contextlib.contextmanager
def about(path: str, obj: Message) -> Iterator[None]:
    """Errors of the calls made for `obj` name the file and the object (ObjectError)."""
    try:
        yield
    except errors.AtollError as exc:
        raise ObjectError(path, obj, exc) from exc
