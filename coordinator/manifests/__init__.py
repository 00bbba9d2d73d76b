"""Manifests: Kubernetes-style JSON/YAML files <-> atoll.v1 API objects.

``coordinator create -f FILE`` reads with `load_file`; ``coordinator get -o
json|yaml`` prints with `to_dict` + `dumps`. Reading accepts the Kubernetes
v1 shape and the 2014-2015 v1beta1 shape (see pod_v1beta1,
replication_controller, service), flannel's net-conf.json for the Network
(see network; ``serve --network-config`` reads it with
`network_from_flannel_json`), and refuses anything it does not understand
with a one-line `ManifestError`.

Layers: loader (text -> documents) -> decode (documents -> messages, via the
per-kind codecs listed in catalog) ; encode (messages -> dicts -> text).
"""

from __future__ import annotations

import os

from google.protobuf.message import Message

from coordinator.manifests import loader
from coordinator.manifests.decode import decode_data, decode_documents
from coordinator.manifests.encode import dumps, to_dict, to_list_dict
from coordinator.manifests.errors import ManifestError
from coordinator.manifests.loader import MAX_BYTES, MAX_DEPTH, MAX_DOCUMENTS, Format
from coordinator.manifests.netconf import network_from_flannel_json

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_DOCUMENTS",
    "Format",
    "ManifestError",
    "dumps",
    "load_data",
    "load_file",
    "load_text",
    "network_from_flannel_json",
    "to_dict",
    "to_list_dict",
]


def load_text(text: str, source: str = "<text>", *, fmt: Format | None = None) -> list[Message]:
    """Every object in a manifest's text, decoded and validated.

    ``source`` names the text in errors; it also picks the format by its
    extension (.json, .yaml, .yml) unless ``fmt`` is given, and otherwise the
    content does ('{' or '[' first means JSON).
    """
    return decode_documents(loader.parse(text, source, fmt=fmt))


def load_file(path: str | os.PathLike[str]) -> list[Message]:
    """Every object in a manifest file (``-`` reads standard input)."""
    text, source = loader.read_file(path)
    return load_text(text, source)


def load_data(data: object, source: str = "<data>", *, validate: bool = True) -> list[Message]:
    """Objects from already-parsed data (a dict such as `to_dict` returns).

    ``validate=False`` skips atoll.validation, for callers that validate later
    (the server does anyway) or that only convert.
    """
    return decode_data(data, source, validate=validate)
