"""A pod's extra networks: read from Multus's annotation or spec.networks, checked, turned into VF requests.

Multus users write ``k8s.v1.cni.cncf.io/networks: "sriov-a, sriov-b@net2"``
(or the JSON list of NetworkSelectionElements); Atoll's own field is
``spec.networks``. Either way, before a pod or a replication controller's
template is stored, every network must name an existing SriovNetwork, and
the pod's first container requests (and is limited to) one unit of each
network's resource per attachment, as the network-resources-injector does
for Multus: the scheduler then counts VFs like CPU and memory. A pod whose
spec.networks is set keeps it; the annotation fills it only when empty.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping

from atoll import errors, kinds
from atoll.v1 import pod_pb2, sriov_pb2
from atoll.validation.core import Problems
from atoll.validation.pods import validate_networks
from coordinator.objects.registry import Registry

ANNOTATION = "k8s.v1.cni.cncf.io/networks"
SRIOV_NETWORK = kinds.by_name("SriovNetwork")


def from_annotation(text: str, field: str) -> list[pod_pb2.NetworkAttachment]:
    """Multus's two forms: ``name[@iface], ns/name[@iface], ...`` or a JSON list of elements."""
    text = text.strip()
    if not text:
        return []
    if text.startswith(("[", "{")):
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise errors.InvalidArgument(f"not a JSON list of networks ({exc})", field=field) from None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise errors.InvalidArgument("expected a JSON list of {name, interface, mac, ips}", field=field)
        out = []
        for i, item in enumerate(items):
            unknown = set(item) - {"name", "namespace", "interface", "mac", "ips"}
            if unknown:
                raise errors.InvalidArgument(f"[{i}]: unknown field {sorted(unknown)[0]!r}", field=field)
            ips = item.get("ips", [])
            strings = (item.get("name", ""), item.get("interface", ""), item.get("mac", ""))
            if not all(isinstance(s, str) for s in strings) or not (
                isinstance(ips, list) and all(isinstance(ip, str) for ip in ips)
            ):
                raise errors.InvalidArgument(
                    f"[{i}]: name, interface, mac and ips[] must be strings", field=field
                )
            name, interface, mac = strings
            out.append(pod_pb2.NetworkAttachment(name=name, interface=interface, mac=mac, ips=ips))
        return out
    out = []
    for word in text.split(","):
        ref, _, interface = word.strip().partition("@")
        name = ref.rpartition("/")[2]  # SriovNetworks are cluster-wide: a namespace is ignored
        out.append(pod_pb2.NetworkAttachment(name=name, interface=interface))
    return out


async def admit(
    registry: Registry, spec: pod_pb2.PodSpec, annotations: Mapping[str, str], prefix: str = "spec"
) -> None:
    """Fill spec.networks from the annotation, check every network exists, set the VF requests."""
    annotation_field = f"{prefix.rsplit('spec', 1)[0]}metadata.annotations[{ANNOTATION}]"
    if not spec.networks and annotations.get(ANNOTATION, "").strip():
        spec.networks.extend(from_annotation(annotations[ANNOTATION], annotation_field))
    if not spec.networks:
        return
    for i, net in enumerate(spec.networks):
        if not net.interface:
            net.interface = f"net{i + 1}"
    problems = Problems()
    validate_networks(problems, spec.networks, f"{prefix}.networks")
    problems.raise_first()
    wanted: Counter[str] = Counter()
    for i, net in enumerate(spec.networks):
        try:
            found = await registry.get(SRIOV_NETWORK, "", net.name)
        except errors.NotFound:
            raise errors.InvalidArgument(
                f'no SriovNetwork "{net.name}" (coordinator get sriovnetworks)',
                field=f"{prefix}.networks[{i}].name",
            ) from None
        assert isinstance(found, sriov_pb2.SriovNetwork)
        if found.spec.ipam.type == "static" and not net.ips and not found.spec.ipam.addresses:
            raise errors.InvalidArgument(
                f'SriovNetwork "{net.name}" has static IPAM without addresses: give the pod its ips',
                field=f"{prefix}.networks[{i}].ips",
            )
        wanted[found.spec.resource_name] += 1
    if not spec.containers:
        return
    first = spec.containers[0].resources
    for resource, count in wanted.items():
        first.requests.extended[resource] = count
        first.limits.extended[resource] = count
