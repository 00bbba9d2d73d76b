"""The Pod kind: which apiVersions are read, and how.

v1 and v1beta3 share the v1 decoder (pod_decode), v1beta1 and v1beta2 the
legacy one (pod_v1beta1); output is always v1 (pod_encode).
"""

from __future__ import annotations

from collections.abc import Mapping

from atoll import validation
from atoll.v1 import pod_pb2
from coordinator.manifests import pod_decode, pod_encode, pod_v1beta1
from coordinator.manifests.registry import Codec, Shape, Sniff, rules, translator


def _validate(pod: pod_pb2.Pod) -> validation.Problems:
    defaulted = pod_pb2.Pod()
    defaulted.CopyFrom(pod)
    validation.default_pod(defaulted)
    return validation.validate_pod(defaulted)


_V1BETA1 = Shape(pod_v1beta1.decode, pod_v1beta1.v1_to_v1beta1)


def _is_2014_pod(raw: Mapping[str, object]) -> bool:
    """Kubernetes' mid-2014 examples (api/examples/pod.json) had no kind: a manifest says Pod."""
    state = raw.get("desiredState")
    return isinstance(state, dict) and "manifest" in state


CODEC = Codec(
    kind="Pod",
    message=pod_pb2.Pod,
    shapes={
        "v1": Shape(pod_decode.decode_v1),
        "v1beta3": Shape(pod_decode.decode_v1beta3, translator(rules((r"spec\.nodeName", "spec.host")))),
        "v1beta2": _V1BETA1,
        "v1beta1": _V1BETA1,
    },
    encode=pod_encode.encode,
    validate=_validate,
    sniffs=(Sniff(_is_2014_pod, _V1BETA1),),
)
