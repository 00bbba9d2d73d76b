"""The shared parts: Problems, names, labels, ports and addresses."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

from atoll import errors, labels
from atoll.v1 import meta_pb2

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
MAX_NAME = 253
MAX_ANNOTATIONS_BYTES = 256 * 1024
DEFAULT_NAMESPACE = "default"


class Problems:
    """Collects (field, message) pairs."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.items.append((field, message))

    def raise_first(self) -> None:
        if self.items:
            field, message = self.items[0]
            raise errors.InvalidArgument(message, field=field)


def check_name(p: Problems, field: str, value: str, *, subdomain: bool = True) -> None:
    if not value:
        p.add(field, "is required")
        return
    limit = MAX_NAME if subdomain else 63
    pattern = DNS1123_SUBDOMAIN if subdomain else DNS1123_LABEL
    if len(value) > limit:
        p.add(field, f"must be no more than {limit} characters, got {len(value)}")
    elif not pattern.fullmatch(value):
        what = "a DNS-1123 subdomain" if subdomain else "a DNS-1123 label"
        p.add(
            field,
            f"{value!r} must be {what}: lower-case letters, digits and '-'"
            + (" or '.'" if subdomain else "")
            + ", starting and ending with a letter or digit",
        )


def check_labels(p: Problems, field: str, values: Mapping[str, str]) -> None:
    # In key order: a protobuf map iterates in insertion order, which its bytes do not keep, so
    # the first problem named depends only on what the object says (agent.pods.syncer.SpecVerdicts).
    for key, value in sorted(values.items()):
        if not labels.valid_key(key):
            p.add(f"{field}[{key}]", f"invalid label key {key!r}")
        if not labels.valid_value(value):
            p.add(
                f"{field}[{key}]",
                f"invalid label value {value!r}: at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends",
            )


def validate_meta(
    p: Problems, meta: meta_pb2.ObjectMeta, *, namespaced: bool, label_name: bool = False
) -> None:
    """Name, namespace, labels, annotations. ``label_name``: the name must be a DNS-1123 label
    (63 characters, no dots), for kinds whose name becomes a DNS name (services)."""
    check_name(p, "metadata.name", meta.name, subdomain=not label_name)
    if namespaced:
        check_name(p, "metadata.namespace", meta.namespace, subdomain=False)
    elif meta.namespace:
        p.add("metadata.namespace", "must be empty: this kind is not namespaced")
    check_labels(p, "metadata.labels", meta.labels)
    for key in meta.annotations:
        if not labels.valid_key(key):
            p.add(f"metadata.annotations[{key}]", f"invalid annotation key {key!r}")
    if sum(len(k) + len(v) for k, v in meta.annotations.items()) > MAX_ANNOTATIONS_BYTES:
        p.add("metadata.annotations", f"may not exceed {MAX_ANNOTATIONS_BYTES} bytes in total")


def check_port(p: Problems, field: str, value: int, *, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        p.add(field, f"must be between {low} and 65535, got {value}")


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def require(problems: Iterable[Problems]) -> None:
    for p in problems:
        p.raise_first()
