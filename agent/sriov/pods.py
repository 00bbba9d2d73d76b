"""Pods and their VFs: the hook the pod syncer calls, level-triggered.

On every sync of a pod whose sandbox runs, `ensure` makes the pod hold one
VF per entry of its spec.networks, inside the sandbox's network namespace:
VFs still recorded for an older sandbox (whose namespace went, and the kernel
sent them home) are released first, then the missing ones are attached. When
the pod goes, `removed` releases its VFs and addresses. The SriovNetworks
come from the coordinator's node config.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from agent.sriov.ipam import HostLocalIpam
from agent.sriov.manager import SriovManager, VfRequest
from agent.sriov.model import VfSettings
from agent.sriov.pool import Allocation
from atoll import errors, logs
from atoll.v1 import pod_pb2, sriov_pb2

log = logging.getLogger(__name__)


def settings_for(net: sriov_pb2.SriovNetworkSpec, mac: str) -> VfSettings:
    return VfSettings(
        vlan=net.vlan,
        qos=net.vlan_qos,
        mac=mac,
        spoofchk=net.spoof_chk != sriov_pb2.SRIOV_SWITCH_OFF,  # on unless switched off, as in the operator
        trust=net.trust == sriov_pb2.SRIOV_SWITCH_ON,
        link_state=net.link_state or "auto",
        min_tx_rate=net.min_tx_rate,
        max_tx_rate=net.max_tx_rate,
    )


def routes_of(ipam: sriov_pb2.SriovIpam) -> tuple[tuple[str, str], ...]:
    """The IPAM config's routes; one without a gateway goes through the network's gateway, if any."""
    return tuple((r.dst, r.gw or ipam.gateway) for r in ipam.routes)


class SriovPodNetworks:
    def __init__(self, manager: SriovManager, ipam: HostLocalIpam) -> None:
        self.manager = manager
        self.ipam = ipam
        self._networks: dict[str, sriov_pb2.SriovNetwork] = {}

    def set_networks(self, networks: Iterable[sriov_pb2.SriovNetwork]) -> None:
        self._networks = {n.metadata.name: n for n in networks}

    def requests(self, pod: pod_pb2.Pod) -> list[VfRequest]:
        out = []
        for i, attachment in enumerate(pod.spec.networks):
            net = self._networks.get(attachment.name)
            if net is None:
                raise errors.Unavailable(f"SriovNetwork {attachment.name!r} is not known on this node (yet)")
            settings = settings_for(net.spec, attachment.mac)
            problems = settings.problems()
            if problems:
                field, message = problems[0]
                raise errors.InvalidArgument(f"network {attachment.name}: {field}: {message}")
            interface = attachment.interface or f"net{i + 1}"
            owner = f"{pod.metadata.uid}/{interface}"
            addresses = self.ipam.addresses(attachment.name, net.spec.ipam, owner, list(attachment.ips))
            routes = routes_of(net.spec.ipam)
            out.append(
                VfRequest(
                    attachment.name, net.spec.resource_name, settings, interface, tuple(addresses), routes
                )
            )
        return out

    async def ensure(self, pod: pod_pb2.Pod, netns: str) -> list[Allocation]:
        """The pod's VFs, attached in `netns`. Raises when one cannot be (no free VF, a driver error)."""
        uid = pod.metadata.uid
        if not pod.spec.networks:
            if self.manager.pool.of_pod(uid):
                await self.removed(uid)
            return []
        held = self.manager.pool.of_pod(uid)
        if any(a.netns != netns for a in held):
            log.info(
                "pod %s/%s: new sandbox, VFs of the old one released",
                pod.metadata.namespace,
                pod.metadata.name,
                extra=logs.pod(pod.metadata),
            )
            await self.manager.release_pod(uid, keep_netns=netns)
        wanted = {a.interface or f"net{i + 1}" for i, a in enumerate(pod.spec.networks)}
        current = {a.ifname for a in self.manager.pool.of_pod(uid) if a.phase == "attached"}
        if wanted <= current:
            return self.manager.pool.of_pod(uid)
        pod_name = f"{pod.metadata.namespace}/{pod.metadata.name}"
        await self.manager.attach(uid, pod_name, netns, self.requests(pod))
        return self.manager.pool.of_pod(uid)

    def status(self, pod_uid: str) -> list[pod_pb2.NetworkStatus]:
        """The pod's attached networks, for its status (Multus's network-status)."""
        return [
            pod_pb2.NetworkStatus(
                name=a.network, interface=a.ifname, ips=a.addresses, mac=a.mac, device_pci=a.pci
            )
            for a in sorted(self.manager.pool.of_pod(pod_uid), key=lambda a: a.ifname)
            if a.phase == "attached"
        ]

    async def removed(self, pod_uid: str) -> None:
        await self.manager.release_pod(pod_uid)
        self.ipam.release_pod(pod_uid)
