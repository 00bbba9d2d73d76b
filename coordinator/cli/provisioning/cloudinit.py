"""Cloud-init user-data for a host Atoll brings up (OpenStack server or Ironic node).

One renderer for both provisioners (`coordinator provision` for VMs,
`coordinator enroll` for bare metal), so a VM and a bare-metal host join the
same way:

* the agent's config file goes to /etc/atoll/agent.yaml: coordinator address,
  join token, CA pin (and the token port to join through), node name and
  labels, SR-IOV PF settings and any other agent option. It is readable by root only since it carries the token;
* ``/etc/hosts`` entries, for sites without DNS (the agent must resolve the
  coordinator, and bare-metal networks often have no resolver at first boot);
* the agent's systemd unit is enabled and started (``runcmd``, which runs once
  per instance, after write_files).

API (stable, imported by both provisioners)::

    host = HostConfig(hostname="bm-01", coordinator="10.0.0.2:6443",
                      join_token=token.value, ca_hash=pin,
                      labels={"rack": "r1"}, sriov_pfs=(SriovPF("ens1f0", 8),),
                      hosts_entries=(("10.0.0.2", "coordinator"),))
    text = render(host)                   # "#cloud-config\\n..."
    agent_config(host)                    # the agent.yaml mapping
    agent_config_of(text)                 # ... read back from rendered user-data
    check_agent_config(agent_config(host))  # the agent's own loader accepts it

`agent_config` is the only place that knows the file's keys; the agent's own
loader (`atoll.agentconfig.from_mapping`) is the schema, so `render` refuses a
mapping the agent would refuse at start, instead of shipping a host that
boots and never joins.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from atoll import agentconfig, errors

AGENT_CONFIG_PATH = "/etc/atoll/agent.yaml"
AGENT_UNIT = "atoll-agent.service"
HEADER = "#cloud-config"

_IFACE = re.compile(r"[A-Za-z0-9_.:@-]{1,15}\Z")
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z")
MAX_VFS = 256


@dataclass(frozen=True)
class SriovPF:
    """An SR-IOV physical function and the number of virtual functions it should expose."""

    iface: str
    num_vfs: int

    @classmethod
    def parse(cls, text: str) -> SriovPF:
        """``IFACE:NUM_VFS`` (``ens1f0:8``), as `--sriov-pf` and inventory files write it."""
        iface, sep, count = str(text).strip().rpartition(":")
        if not sep or not iface:
            raise errors.InvalidArgument(f"SR-IOV PF {text!r}: expected IFACE:NUM_VFS, e.g. ens1f0:8")
        try:
            num = int(count)
        except ValueError:
            raise errors.InvalidArgument(f"SR-IOV PF {text!r}: NUM_VFS must be a number") from None
        pf = cls(iface, num)
        pf.validate()
        return pf

    def validate(self) -> None:
        if not _IFACE.fullmatch(self.iface):
            raise errors.InvalidArgument(f"SR-IOV PF {self.iface!r}: not an interface name")
        if not 0 <= self.num_vfs <= MAX_VFS:
            raise errors.InvalidArgument(
                f"SR-IOV PF {self.iface}: NUM_VFS must be between 0 and {MAX_VFS}, got {self.num_vfs}"
            )

    def __str__(self) -> str:
        return f"{self.iface}:{self.num_vfs}"


@dataclass(frozen=True)
class HostConfig:
    hostname: str
    coordinator: str  # HOST:PORT the agent dials
    join_token: str = field(repr=False)  # "<id>.<secret>": never logged
    ca_hash: str  # "sha256:<hex>" pin of the coordinator's CA
    labels: Mapping[str, str] = field(default_factory=dict)
    # (address, names) lines for /etc/hosts, for sites without DNS.
    hosts_entries: Sequence[tuple[str, str]] = ()
    # Further agent options (validated by the agent's loader like the rest).
    agent_options: Mapping[str, object] = field(default_factory=dict)
    # The Atoll node name; default: the host name, lower-cased (what the agent defaults to).
    node_name: str = ""
    sriov_pfs: Sequence[SriovPF] = ()
    ssh_authorized_keys: Sequence[str] = ()
    # The coordinator's token port to join through (GetClusterInfo's token_server), when it is
    # not the agent's default (the coordinator's host, port 6444).
    join_address: str = ""


def agent_config(host: HostConfig) -> dict[str, object]:
    """The agent.yaml mapping: what `atoll.agentconfig.from_mapping` must accept."""
    values: dict[str, object] = {
        "coordinator": host.coordinator,
        "node_name": host.node_name or host.hostname.lower(),
        "join_token": host.join_token,
        "ca_hash": host.ca_hash,
    }
    if host.join_address:
        values["join_address"] = host.join_address
    if host.labels:
        values["labels"] = dict(sorted(host.labels.items()))
    if host.sriov_pfs:
        values["sriov_pfs"] = [str(pf) for pf in host.sriov_pfs]
    values.update(host.agent_options)
    return values


def validate(host: HostConfig) -> None:
    """Refuse what would boot a host that never joins: bad names, addresses, agent options."""
    if not _HOSTNAME.fullmatch(host.hostname.lower()) or len(host.hostname) > 253:
        raise errors.InvalidArgument(f"hostname {host.hostname!r} is not a valid host name")
    if not host.join_token or not host.ca_hash:
        raise errors.InvalidArgument("user-data needs a join token and the coordinator's CA hash")
    for address, names in host.hosts_entries:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise errors.InvalidArgument(f"/etc/hosts entry {address!r}: not an IP address") from None
        if not names.split() or any(not _HOSTNAME.fullmatch(n.lower()) for n in names.split()):
            raise errors.InvalidArgument(f"/etc/hosts entry {address}: bad names {names!r}")
    for pf in host.sriov_pfs:
        pf.validate()
    check_agent_config(agent_config(host))


def check_agent_config(values: Mapping[str, object]) -> Any:
    """Parse `values` with the agent's own loader; returns its AgentConfig or raises InvalidArgument."""
    return agentconfig.from_mapping(values)


def render(host: HostConfig) -> str:
    """A `#cloud-config` document; deterministic for the same input."""
    validate(host)
    files: list[dict[str, object]] = [
        {
            "path": AGENT_CONFIG_PATH,
            "owner": "root:root",
            "permissions": "0600",
            "content": yaml.safe_dump(agent_config(host), sort_keys=False),
        }
    ]
    if host.hosts_entries:
        lines = "".join(f"{addr} {names}\n" for addr, names in host.hosts_entries)
        files.append({"path": "/etc/hosts", "append": True, "content": lines})
    doc: dict[str, object] = {
        "hostname": host.hostname,
        "preserve_hostname": False,
        # cloud-init must not rewrite /etc/hosts from its template: that would drop the entries above.
        "manage_etc_hosts": False,
        "write_files": files,
        "runcmd": [["systemctl", "enable", "--now", AGENT_UNIT]],
    }
    if host.ssh_authorized_keys:
        doc["ssh_authorized_keys"] = list(host.ssh_authorized_keys)
    return HEADER + "\n" + yaml.safe_dump(doc, sort_keys=False)


def parse(text: str) -> dict[str, Any]:
    """A rendered document back as data; checks the header cloud-init needs to treat it as cloud-config."""
    first, _, _ = text.partition("\n")
    if first.strip() != HEADER:
        raise errors.InvalidArgument(f"user-data must start with {HEADER!r}, got {first[:40]!r}")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise errors.InvalidArgument("user-data is not a YAML mapping")
    return data


def agent_config_of(text: str) -> dict[str, Any]:
    """The agent.yaml mapping inside rendered user-data (for tests and `describe`)."""
    for entry in parse(text).get("write_files") or ():
        if isinstance(entry, dict) and entry.get("path") == AGENT_CONFIG_PATH:
            values = yaml.safe_load(str(entry.get("content", "")))
            if not isinstance(values, dict):
                break
            return values
    raise errors.InvalidArgument(f"user-data writes no {AGENT_CONFIG_PATH}")
