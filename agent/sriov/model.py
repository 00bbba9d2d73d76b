"""SR-IOV as plain data: physical functions, virtual functions and the settings a VF carries.

A VF is named by its PCI address, which never changes while the PF keeps its
VF count; its netdev name does (a VF inside a pod is renamed `net1`), so
every record the agent keeps is keyed by PCI address and remembers the
netdev name the VF had on the host, to give it back under that name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from atoll import agentconfig

RESOURCE_PREFIX = "atoll.io/sriov_"
LINK_STATES = {"auto": 0, "enable": 1, "disable": 2}  # IFLA_VF_LINK_STATE_*

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@dataclass(frozen=True)
class PfSpec:
    """A PF the agent manages: how many VFs it should have and the resource they count as."""

    name: str
    num_vfs: int
    resource: str = ""
    device_type: str = "netdevice"

    @property
    def resource_name(self) -> str:
        if not self.resource:
            return f"{RESOURCE_PREFIX}{self.name}"
        return self.resource if "/" in self.resource else f"atoll.io/{self.resource}"

    @classmethod
    def parse(cls, text: str) -> PfSpec:
        """``NAME:N`` or ``NAME:N:RESOURCE`` (``ens1f0:8:example.com/fast``), as flags and the config write it."""
        name, count, resource = agentconfig.parse_sriov_pf(text)
        return cls(name, count, resource)

    def __str__(self) -> str:
        return f"{self.name}:{self.num_vfs}" + (f":{self.resource}" if self.resource else "")


@dataclass(frozen=True, order=True)
class Vf:
    pf: str
    index: int
    pci: str  # 0000:03:02.0
    netdev: str  # its name on the host, "" when it has none (bound to vfio, or not probed yet)


@dataclass(frozen=True)
class VfSettings:
    """What the PF programs into a VF (IFLA_VF_*). The defaults are a clean, released VF."""

    vlan: int = 0
    qos: int = 0
    mac: str = ""  # "" leaves the MAC cleared (00:00:00:00:00:00)
    spoofchk: bool = True
    trust: bool = False
    link_state: str = "auto"
    min_tx_rate: int = 0  # Mbit/s, 0: no limit
    max_tx_rate: int = 0

    def problems(self) -> list[tuple[str, str]]:
        """(field, problem) for every value a PF would refuse or misread."""
        found = []
        if not 0 <= self.vlan <= 4094:
            found.append(("vlan", f"must be within 0..4094, got {self.vlan}"))
        if not 0 <= self.qos <= 7:
            found.append(("vlanQoS", f"must be within 0..7, got {self.qos}"))
        if self.qos and not self.vlan:
            found.append(("vlanQoS", "needs a vlan"))
        if self.mac and not is_unicast_mac(self.mac):
            found.append(("mac", f"must be a unicast MAC like 02:00:00:00:00:01, got {self.mac!r}"))
        if self.link_state not in LINK_STATES:
            found.append(("linkState", f"must be one of auto, enable, disable, got {self.link_state!r}"))
        if self.min_tx_rate < 0 or self.max_tx_rate < 0:
            found.append(("minTxRate", "rates must not be negative"))
        elif self.max_tx_rate and self.min_tx_rate > self.max_tx_rate:
            found.append(("minTxRate", f"{self.min_tx_rate} is above maxTxRate {self.max_tx_rate}"))
        return found


CLEAN = VfSettings()


def is_unicast_mac(mac: str) -> bool:
    """Lower-case colon form, not all zeros, the group bit clear."""
    return bool(_MAC.fullmatch(mac)) and mac != "00:00:00:00:00:00" and not int(mac[:2], 16) & 1
