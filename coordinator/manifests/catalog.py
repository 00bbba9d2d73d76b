"""The kinds manifests can hold. To add one, write its module with a CODEC and list it here."""

from __future__ import annotations

from google.protobuf.message import Message

from coordinator.manifests import (
    endpoints,
    event,
    machine,
    namespace,
    network,
    node,
    pod,
    registries,
    replication_controller,
    resourcequota,
    service,
    sriovnetwork,
    subnet,
    token,
)
from coordinator.manifests.registry import Codec

# Order matters only for documents without a kind: the first codec whose sniff matches reads it.
CODECS: tuple[Codec, ...] = (
    pod.CODEC,
    node.CODEC,
    replication_controller.CODEC,
    service.CODEC,
    endpoints.CODEC,
    event.CODEC,
    network.CODEC,
    subnet.CODEC,
    registries.CODEC,
    machine.CODEC,
    token.CODEC,
    sriovnetwork.CODEC,
    resourcequota.CODEC,
    namespace.CODEC,
)

BY_KIND: dict[str, Codec] = {name: codec for codec in CODECS for name in codec.kinds}
BY_MESSAGE: dict[type[Message], Codec] = {codec.message: codec for codec in CODECS}
KIND_NAMES: tuple[str, ...] = tuple(sorted(codec.kind for codec in CODECS))
