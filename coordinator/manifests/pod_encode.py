"""atoll.v1 Pod -> the Kubernetes v1 shape, for ``get -o json|yaml``.

Zero values are left out (Kubernetes' omitempty), enums become their
Kubernetes words and quantities their shortest exact notation, so the output
reads like ``kubectl get -o yaml`` and decodes back to the same spec.
"""

from __future__ import annotations

from typing import Any

from atoll.v1 import meta_pb2, pod_pb2
from coordinator.manifests import meta, quantity, words


def encode(pod: pod_pb2.Pod) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta.encode(pod.metadata),
        "spec": encode_pod_spec(pod.spec),
    }
    status = encode_pod_status(pod.status)
    if status:
        out["status"] = status
    return out


def encode_pod_spec(spec: pod_pb2.PodSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"containers": [encode_container(c) for c in spec.containers]}
    if spec.volumes:
        out["volumes"] = [encode_volume(v) for v in spec.volumes]
    if policy := words.word(words.RESTART_POLICY_WORD, spec.restart_policy):
        out["restartPolicy"] = policy
    if spec.node_name:
        out["nodeName"] = spec.node_name
    if spec.node_selector:
        out["nodeSelector"] = dict(sorted(spec.node_selector.items()))
    if spec.HasField("termination_grace_period_seconds"):
        out["terminationGracePeriodSeconds"] = spec.termination_grace_period_seconds
    if spec.hostname:
        out["hostname"] = spec.hostname
    if spec.networks:
        out["networks"] = [encode_network_attachment(n) for n in spec.networks]
    if spec.HasField("security_context"):
        out["securityContext"] = encode_security_context(spec.security_context)
    return out


_SECURITY_CONTEXT_FIELDS = (
    ("run_as_user", "runAsUser"),
    ("run_as_group", "runAsGroup"),
    ("run_as_non_root", "runAsNonRoot"),
    ("read_only_root_filesystem", "readOnlyRootFilesystem"),
)


def encode_security_context(sc: pod_pb2.PodSecurityContext | pod_pb2.SecurityContext) -> dict[str, Any]:
    """The fields that are set, unset ones left out (false and 0 are values here)."""
    fields = sc.DESCRIPTOR.fields_by_name
    return {
        key: getattr(sc, name)
        for name, key in _SECURITY_CONTEXT_FIELDS
        if name in fields and sc.HasField(name)
    }


def encode_network_attachment(net: pod_pb2.NetworkAttachment) -> dict[str, Any]:
    out: dict[str, Any] = {"name": net.name}
    if net.interface:
        out["interface"] = net.interface
    if net.mac:
        out["mac"] = net.mac
    if net.ips:
        out["ips"] = list(net.ips)
    return out


def encode_container(c: pod_pb2.Container) -> dict[str, Any]:
    out: dict[str, Any] = {"name": c.name, "image": c.image}
    if c.command:
        out["command"] = list(c.command)
    if c.args:
        out["args"] = list(c.args)
    if c.env:
        out["env"] = [{"name": e.name} | ({"value": e.value} if e.value else {}) for e in c.env]
    if c.ports:
        out["ports"] = [encode_port(p) for p in c.ports]
    resources = {
        kind: encoded
        for kind, rl in (("requests", c.resources.requests), ("limits", c.resources.limits))
        if (encoded := encode_resource_list(rl))
    }
    if resources:
        out["resources"] = resources
    if c.volume_mounts:
        out["volumeMounts"] = [
            {"name": m.name, "mountPath": m.mount_path} | ({"readOnly": True} if m.read_only else {})
            for m in c.volume_mounts
        ]
    if c.working_dir:
        out["workingDir"] = c.working_dir
    if policy := words.word(words.PULL_POLICY_WORD, c.image_pull_policy):
        out["imagePullPolicy"] = policy
    if c.HasField("security_context"):
        out["securityContext"] = encode_security_context(c.security_context)
    return out


def encode_port(p: pod_pb2.ContainerPort) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.name:
        out["name"] = p.name
    out["containerPort"] = p.container_port
    if p.host_port:
        out["hostPort"] = p.host_port
    if protocol := words.word(words.PROTOCOL_WORD, p.protocol):
        out["protocol"] = protocol
    if p.host_ip:
        out["hostIP"] = p.host_ip
    return out


def encode_resource_list(rl: meta_pb2.ResourceList, *, pods: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    if rl.cpu_millis:
        out["cpu"] = quantity.format_cpu(rl.cpu_millis)
    if rl.memory_bytes:
        out["memory"] = quantity.format_bytes(rl.memory_bytes)
    if rl.ephemeral_storage_bytes:
        out["ephemeral-storage"] = quantity.format_bytes(rl.ephemeral_storage_bytes)
    if pods and rl.pods:
        out["pods"] = str(rl.pods)
    for name, count in sorted(rl.extended.items()):
        out[name] = str(count)
    return out


def encode_volume(v: pod_pb2.Volume) -> dict[str, Any]:
    out: dict[str, Any] = {"name": v.name}
    source = v.WhichOneof("source")
    if source == "empty_dir":
        ed: dict[str, Any] = {}
        if v.empty_dir.medium:
            ed["medium"] = v.empty_dir.medium
        if v.empty_dir.size_limit_bytes:
            ed["sizeLimit"] = quantity.format_bytes(v.empty_dir.size_limit_bytes)
        out["emptyDir"] = ed
    elif source == "host_path":
        hp: dict[str, Any] = {"path": v.host_path.path}
        if v.host_path.type:
            hp["type"] = v.host_path.type
        out["hostPath"] = hp
    return out


def encode_pod_status(status: pod_pb2.PodStatus) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if phase := words.word(words.POD_PHASE_WORD, status.phase):
        out["phase"] = phase
    if status.conditions:
        out["conditions"] = [_condition(c) for c in status.conditions]
    for key, text in (("message", status.message), ("reason", status.reason)):
        if text:
            out[key] = text
    if status.host_ip:
        out["hostIP"] = status.host_ip
    if status.pod_ip:
        out["podIP"] = status.pod_ip
    if status.HasField("start_time"):
        out["startTime"] = meta.encode_time(status.start_time)
    if status.container_statuses:
        out["containerStatuses"] = [_container_status(cs) for cs in status.container_statuses]
    if status.observed_generation:
        out["observedGeneration"] = status.observed_generation
    if status.networks:
        out["networkStatus"] = [
            {
                "name": n.name,
                "interface": n.interface,
                **({"ips": list(n.ips)} if n.ips else {}),
                **({"mac": n.mac} if n.mac else {}),
                "device": {"pci": n.device_pci},
            }
            for n in status.networks
        ]
    return out


def _condition(c: pod_pb2.PodCondition) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": c.type,
        "status": words.word(words.CONDITION_STATUS_WORD, c.status) or "Unknown",
    }
    if c.reason:
        out["reason"] = c.reason
    if c.message:
        out["message"] = c.message
    if c.HasField("last_transition_time"):
        out["lastTransitionTime"] = meta.encode_time(c.last_transition_time)
    return out


def _container_status(cs: pod_pb2.ContainerStatus) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": cs.name,
        "state": _state(cs.state),
        "lastState": _state(cs.last_state),
        "ready": cs.ready,
        "restartCount": cs.restart_count,
        "image": cs.image,
        "imageID": cs.image_id,
    }
    if cs.container_id:
        out["containerID"] = cs.container_id
    return out


def _state(state: pod_pb2.ContainerState) -> dict[str, Any]:
    which = state.WhichOneof("state")
    if which == "running":
        running: dict[str, Any] = {}
        if state.running.HasField("started_at"):
            running["startedAt"] = meta.encode_time(state.running.started_at)
        return {"running": running}
    if which == "waiting":
        waiting = {
            k: v for k, v in (("reason", state.waiting.reason), ("message", state.waiting.message)) if v
        }
        return {"waiting": waiting}
    if which == "terminated":
        t = state.terminated
        term: dict[str, Any] = {"exitCode": t.exit_code}
        if t.signal:
            term["signal"] = t.signal
        for key, text in (("reason", t.reason), ("message", t.message)):
            if text:
                term[key] = text
        if t.HasField("started_at"):
            term["startedAt"] = meta.encode_time(t.started_at)
        if t.HasField("finished_at"):
            term["finishedAt"] = meta.encode_time(t.finished_at)
        if t.container_id:
            term["containerID"] = t.container_id
        return {"terminated": term}
    return {}
