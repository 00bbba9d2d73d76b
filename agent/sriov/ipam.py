"""Addresses for pods' VF interfaces on this node, as CNI's host-local IPAM hands them out.

host-local gives each pod the first free address of the network's range and
remembers it on the node (``<state-dir>/sriov/ipam.json``, written before the
address is used, removed when the pod's VF is released). Like CNI's host-local
the ranges are per node: two nodes given the same range can hand out the same
address, so give each node's SriovNetwork range its own slice or use static
addresses (what the SR-IOV Network Operator's users do today).
"""

from __future__ import annotations

import ipaddress
import pathlib

from agent.network.leasebook import LeaseBook
from atoll import errors
from atoll.v1 import sriov_pb2


class HostLocalIpam:
    def __init__(self, state_dir: pathlib.Path) -> None:
        # network -> address -> owner (``<pod uid>/<interface>``)
        self._book = LeaseBook(state_dir / "sriov" / "ipam.json")

    def addresses(self, network: str, ipam: sriov_pb2.SriovIpam, owner: str, wanted: list[str]) -> list[str]:
        """The CIDR addresses `owner` (``<pod uid>/<interface>``) gets on `network`: the ones it asked
        for, the network's static ones, or one from its host-local range (the same one again if
        `owner` already holds one)."""
        if wanted:
            return list(wanted)
        if ipam.type == "static":
            return [a.address for a in ipam.addresses]
        if ipam.type != "host-local":
            return []
        subnet = ipaddress.IPv4Network(ipam.subnet)
        held = self._book.of(network)
        for address, holder in held.items():
            if holder == owner:
                return [f"{address}/{subnet.prefixlen}"]
        start = ipaddress.IPv4Address(ipam.range_start) if ipam.range_start else subnet.network_address + 1
        end = ipaddress.IPv4Address(ipam.range_end) if ipam.range_end else subnet.broadcast_address - 1
        gateway = ipam.gateway
        candidate = start
        while candidate <= end:
            text = str(candidate)
            if text not in held and text != gateway:
                held[text] = owner
                self._book.save()
                return [f"{text}/{subnet.prefixlen}"]
            candidate += 1
        raise errors.ResourceExhausted(
            f"SriovNetwork {network}: no free address in {start}-{end} on this node"
        )

    def release(self, owner: str) -> None:
        self._book.release(lambda holder: holder == owner)

    def release_pod(self, pod_uid: str) -> None:
        self._book.release(lambda holder: holder.startswith(f"{pod_uid}/"))
