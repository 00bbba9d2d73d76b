"""The overlay network that ``coordinator serve --network-config`` reads.

Above the decoder (``decode -> catalog -> network``), so that ``network`` itself
stays a plain codec with no way back up.
"""

from __future__ import annotations

from collections.abc import Mapping

from atoll import validation
from atoll.v1 import network_pb2
from coordinator.manifests import loader
from coordinator.manifests.decode import decode_documents
from coordinator.manifests.errors import ManifestError


def network_from_flannel_json(
    data: str | Mapping[str, object], source: str = "<network config>"
) -> network_pb2.NetworkSpec:
    """The overlay's spec from flannel's net-conf.json (text, or the parsed dict), validated and
    defaulted as the coordinator stores it.

    A ``kind: Network`` manifest is accepted too. Problems raise ManifestError
    naming ``source`` and the file's own keys: ``net-conf.json: Backend.VNI: must be ...``.
    """
    docs = loader.parse(data, source) if isinstance(data, str) else [loader.Document(source, dict(data))]
    objects = decode_documents(docs)
    if len(objects) != 1 or not isinstance(objects[0], network_pb2.Network):
        raise ManifestError(
            source, "", "expected one overlay network: flannel's net-conf.json or a kind: Network manifest"
        )
    spec = network_pb2.NetworkSpec()
    spec.CopyFrom(objects[0].spec)
    validation.default_network(spec)
    return spec
