"""Atoll's few OpenStack operations, each idempotent, over openstacksdk.

Everything here is synchronous (openstacksdk is) and is called from the
asyncio CLI through `asyncio.to_thread`. Each `ensure_*` first looks for what
it would create and creates only what is missing, so that running
`coordinator provision` twice changes nothing the second time. Servers are
found by a metadata tag (`atoll-prefix`), not by name alone, so a server that
merely happens to share a name pattern is never adopted or deleted.

openstacksdk ships no type information; its objects are handled as `Any`
here and converted to the small dataclasses below at this module's edge.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import pathlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

PREFIX_KEY = "atoll-prefix"
TOKEN_KEY = "atoll-token-id"
FIP_DESCRIPTION = "atoll: floating IP of server {name}"
DISK_FORMATS = {".qcow2": "qcow2", ".img": "raw", ".raw": "raw", ".iso": "iso", ".vmdk": "vmdk"}


_USER_DATA = re.compile(r'(user_data":\s*")[^"]*(")')  # also "OS-EXT-SRV-ATTR:user_data" in replies


class _HideUserData(logging.Filter):
    """keystoneauth logs bodies at DEBUG; a server's holds user-data, and so its join token."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if 'user_data"' in message:
            record.msg, record.args = _USER_DATA.sub(r"\1<redacted>\2", message), None
        return True


_REQUEST_LOG = logging.getLogger("keystoneauth.session")
if not any(isinstance(f, _HideUserData) for f in _REQUEST_LOG.filters):
    _REQUEST_LOG.addFilter(_HideUserData())


class CloudError(Exception):
    """Something the cloud refused or lacks, phrased for the operator."""


def is_cloud_error(exc: BaseException) -> bool:
    """Ours, or one of openstacksdk's or keystoneauth's (HTTP errors, refused connections, bad auth).

    By module rather than by class, so that the CLI does not import the SDK to catch its errors.
    """
    return isinstance(exc, CloudError) or type(exc).__module__.startswith(("openstack.", "keystoneauth1."))


@dataclass(frozen=True)
class Rule:
    """A security group rule, in the fields that make two rules the same."""

    direction: str
    protocol: str | None
    port_min: int | None = None
    port_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group_id: str | None = None
    description: str = field(default="", compare=False)


@dataclass(frozen=True)
class Server:
    id: str
    name: str
    status: str
    task_state: str
    addresses: tuple[str, ...]
    metadata: Mapping[str, str]
    fault: str = ""

    @property
    def token_id(self) -> str:
        return self.metadata.get(TOKEN_KEY, "")


def host_rules(
    group_id: str, coordinator_host: str, coordinator_port: int, agent_port: int, vxlan_port: int
) -> list[Rule]:
    """What an Atoll host needs open, and nothing more.

    The coordinator dials each agent's gRPC port (logs, exec); hosts send each
    other VXLAN (the overlay) only within the group; ICMP for path MTU
    discovery and ping; and the hosts reach the coordinator's API. When the
    coordinator's address is a literal IP the agent-port and egress rules
    name it exactly; a host name cannot be pinned here, so they are open.
    """
    try:
        ip = ipaddress.ip_address(coordinator_host)
        coordinator = f"{ip}/32" if ip.version == 4 else None
    except ValueError:
        coordinator = None
    cidr = coordinator or "0.0.0.0/0"
    return [
        Rule("ingress", "tcp", agent_port, agent_port, cidr, None, "Atoll agent gRPC from the coordinator"),
        Rule("ingress", "udp", vxlan_port, vxlan_port, None, group_id, "Atoll overlay VXLAN between hosts"),
        Rule("ingress", "icmp", None, None, "0.0.0.0/0", None, "ICMP (path MTU discovery, ping)"),
        Rule(
            "egress", "tcp", coordinator_port, coordinator_port, cidr, None, "Atoll hosts to the coordinator"
        ),
    ]


def _rule_of(raw: Any) -> Rule:
    return Rule(
        raw.direction,
        raw.protocol,
        raw.port_range_min,
        raw.port_range_max,
        raw.remote_ip_prefix,
        raw.remote_group_id,
    )


def _server_of(raw: Any) -> Server:
    addresses = tuple(
        entry["addr"] for entries in (raw.addresses or {}).values() for entry in entries if entry.get("addr")
    )
    fault = (raw.fault or {}).get("message", "") if isinstance(raw.fault, dict) else ""
    return Server(
        id=raw.id,
        name=raw.name,
        status=raw.status or "",
        task_state=raw.task_state or "",
        addresses=addresses,
        metadata=dict(raw.metadata or {}),
        fault=fault,
    )


class OpenStackCloud:
    """One cloud of clouds.yaml, as the provisioner sees it."""

    def __init__(self, conn: Any, cloud_name: str) -> None:
        self.conn = conn
        self.name = cloud_name

    @classmethod
    def connect(cls, cloud: str) -> OpenStackCloud:
        try:
            import openstack  # here: only provisioning needs the SDK (the coordinator extra)
            import openstack.exceptions
        except ImportError:  # pragma: no cover - depends on the install
            raise CloudError(
                "provision needs openstacksdk: install atoll with the coordinator extra "
                "(pip install 'atoll[coordinator]')"
            ) from None
        try:
            return cls(openstack.connect(cloud=cloud), cloud)
        except openstack.exceptions.ConfigException as exc:
            raise CloudError(f"--os-cloud {cloud}: {exc} (looked in clouds.yaml)") from None

    # -- lookups -------------------------------------------------------------------

    def flavor_id(self, name_or_id: str) -> str:
        flavor = self.conn.compute.find_flavor(name_or_id, ignore_missing=True)
        if flavor is None:
            raise CloudError(f'flavor "{name_or_id}" not found in cloud {self.name}')
        return str(flavor.id)

    def network_id(self, name_or_id: str, *, external: bool = False) -> str:
        net = self.conn.network.find_network(name_or_id, ignore_missing=True)
        if net is None:
            raise CloudError(f'network "{name_or_id}" not found in cloud {self.name}')
        if external and not net.is_router_external:
            raise CloudError(f'network "{name_or_id}" is not external: it cannot give floating IPs')
        return str(net.id)

    # -- ensure_* --------------------------------------------------------------------

    def ensure_image(self, name_or_id: str, image_file: str | None) -> tuple[str, bool]:
        """The image's id, uploading `image_file` under that name when there is none."""
        image = self.conn.image.find_image(name_or_id, ignore_missing=True)
        if image is not None:
            return str(image.id), False
        if not image_file:
            raise CloudError(
                f'image "{name_or_id}" not found in cloud {self.name} (give --image-file to upload it)'
            )
        path = pathlib.Path(image_file)
        if not path.is_file():
            raise CloudError(f"--image-file {image_file}: no such file")
        disk_format = DISK_FORMATS.get(path.suffix.lower(), "raw")
        image = self.conn.image.create_image(
            name=name_or_id,
            filename=str(path),
            disk_format=disk_format,
            container_format="bare",
            wait=True,
        )
        return str(image.id), True

    def ensure_keypair(self, name: str, public_key_file: str | None) -> bool:
        """True when the keypair was created; an existing one is kept if it holds the same key."""
        wanted = pathlib.Path(public_key_file).read_text().strip() if public_key_file else None
        existing = self.conn.compute.find_keypair(name, ignore_missing=True)
        if existing is not None:
            if wanted and _key_body(existing.public_key) != _key_body(wanted):
                raise CloudError(
                    f'keypair "{name}" exists with a different public key than {public_key_file}'
                )
            return False
        if not wanted:
            raise CloudError(f'keypair "{name}" not found (give --public-key-file to create it)')
        self.conn.compute.create_keypair(name=name, public_key=wanted)
        return True

    def ensure_security_group(self, name: str, rules_for: Callable[[str], list[Rule]]) -> tuple[str, int]:
        """(group id, rules added). `rules_for(group_id)` gives the wanted rules; extra rules stay."""
        group = self.conn.network.find_security_group(name, ignore_missing=True)
        if group is None:
            group = self.conn.network.create_security_group(
                name=name,
                description="Atoll hosts: agent API, overlay, ICMP (managed by coordinator provision)",
            )
        have = {_rule_of(r) for r in self.conn.network.security_group_rules(security_group_id=group.id)}
        added = 0
        for rule in rules_for(group.id):
            if rule in have:
                continue
            self.conn.network.create_security_group_rule(
                security_group_id=group.id,
                direction=rule.direction,
                ethertype="IPv4",
                protocol=rule.protocol,
                port_range_min=rule.port_min,
                port_range_max=rule.port_max,
                remote_ip_prefix=rule.remote_ip_prefix,
                remote_group_id=rule.remote_group_id,
                description=rule.description,
            )
            added += 1
        return str(group.id), added

    # -- servers -----------------------------------------------------------------------

    def servers(self, prefix: str) -> list[Server]:
        """The servers `provision` made for `prefix`, whatever their state."""
        pattern = re.compile(rf"{re.escape(prefix)}-\d+\Z")
        found = self.conn.compute.servers(details=True, name=f"^{re.escape(prefix)}-")
        return sorted(
            (
                _server_of(s)
                for s in found
                if pattern.fullmatch(s.name or "") and (s.metadata or {}).get(PREFIX_KEY) == prefix
            ),
            key=lambda s: _index(s.name),
        )

    def server_names(self, prefix: str) -> set[str]:
        """Every name in the prefix's pattern, ours or not: indices not to reuse."""
        return {s.name for s in self.conn.compute.servers(name=f"^{re.escape(prefix)}-")}

    def server(self, name_or_id: str) -> Server | None:
        raw = self.conn.compute.find_server(name_or_id, ignore_missing=True, details=True)
        return _server_of(raw) if raw is not None else None

    def create_server(
        self,
        name: str,
        *,
        flavor_id: str,
        image_id: str,
        network_id: str,
        security_group: str,
        user_data: str,
        metadata: Mapping[str, str],
        key_name: str | None,
    ) -> Server:
        attrs: dict[str, Any] = {
            "name": name,
            "flavor_id": flavor_id,
            "image_id": image_id,
            "networks": [{"uuid": network_id}],
            "security_groups": [{"name": security_group}],
            "user_data": base64.b64encode(user_data.encode()).decode(),
            "metadata": dict(metadata),
        }
        if key_name:
            attrs["key_name"] = key_name
        return _server_of(self.conn.compute.create_server(**attrs))

    def delete_server(self, server_id: str) -> None:
        self.conn.compute.delete_server(server_id, ignore_missing=True)

    def exists(self, server_id: str) -> bool:
        return self.conn.compute.find_server(server_id, ignore_missing=True, details=False) is not None

    # -- floating IPs ----------------------------------------------------------------

    def ensure_floating_ip(self, server: Server, external_network_id: str) -> tuple[str, bool]:
        """(address, created) of the floating IP on the server's first port."""
        ports = list(self.conn.network.ports(device_id=server.id))
        if not ports:
            raise CloudError(f"server {server.name} has no port to attach a floating IP to")
        port = sorted(ports, key=lambda p: p.created_at or "")[0]
        for fip in self.conn.network.ips(port_id=port.id):
            return str(fip.floating_ip_address), False
        fip = self.conn.network.create_ip(
            floating_network_id=external_network_id,
            port_id=port.id,
            description=FIP_DESCRIPTION.format(name=server.name),
        )
        return str(fip.floating_ip_address), True

    def delete_floating_ips(self, server_id: str, name: str, addresses: Iterable[str] = ()) -> list[str]:
        """Delete the server's floating IPs: on its ports, tagged with its name, or at `addresses`."""
        found: dict[str, Any] = {}
        if server_id:
            for port in self.conn.network.ports(device_id=server_id):
                for fip in self.conn.network.ips(port_id=port.id):
                    found[fip.id] = fip
        # Checked again here: a Neutron that ignored a filter would otherwise list every floating IP.
        tag = FIP_DESCRIPTION.format(name=name)
        for fip in self.conn.network.ips(description=tag):
            if fip.description == tag:
                found[fip.id] = fip
        for address in addresses:
            if address:
                for fip in self.conn.network.ips(floating_ip_address=address):
                    if fip.floating_ip_address == address:
                        found[fip.id] = fip
        for fip in found.values():
            self.conn.network.delete_ip(fip, ignore_missing=True)
        return sorted(str(f.floating_ip_address) for f in found.values())


def _index(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def _key_body(public_key: str) -> str:
    """Key type and material, without the comment: what makes two public keys the same."""
    return " ".join(public_key.split()[:2])
