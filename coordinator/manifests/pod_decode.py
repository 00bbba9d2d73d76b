"""Pods in the Kubernetes v1 shape (and v1beta3, its near twin) -> atoll.v1 protos.

The pod spec helpers are public because a ReplicationController's template
is ``{metadata, spec}`` of exactly this shape, and because the v1beta1 decoder
shares the pieces that did not change (ports, env).

Fields Kubernetes has and Atoll does not implement are refused by name rather
than dropped: a pod that silently lost its ``securityContext`` or its probes
would run, but not as its author meant.
"""

from __future__ import annotations

import re

from atoll.v1 import meta_pb2, pod_pb2
from coordinator.manifests import meta, words
from coordinator.manifests.errors import Key, describe
from coordinator.manifests.reader import INT32, Fields, Schema, Value

_NOT_YET = ""
_VOLUMES_HINT = "Atoll volumes are emptyDir or hostPath"

POD = Schema.of(known=("apiVersion", "kind", "metadata", "spec"), ignored=("status",))

POD_SPEC = Schema.of(
    known=(
        "containers",
        "volumes",
        "restartPolicy",
        "nodeName",
        "nodeSelector",
        "terminationGracePeriodSeconds",
        "hostname",
        "networks",
        "securityContext",
    ),
    unsupported={
        "initContainers": _NOT_YET,
        "ephemeralContainers": _NOT_YET,
        "hostNetwork": "publish container ports with hostPort instead",
        "hostPID": _NOT_YET,
        "hostIPC": _NOT_YET,
        "hostUsers": _NOT_YET,
        "dnsPolicy": _NOT_YET,
        "dnsConfig": _NOT_YET,
        "hostAliases": _NOT_YET,
        "subdomain": _NOT_YET,
        "setHostnameAsFQDN": _NOT_YET,
        "serviceAccountName": _NOT_YET,
        "serviceAccount": _NOT_YET,
        "automountServiceAccountToken": _NOT_YET,
        "imagePullSecrets": _NOT_YET,
        "affinity": "use nodeSelector",
        "tolerations": _NOT_YET,
        "topologySpreadConstraints": _NOT_YET,
        "schedulerName": _NOT_YET,
        "priority": _NOT_YET,
        "priorityClassName": _NOT_YET,
        "preemptionPolicy": _NOT_YET,
        "activeDeadlineSeconds": _NOT_YET,
        "runtimeClassName": _NOT_YET,
        "enableServiceLinks": _NOT_YET,
        "shareProcessNamespace": _NOT_YET,
        "readinessGates": _NOT_YET,
        "overhead": _NOT_YET,
        "os": _NOT_YET,
        "schedulingGates": _NOT_YET,
        "resourceClaims": _NOT_YET,
        "resources": "set resources per container",
    },
)

# v1beta3 named the node binding `host`; it is otherwise the v1 shape.
POD_SPEC_V1BETA3 = Schema(POD_SPEC.known | {"host"}, POD_SPEC.unsupported, POD_SPEC.ignored)

CONTAINER = Schema.of(
    known=(
        "name",
        "image",
        "command",
        "args",
        "env",
        "ports",
        "resources",
        "volumeMounts",
        "workingDir",
        "imagePullPolicy",
        "securityContext",
    ),
    unsupported={
        name: _NOT_YET
        for name in (
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
            "lifecycle",
            "envFrom",
            "stdin",
            "stdinOnce",
            "tty",
            "terminationMessagePath",
            "terminationMessagePolicy",
            "volumeDevices",
            "resizePolicy",
            "restartPolicy",
            "capabilities",
            "privileged",
        )
    },
)

UID = (0, (1 << 31) - 1)  # Kubernetes' range for uids and gids
POD_SECURITY_CONTEXT = Schema.of(
    known=("runAsUser", "runAsGroup", "runAsNonRoot"),
    unsupported=(
        "fsGroup",
        "fsGroupChangePolicy",
        "supplementalGroups",
        "supplementalGroupsPolicy",
        "seLinuxOptions",
        "seccompProfile",
        "appArmorProfile",
        "sysctls",
        "windowsOptions",
        "seLinuxChangePolicy",
    ),
)
SECURITY_CONTEXT = Schema.of(
    known=("runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem"),
    unsupported=(
        "privileged",
        "capabilities",
        "allowPrivilegeEscalation",
        "procMount",
        "seLinuxOptions",
        "seccompProfile",
        "appArmorProfile",
        "windowsOptions",
    ),
)
ENV_VAR = Schema.of(("name", "value"), unsupported={"valueFrom": "write the value itself"})
PORT = Schema.of(("name", "containerPort", "hostPort", "protocol", "hostIP"))
RESOURCES = Schema.of(("requests", "limits"), unsupported=("claims",))
VOLUME_MOUNT = Schema.of(
    ("name", "mountPath", "readOnly"),
    unsupported=("subPath", "subPathExpr", "mountPropagation", "recursiveReadOnly"),
)
VOLUME_SOURCES = ("emptyDir", "hostPath")
VOLUME = Schema.of(
    ("name", *VOLUME_SOURCES),
    unsupported={
        source: _VOLUMES_HINT
        for source in (
            "configMap",
            "secret",
            "persistentVolumeClaim",
            "nfs",
            "iscsi",
            "glusterfs",
            "rbd",
            "cephfs",
            "cinder",
            "downwardAPI",
            "projected",
            "ephemeral",
            "csi",
            "image",
            "gitRepo",
            "gcePersistentDisk",
            "awsElasticBlockStore",
            "azureDisk",
            "azureFile",
            "fc",
            "flexVolume",
            "flocker",
            "local",
            "portworxVolume",
            "quobyte",
            "scaleIO",
            "storageos",
            "vsphereVolume",
            "photonPersistentDisk",
        )
    },
)
EMPTY_DIR = Schema.of(("medium", "sizeLimit"))
HOST_PATH = Schema.of(("path", "type"))

# The resources a container may request or be limited to.
_RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")
_EXTENDED = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
_MAX_EXTENDED = 1024


def decode_v1(root: Value) -> pod_pb2.Pod:
    f = root.fields(POD)
    return pod_pb2.Pod(metadata=meta.decode(f.get("metadata")), spec=decode_pod_spec(f.get("spec")))


def decode_v1beta3(root: Value) -> pod_pb2.Pod:
    f = root.fields(POD)
    spec = decode_pod_spec(f.get("spec"), schema=POD_SPEC_V1BETA3)
    return pod_pb2.Pod(metadata=meta.decode(f.get("metadata")), spec=spec)


def decode_pod_spec(value: Value | None, *, schema: Schema = POD_SPEC) -> pod_pb2.PodSpec:
    spec = pod_pb2.PodSpec()
    if value is None:
        return spec
    f = value.fields(schema)
    for item in v.elements() if (v := f.get("containers")) else []:
        spec.containers.append(decode_container(item))
    for item in v.elements() if (v := f.get("volumes")) else []:
        spec.volumes.append(decode_volume(item))
    if v := f.get("restartPolicy"):
        spec.restart_policy = v.word(words.RESTART_POLICY)
    if v := f.get("nodeName") or f.get("host"):
        spec.node_name = v.string()
    if v := f.get("nodeSelector"):
        spec.node_selector.update(v.string_map())
    if v := f.get("terminationGracePeriodSeconds"):
        spec.termination_grace_period_seconds = v.integer()
    if v := f.get("hostname"):
        spec.hostname = v.string()
    for item in v.elements() if (v := f.get("networks")) else []:
        spec.networks.append(decode_network_attachment(item))
    if v := f.get("securityContext"):
        sf = v.fields(POD_SECURITY_CONTEXT)
        spec.security_context.SetInParent()
        _decode_ids(sf, spec.security_context)
    return spec


def _decode_ids(f: Fields, out: pod_pb2.PodSecurityContext | pod_pb2.SecurityContext) -> None:
    if (v := f.get("runAsUser")) is not None:
        out.run_as_user = v.integer(UID)
    if (v := f.get("runAsGroup")) is not None:
        out.run_as_group = v.integer(UID)
    if (v := f.get("runAsNonRoot")) is not None:
        out.run_as_non_root = v.boolean()


NETWORK_ATTACHMENT = Schema.of(known=("name", "interface", "mac", "ips"), ignored=("namespace",))


def decode_network_attachment(value: Value) -> pod_pb2.NetworkAttachment:
    """``{name: sriov-a, interface: net1, mac: ..., ips: [10.56.0.10/24]}``."""
    f = value.fields(NETWORK_ATTACHMENT)
    net = pod_pb2.NetworkAttachment()
    if v := f.get("name"):
        net.name = v.string()
    if v := f.get("interface"):
        net.interface = v.string()
    if v := f.get("mac"):
        net.mac = v.string()
    if v := f.get("ips"):
        net.ips.extend(v.strings())
    return net


def decode_container(value: Value) -> pod_pb2.Container:
    f = value.fields(CONTAINER)
    c = pod_pb2.Container()
    if v := f.get("name"):
        c.name = v.string()
    if v := f.get("image"):
        c.image = v.string()
    if v := f.get("command"):
        c.command.extend(v.strings())
    if v := f.get("args"):
        c.args.extend(v.strings())
    for item in v.elements() if (v := f.get("env")) else []:
        ef = item.fields(ENV_VAR)
        env = c.env.add()
        if x := ef.get("name"):
            env.name = x.string()
        if x := ef.get("value"):
            env.value = x.string()
    for item in v.elements() if (v := f.get("ports")) else []:
        c.ports.append(decode_port(item))
    if v := f.get("resources"):
        rf = v.fields(RESOURCES)
        decode_resource_list(rf.get("requests"), c.resources.requests)
        decode_resource_list(rf.get("limits"), c.resources.limits)
    for item in v.elements() if (v := f.get("volumeMounts")) else []:
        mf = item.fields(VOLUME_MOUNT)
        mount = c.volume_mounts.add()
        if x := mf.get("name"):
            mount.name = x.string()
        if x := mf.get("mountPath"):
            mount.mount_path = x.string()
        if x := mf.get("readOnly"):
            mount.read_only = x.boolean()
    if v := f.get("workingDir"):
        c.working_dir = v.string()
    if v := f.get("imagePullPolicy"):
        c.image_pull_policy = v.word(words.PULL_POLICY)
    if v := f.get("securityContext"):
        sf = v.fields(SECURITY_CONTEXT)
        c.security_context.SetInParent()
        _decode_ids(sf, c.security_context)
        if (x := sf.get("readOnlyRootFilesystem")) is not None:
            c.security_context.read_only_root_filesystem = x.boolean()
    return c


def decode_port(value: Value) -> pod_pb2.ContainerPort:
    f = value.fields(PORT)
    port = pod_pb2.ContainerPort()
    if v := f.get("name"):
        port.name = v.string()
    if v := f.get("containerPort"):
        port.container_port = v.integer(INT32)
    if v := f.get("hostPort"):
        port.host_port = v.integer(INT32)
    if v := f.get("protocol"):
        port.protocol = v.word(words.PROTOCOL)
    if v := f.get("hostIP"):
        port.host_ip = v.string()
    return port


def decode_resource_list(value: Value | None, out: meta_pb2.ResourceList) -> None:
    """``{cpu: 500m, memory: 128Mi}`` into a ResourceList."""
    if value is None:
        return
    for name, raw in value.mapping().items():
        if raw is None:
            continue
        q = value.child(raw, name)
        if "/" in name:  # an extended resource (atoll.io/sriov_ens1f0): whole units
            q = value.child(raw, Key(name))
            if not _EXTENDED.fullmatch(name):
                value.child(raw, Key(name)).fail("expected an extended resource name DOMAIN/NAME")
            count = q.raw if isinstance(q.raw, int) and not isinstance(q.raw, bool) else None
            if isinstance(q.raw, str) and q.raw.isascii() and q.raw.isdigit() and len(q.raw) < 10:
                count = int(q.raw)
            if count is None or not 0 <= count <= _MAX_EXTENDED:
                q.fail(f"expected a whole number of units (0..{_MAX_EXTENDED}), got {describe(q.raw)}")
            out.extended[name] = count
            continue
        if name not in _RESOURCE_NAMES:
            where = value.child(raw, Key(name))
            where.fail(
                "unknown resource; Atoll knows cpu, memory, ephemeral-storage and DOMAIN/NAME extended resources"
            )
        if name == "cpu":
            out.cpu_millis = q.cpu()
        elif name == "memory":
            out.memory_bytes = q.size()
        else:
            out.ephemeral_storage_bytes = q.size()


def decode_volume(value: Value) -> pod_pb2.Volume:
    f = value.fields(VOLUME)
    vol = pod_pb2.Volume()
    if v := f.get("name"):
        vol.name = v.string()
    sources = f.present(VOLUME_SOURCES)
    if len(sources) > 1:
        value.fail(f"expected exactly one volume source, got {' and '.join(sources)}")
    if not sources or sources == ["emptyDir"]:
        # Kubernetes defaults a volume without a source to emptyDir.
        vol.empty_dir.SetInParent()
        ef = f.child_fields("emptyDir", EMPTY_DIR)
        if v := ef.get("medium"):
            vol.empty_dir.medium = v.string()
        if v := ef.get("sizeLimit"):
            vol.empty_dir.size_limit_bytes = v.size()
    else:
        vol.host_path.SetInParent()
        hf = f.child_fields("hostPath", HOST_PATH)
        if v := hf.get("path"):
            vol.host_path.path = v.string()
        if v := hf.get("type"):
            vol.host_path.type = v.string()
    return vol
