"""Pods in the 2014-2015 v1beta1/v1beta2 shape that operators still have on disk.

    {"apiVersion": "v1beta1", "kind": "Pod", "id": "apache", "labels": {...},
     "desiredState": {"manifest": {"version": "v1beta1", "id": "apache",
                                   "containers": [...], "volumes": [...],
                                   "restartPolicy": {"always": {}}}}}

Mapped the way Kubernetes' own v1beta1 conversion did: a container's
``entrypoint`` is the v1 ``command`` and its ``command`` the v1 ``args``
(both override the image, ENTRYPOINT and CMD respectively); ``cpu`` (millicores)
and ``memory`` (bytes) are limits; ``hostDir`` is a hostPath; a volume
without a source is an emptyDir; ``desiredState.host`` is the node binding.

Errors name fields in this shape (``desiredState.manifest.containers[0].image``),
including those atoll.validation reports in v1 terms: see `v1_to_v1beta1`.
"""

from __future__ import annotations

import shlex

from atoll.v1 import pod_pb2
from coordinator.manifests import meta, pod_decode, words
from coordinator.manifests.errors import describe
from coordinator.manifests.reader import Fields, Schema, Value
from coordinator.manifests.registry import rules, translator

_VOLUMES_HINT = "Atoll volumes are emptyDir or hostDir"

POD = Schema.of(
    known=meta.LEGACY_META_FIELDS | {"desiredState", "nodeSelector"},
    unsupported=meta.LEGACY_META_UNSUPPORTED | {"serviceAccount": ""},
    ignored=meta.LEGACY_META_IGNORED | {"currentState"},
)
DESIRED_STATE = Schema.of(
    known=("manifest", "host"),
    # PodState doubles as the status type; these parts are written by the system.
    ignored=("status", "Condition", "message", "hostIP", "podIP", "info"),
)
MANIFEST = Schema.of(
    known=("version", "id", "volumes", "containers", "restartPolicy", "terminationGracePeriodSeconds"),
    unsupported=("activeDeadlineSeconds", "dnsPolicy", "hostNetwork", "imagePullSecrets"),
    ignored=("uuid",),
)
CONTAINER = Schema.of(
    known=(
        "name",
        "image",
        "entrypoint",
        "command",
        "workingDir",
        "ports",
        "env",
        "cpu",
        "memory",
        "volumeMounts",
        "imagePullPolicy",
    ),
    unsupported={
        "resources": "in v1beta1 use cpu and memory, or write the pod in v1",
        "livenessProbe": "",
        "readinessProbe": "",
        "lifecycle": "",
        "terminationMessagePath": "",
        "privileged": "",
        "capabilities": "",
        "securityContext": "",
    },
)
ENV_VAR = Schema.of(("name", "key", "value"), unsupported={"valueFrom": "write the value itself"})
VOLUME_MOUNT = Schema.of(("name", "readOnly", "mountPath", "path"), ignored=("mountType",))
VOLUME = Schema.of(("name", "source"))
SOURCE = Schema.of(
    ("emptyDir", "hostDir"),
    unsupported={
        name: _VOLUMES_HINT
        for name in (
            "persistentDisk",
            "awsElasticBlockStore",
            "gitRepo",
            "secret",
            "nfs",
            "iscsi",
            "glusterfs",
            "persistentVolumeClaim",
            "rbd",
        )
    },
)
EMPTY_DIR = Schema.of(("medium",))
HOST_DIR = Schema.of(("path",))
RESTART_POLICY = Schema.of(("always", "onFailure", "never"))
_RESTART_WORDS = {
    "always": pod_pb2.RESTART_POLICY_ALWAYS,
    "onFailure": pod_pb2.RESTART_POLICY_ON_FAILURE,
    "never": pod_pb2.RESTART_POLICY_NEVER,
}
_PULL_POLICY = {**words.LEGACY_PULL_POLICY, **words.PULL_POLICY}
MANIFEST_VERSIONS = ("v1beta1", "v1beta2")


def decode(root: Value) -> pod_pb2.Pod:
    f = root.fields(POD)
    pod = pod_pb2.Pod(metadata=meta.decode_legacy(f), spec=pod_pb2.PodSpec())
    if v := f.get("nodeSelector"):
        pod.spec.node_selector.update(v.string_map())
    manifest_id = decode_state(f.child_fields("desiredState", DESIRED_STATE), pod.spec)
    if manifest_id is not None:
        name = manifest_id.string()
        if not pod.metadata.name:
            pod.metadata.name = name
        elif name != pod.metadata.name:
            manifest_id.fail(f"must match the pod's id {describe(pod.metadata.name)}, got {describe(name)}")
    return pod


def decode_state(state: Fields, spec: pod_pb2.PodSpec) -> Value | None:
    """A v1beta1 PodState (``desiredState``: ``host`` and ``manifest``) into ``spec``.

    Returns the manifest's ``id`` for the caller to judge: a pod's must match
    the pod's, a controller template's is ignored (its pods get generated
    names, and 2014 files put anything there, "redisController" included).
    """
    if v := state.get("host"):
        spec.node_name = v.string()
    manifest = state.get("manifest")
    if manifest is None:
        return None
    f = manifest.fields(MANIFEST)
    if v := f.get("version"):
        version = v.string()
        if version not in MANIFEST_VERSIONS:
            v.fail(f'expected "v1beta1", got {describe(version)}')
    for item in v.elements() if (v := f.get("containers")) else []:
        spec.containers.append(_container(item))
    for item in v.elements() if (v := f.get("volumes")) else []:
        spec.volumes.append(_volume(item))
    if v := f.get("restartPolicy"):
        chosen = v.fields(RESTART_POLICY).present(_RESTART_WORDS)
        if len(chosen) > 1:
            v.fail(f"expected one restart policy, got {' and '.join(chosen)}")
        if chosen:
            spec.restart_policy = _RESTART_WORDS[chosen[0]]
    if v := f.get("terminationGracePeriodSeconds"):
        spec.termination_grace_period_seconds = v.integer()
    return f.get("id")


def _container(value: Value) -> pod_pb2.Container:
    f = value.fields(CONTAINER)
    c = pod_pb2.Container()
    if v := f.get("name"):
        c.name = v.string()
    if v := f.get("image"):
        c.image = v.string()
    if v := f.get("entrypoint"):
        c.command.extend(_argv(v))
    if v := f.get("command"):
        c.args.extend(_argv(v))
    if v := f.get("workingDir"):
        c.working_dir = v.string()
    for item in v.elements() if (v := f.get("ports")) else []:
        c.ports.append(pod_decode.decode_port(item))
    for item in v.elements() if (v := f.get("env")) else []:
        ef = item.fields(ENV_VAR)
        env = c.env.add()
        if x := ef.get("name") or ef.get("key"):
            env.name = x.string()
        if x := ef.get("value"):
            env.value = x.string()
    if v := f.get("cpu"):
        c.resources.limits.cpu_millis = _whole(v, "thousandths of a core")
    if v := f.get("memory"):
        c.resources.limits.memory_bytes = _whole(v, "bytes")
    for item in v.elements() if (v := f.get("volumeMounts")) else []:
        mf = item.fields(VOLUME_MOUNT)
        mount = c.volume_mounts.add()
        if x := mf.get("name"):
            mount.name = x.string()
        if x := mf.get("mountPath") or mf.get("path"):
            mount.mount_path = x.string()
        if x := mf.get("readOnly"):
            mount.read_only = x.boolean()
    if v := f.get("imagePullPolicy"):
        c.image_pull_policy = v.word(_PULL_POLICY)
    return c


def _argv(value: Value) -> list[str]:
    """A list of words, or one string split the way a shell splits words (no shell runs)."""
    if isinstance(value.raw, str):
        try:
            return shlex.split(value.raw)
        except ValueError as e:
            value.fail(f"cannot split the command into words: {e}")
    return value.strings()


def _whole(value: Value, unit: str) -> int:
    if isinstance(value.raw, str):
        got = describe(value.raw)
        value.fail(f"expected an integer number of {unit} (v1beta1 has no quantity strings), got {got}")
    return value.integer()


def _volume(value: Value) -> pod_pb2.Volume:
    f = value.fields(VOLUME)
    vol = pod_pb2.Volume()
    if v := f.get("name"):
        vol.name = v.string()
    source = f.child_fields("source", SOURCE)
    chosen = source.present(("emptyDir", "hostDir"))
    if len(chosen) > 1:
        source.value.fail("expected one volume source, got emptyDir and hostDir")
    if chosen == ["hostDir"]:
        vol.host_path.SetInParent()
        if v := source.child_fields("hostDir", HOST_DIR).get("path"):
            vol.host_path.path = v.string()
    else:
        # v1beta1: "If not specified, the Volume is implied to be an EmptyDir."
        vol.empty_dir.SetInParent()
        if v := source.child_fields("emptyDir", EMPTY_DIR).get("medium"):
            vol.empty_dir.medium = v.string()
    return vol


_C = r"spec\.containers\[(\d+)\]"
_V = r"spec\.volumes\[(\d+)\]"
_M = "desiredState.manifest"

v1_to_v1beta1 = translator(
    rules(
        *meta.LEGACY_META_PATHS,
        (r"spec\.nodeSelector", "nodeSelector"),
        (r"spec\.nodeName", "desiredState.host"),
        (rf"{_C}\.command", rf"{_M}.containers[\1].entrypoint"),
        (rf"{_C}\.args", rf"{_M}.containers[\1].command"),
        (rf"{_C}\.resources\.limits\.(cpu|memory)", rf"{_M}.containers[\1].\2"),
        (rf"{_V}\.hostPath", rf"{_M}.volumes[\1].source.hostDir"),
        (rf"{_V}\.emptyDir", rf"{_M}.volumes[\1].source.emptyDir"),
        ("spec", _M),
    )
)
"""A v1 field path (as atoll.validation reports it) -> the same field in a v1beta1 document."""
