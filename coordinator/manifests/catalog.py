"""The kinds manifests can hold. To add one, write its module with a CODEC and list it here."""

from __future__ import annotations

from google.protobuf.message import Message

from coordinator.manifests import node, pod
from coordinator.manifests.registry import Codec

CODECS: tuple[Codec, ...] = (pod.CODEC, node.CODEC)

BY_KIND: dict[str, Codec] = {name: codec for codec in CODECS for name in codec.kinds}
BY_MESSAGE: dict[type[Message], Codec] = {codec.message: codec for codec in CODECS}
KIND_NAMES: tuple[str, ...] = tuple(sorted(codec.kind for codec in CODECS))
