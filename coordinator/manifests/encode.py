"""atoll.v1 messages -> Kubernetes v1-shaped dicts and text, for ``get -o json|yaml``.

The output is what ``kubectl get -o json|yaml`` would print for the same
object, so it can be edited and fed back to ``create -f``: decoding it gives
back the same metadata and spec (status is read-only and dropped on input).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import yaml
from google.protobuf.message import Message

from coordinator.manifests import catalog


def to_dict(message: Message) -> dict[str, Any]:
    """One object in the Kubernetes v1 shape (apiVersion, kind, metadata, spec, status)."""
    codec = catalog.BY_MESSAGE.get(type(message))
    if codec is None:
        raise TypeError(f"no manifest encoding for {type(message).__name__}")
    return codec.encode(message)


def to_list_dict(messages: Iterable[Message]) -> dict[str, Any]:
    """Several objects as a ``kind: List``, the way kubectl prints more than one."""
    return {"apiVersion": "v1", "kind": "List", "items": [to_dict(m) for m in messages]}


def dumps(data: Mapping[str, Any], fmt: Literal["json", "yaml"]) -> str:
    """Text for a terminal or a file: JSON indented by 4 like kubectl, or block-style YAML."""
    if fmt == "json":
        return json.dumps(data, indent=4, ensure_ascii=False) + "\n"
    return yaml.safe_dump(
        dict(data), sort_keys=False, default_flow_style=False, allow_unicode=True, width=1 << 16
    )
