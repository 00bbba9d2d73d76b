"""The Node kind: v1 ``Node`` and v1beta1 ``Minion``, both directions.

Agents register and report their own nodes, so a node manifest only ever
carries identity (name, labels) and the few things an operator sets: cordon
(``unschedulable``), the pod subnet and the provider ID. Everything the agent
observes (addresses, capacity, conditions; v1beta1's ``hostIP`` and
``resources``) is accepted on input, so that ``get -o yaml`` output can be
fed back, and dropped.
"""

from __future__ import annotations

from typing import Any

from atoll import validation
from atoll.v1 import node_pb2
from coordinator.manifests import meta, pod_encode, words
from coordinator.manifests.reader import Schema, Value
from coordinator.manifests.registry import Codec, Shape, rules, translator

NODE = Schema.of(known=("apiVersion", "kind", "metadata", "spec"), ignored=("status",))
NODE_SPEC = Schema.of(
    known=("unschedulable", "podCIDR", "providerID"),
    unsupported={"podCIDRs": "set podCIDR", "taints": "", "configSource": "", "externalID": "use providerID"},
)
MINION = Schema.of(
    known=meta.LEGACY_META_FIELDS | {"podCIDR", "unschedulable", "externalID"},
    unsupported=meta.LEGACY_META_UNSUPPORTED,
    ignored=meta.LEGACY_META_IGNORED | {"hostIP", "resources", "status"},
)


def decode_v1(root: Value) -> node_pb2.Node:
    f = root.fields(NODE)
    node = node_pb2.Node(metadata=meta.decode(f.get("metadata")), spec=node_pb2.NodeSpec())
    spec = f.child_fields("spec", NODE_SPEC)
    if v := spec.get("unschedulable"):
        node.spec.unschedulable = v.boolean()
    if v := spec.get("podCIDR"):
        node.spec.pod_cidr = v.string()
    if v := spec.get("providerID"):
        node.spec.provider_id = v.string()
    return node


def decode_minion(root: Value) -> node_pb2.Node:
    f = root.fields(MINION)
    node = node_pb2.Node(metadata=meta.decode_legacy(f), spec=node_pb2.NodeSpec())
    if v := f.get("unschedulable"):
        node.spec.unschedulable = v.boolean()
    if v := f.get("podCIDR"):
        node.spec.pod_cidr = v.string()
    if v := f.get("externalID"):
        node.spec.provider_id = v.string()
    return node


v1_to_minion = translator(
    rules(
        *meta.LEGACY_META_PATHS,
        (r"spec\.unschedulable", "unschedulable"),
        (r"spec\.podCIDR", "podCIDR"),
        (r"spec\.providerID", "externalID"),
    )
)


def encode(node: node_pb2.Node) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if node.spec.unschedulable:
        spec["unschedulable"] = True
    if node.spec.pod_cidr:
        spec["podCIDR"] = node.spec.pod_cidr
    if node.spec.provider_id:
        spec["providerID"] = node.spec.provider_id
    out: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": meta.encode(node.metadata),
        "spec": spec,
    }
    status = _status(node.status)
    if status:
        out["status"] = status
    return out


def _status(status: node_pb2.NodeStatus) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if status.addresses:
        out["addresses"] = [{"type": a.type, "address": a.address} for a in status.addresses]
    for key, rl in (
        ("capacity", status.capacity),
        ("allocatable", status.allocatable),
        ("usage", status.usage),
    ):
        if encoded := pod_encode.encode_resource_list(rl, pods=True):
            out[key] = encoded
    if status.conditions:
        out["conditions"] = [_condition(c) for c in status.conditions]
    info = status.node_info
    node_info = {
        key: value
        for key, value in (
            ("machineID", info.machine_id),
            ("bootID", info.boot_id),
            ("kernelVersion", info.kernel_version),
            ("osImage", info.os_image),
            ("architecture", info.architecture),
            ("containerRuntimeVersion", info.container_runtime_version),
            ("agentVersion", info.agent_version),
            ("hostname", info.hostname),
        )
        if value
    }
    if node_info:
        out["nodeInfo"] = node_info
    if status.HasField("last_heartbeat_time"):
        out["lastHeartbeatTime"] = meta.encode_time(status.last_heartbeat_time)
    if status.agent_port:
        out["agentPort"] = status.agent_port
    if status.load_average:
        out["loadAverage"] = list(status.load_average)
    return out


def _condition(c: node_pb2.NodeCondition) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": c.type,
        "status": words.word(words.CONDITION_STATUS_WORD, c.status) or "Unknown",
    }
    if c.reason:
        out["reason"] = c.reason
    if c.message:
        out["message"] = c.message
    if c.HasField("last_heartbeat_time"):
        out["lastHeartbeatTime"] = meta.encode_time(c.last_heartbeat_time)
    if c.HasField("last_transition_time"):
        out["lastTransitionTime"] = meta.encode_time(c.last_transition_time)
    return out


def _validate(node: node_pb2.Node) -> validation.Problems:
    return validation.validate_node(node)


_MINION = Shape(decode_minion, v1_to_minion)

CODEC = Codec(
    kind="Node",
    aliases=("Minion",),
    message=node_pb2.Node,
    shapes={"v1": Shape(decode_v1), "v1beta3": Shape(decode_v1), "v1beta2": _MINION, "v1beta1": _MINION},
    encode=encode,
    validate=_validate,
)
