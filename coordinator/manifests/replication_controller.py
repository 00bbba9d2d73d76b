"""The ReplicationController kind: v1 and v1beta3 (``spec.template``), and 2014's v1beta1.

    {"kind": "ReplicationController", "apiVersion": "v1beta1", "id": "apache-controller",
     "labels": {"name": "apache"},
     "desiredState": {"replicas": 3, "replicaSelector": {"name": "apache"},
                      "podTemplate": {"labels": {"name": "apache"},
                                      "desiredState": {"manifest": {...a v1beta1 pod manifest...}}}}}

The template's pod spec is read by the pod decoders (pod_decode, pod_v1beta1),
so a template accepts and refuses exactly what a pod does, and errors in it
point into the document's own shape
(``desiredState.podTemplate.desiredState.manifest.containers[0].image``).

A v1beta1 template manifest's ``id`` is ignored: its pods get generated names,
and 2014 files put anything there ("redisController").

``replicas`` left out means 1 in every shape. That is v1's rule; v1beta1 and
v1beta3 read a missing number as 0, which nobody wrote on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from atoll import validation
from atoll.v1 import workloads_pb2
from coordinator.manifests import meta, pod_decode, pod_encode, pod_v1beta1
from coordinator.manifests.reader import INT32, Schema, Value
from coordinator.manifests.registry import Codec, Shape, Sniff, rules, translator

RC = Schema.of(known=("apiVersion", "kind", "metadata", "spec"), ignored=("status",))
RC_SPEC = Schema.of(
    known=("replicas", "selector", "template"),
    unsupported={"minReadySeconds": "", "templateRef": "write the template itself"},
)
TEMPLATE = Schema.of(known=("metadata", "spec"))

RC_V1BETA1 = Schema.of(
    known=meta.LEGACY_META_FIELDS | {"desiredState"},
    unsupported=meta.LEGACY_META_UNSUPPORTED,
    ignored=meta.LEGACY_META_IGNORED | {"currentState"},
)
STATE_V1BETA1 = Schema.of(known=("replicas", "replicaSelector", "podTemplate"))
POD_TEMPLATE_V1BETA1 = Schema.of(
    known=("desiredState", "labels", "annotations", "nodeSelector"), unsupported=("serviceAccount",)
)

_SET_BASED = ("matchLabels", "matchExpressions")


def decode_v1(root: Value) -> workloads_pb2.ReplicationController:
    return _decode(root, pod_decode.POD_SPEC)


def decode_v1beta3(root: Value) -> workloads_pb2.ReplicationController:
    return _decode(root, pod_decode.POD_SPEC_V1BETA3)


def _decode(root: Value, pod_spec: Schema) -> workloads_pb2.ReplicationController:
    f = root.fields(RC)
    rc = workloads_pb2.ReplicationController(
        metadata=meta.decode(f.get("metadata")), spec=workloads_pb2.ReplicationControllerSpec()
    )
    spec = f.child_fields("spec", RC_SPEC)
    if v := spec.get("replicas"):
        rc.spec.replicas = v.integer(INT32)
    if v := spec.get("selector"):
        rc.spec.selector.update(_selector(v))
    if v := spec.get("template"):
        template = rc.spec.template
        template.SetInParent()
        tf = v.fields(TEMPLATE)
        # Presence is kept as written, so that encoding gives back the same document.
        if x := tf.get("metadata"):
            template.metadata.CopyFrom(meta.decode(x))
            template.metadata.SetInParent()
        if x := tf.get("spec"):
            template.spec.CopyFrom(pod_decode.decode_pod_spec(x, schema=pod_spec))
            template.spec.SetInParent()
    return rc


def _selector(value: Value) -> dict[str, str]:
    if isinstance(value.raw, dict) and (found := [k for k in _SET_BASED if k in value.raw]):
        value.child(value.raw[found[0]], found[0]).fail(
            "a replication controller's selector is a plain map of labels (name: apache); "
            f"{found[0]} is for ReplicaSets and Deployments"
        )
    return value.string_map()


def decode_v1beta1(root: Value) -> workloads_pb2.ReplicationController:
    f = root.fields(RC_V1BETA1)
    rc = workloads_pb2.ReplicationController(
        metadata=meta.decode_legacy(f), spec=workloads_pb2.ReplicationControllerSpec()
    )
    state = f.child_fields("desiredState", STATE_V1BETA1)
    if v := state.get("replicas"):
        rc.spec.replicas = v.integer(INT32)
    if v := state.get("replicaSelector"):
        rc.spec.selector.update(v.string_map())
    if v := state.get("podTemplate"):
        template = rc.spec.template
        tf = v.fields(POD_TEMPLATE_V1BETA1)
        template.metadata.SetInParent()
        template.spec.SetInParent()
        if x := tf.get("labels"):
            template.metadata.labels.update(x.string_map())
        if x := tf.get("annotations"):
            template.metadata.annotations.update(x.string_map())
        if x := tf.get("nodeSelector"):
            template.spec.node_selector.update(x.string_map())
        pod_v1beta1.decode_state(tf.child_fields("desiredState", pod_v1beta1.DESIRED_STATE), template.spec)
    return rc


_T = "desiredState.podTemplate"
_V1BETA1_RULES = translator(
    rules(
        *meta.LEGACY_META_PATHS,
        (r"spec\.replicas", "desiredState.replicas"),
        (r"spec\.selector", "desiredState.replicaSelector"),
        (r"spec\.template\.metadata\.(labels|annotations)", rf"{_T}.\1"),
        (r"spec\.template\.metadata", _T),
        (r"spec\.template", _T),
        (r"spec", "desiredState"),
    )
)


def v1_to_v1beta1(path: str) -> str:
    """A v1 path -> the v1beta1 document's; the template's pod spec maps as a v1beta1 pod's does."""
    if path == "spec.template.spec" or path.startswith(("spec.template.spec.", "spec.template.spec[")):
        return f"{_T}.{pod_v1beta1.v1_to_v1beta1(path.removeprefix('spec.template.'))}"
    return _V1BETA1_RULES(path)


v1_to_v1beta3 = translator(rules((r"spec\.template\.spec\.nodeName", "spec.template.spec.host")))


def encode(rc: workloads_pb2.ReplicationController) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if rc.spec.HasField("replicas"):
        spec["replicas"] = rc.spec.replicas
    if rc.spec.selector:
        spec["selector"] = dict(sorted(rc.spec.selector.items()))
    if rc.spec.HasField("template"):
        template: dict[str, Any] = {}
        t = rc.spec.template
        if t.HasField("metadata"):
            template["metadata"] = {k: v for k, v in meta.encode(t.metadata).items() if k != "name" or v}
        if t.HasField("spec"):
            template["spec"] = pod_encode.encode_pod_spec(t.spec)
        spec["template"] = template
    out: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ReplicationController",
        "metadata": meta.encode(rc.metadata),
        "spec": spec,
    }
    status = rc.status
    if status.replicas or status.ready_replicas or status.observed_generation:
        out["status"] = {"replicas": status.replicas}
        if status.ready_replicas:
            out["status"]["readyReplicas"] = status.ready_replicas
        if status.observed_generation:
            out["status"]["observedGeneration"] = status.observed_generation
    return out


def _validate(rc: workloads_pb2.ReplicationController) -> validation.Problems:
    defaulted = workloads_pb2.ReplicationController()
    defaulted.CopyFrom(rc)
    validation.default_replication_controller(defaulted)
    return validation.validate_replication_controller(defaulted)


def _is_2014_controller(raw: Mapping[str, object]) -> bool:
    state = raw.get("desiredState")
    return isinstance(state, dict) and ("podTemplate" in state or "replicaSelector" in state)


_V1BETA1 = Shape(decode_v1beta1, v1_to_v1beta1)

CODEC = Codec(
    kind="ReplicationController",
    message=workloads_pb2.ReplicationController,
    shapes={
        "v1": Shape(decode_v1),
        "v1beta3": Shape(decode_v1beta3, v1_to_v1beta3),
        "v1beta2": _V1BETA1,
        "v1beta1": _V1BETA1,
    },
    encode=encode,
    validate=_validate,
    sniffs=(Sniff(_is_2014_controller, _V1BETA1),),
)
