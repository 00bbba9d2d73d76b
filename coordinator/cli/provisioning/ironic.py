"""Ironic, as `coordinator enroll` uses it: openstacksdk's baremetal proxy behind a narrow adapter.

Why openstacksdk rather than python-ironicclient:

* one SDK for both provisioners: `coordinator provision` drives Nova, Neutron
  and Glance through openstacksdk, so the `coordinator` extra carries one
  cloud library, one clouds.yaml reader and one keystoneauth session code
  path (noauth, http_basic and keystone are all keystoneauth plugins);
* python-ironicclient depends on openstacksdk itself nowadays (its configdrive
  and clouds.yaml support come from there), so it would add packages and
  give nothing the proxy lacks: nodes, ports, provision states with
  configdrive, microversion negotiation;
* the SDK ships type information (``py.typed``), which keeps this module
  checked under ``mypy --strict``.

The adapter is synchronous (requests underneath); the enroll engine calls it
from worker threads. Every HTTP request is counted by method and path
template (`calls`), which is how the benchmark reports Ironic calls per node.

Secrets: keystoneauth logs request bodies at DEBUG, and enroll's bodies carry
BMC passwords (driver_info) and join tokens (configdrive). `connect` caps the
SDK's loggers at INFO so no log level of the CLI can surface them.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from atoll import errors

log = logging.getLogger(__name__)

# Loggers that would print request bodies at DEBUG.
SDK_LOGGERS = ("keystoneauth", "keystoneauth1", "openstack", "urllib3")
AUTH_TYPES = ("noauth", "http_basic", "keystone")

# States the engine waits through; Ironic moves on by itself.
TRANSIENT = frozenset(
    {
        "verifying",
        "inspecting",
        "inspect wait",
        "cleaning",
        "clean wait",
        "deploying",
        "wait call-back",
        "deleting",
        "adopting",
        "rescuing",
        "unrescuing",
    }
)
FAILED = frozenset({"inspect failed", "clean failed", "deploy failed", "adopt failed", "error"})


@dataclass(frozen=True)
class Secret:
    """A value that prints as ``******``: BMC and http_basic passwords, in dataclass reprs and f-strings."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return "******"

    def __repr__(self) -> str:
        return "Secret(******)"

    def __bool__(self) -> bool:
        return bool(self.value)


@dataclass(frozen=True)
class IronicAuth:
    """Where Ironic is and how to authenticate: a clouds.yaml entry, or an endpoint and a method."""

    cloud: str = ""
    url: str = ""
    auth: str = "noauth"  # with url: noauth | http_basic | keystone (keystone reads OS_* variables)
    username: str = ""
    password: Secret = Secret("")
    api_version: str = "1"  # negotiated up to the newest both sides speak

    def validate(self) -> None:
        if not self.cloud and not self.url:
            raise errors.InvalidArgument("Ironic: give --os-cloud NAME or --ironic-url URL (or $OS_CLOUD)")
        if self.auth not in AUTH_TYPES:
            raise errors.InvalidArgument(f"--ironic-auth: expected one of {', '.join(AUTH_TYPES)}")
        if self.url and self.auth == "http_basic" and not (self.username and self.password):
            raise errors.InvalidArgument(
                "--ironic-auth http_basic needs --ironic-user and --ironic-password-file"
            )


@dataclass(frozen=True)
class NodeView:
    """What the engine reads of a node (never driver_info: Ironic masks it anyway)."""

    uuid: str
    name: str
    driver: str
    provision_state: str
    target_provision_state: str
    last_error: str
    power_state: str
    maintenance: bool
    inspect_interface: str
    inspected: bool
    bmc_address: str
    has_configdrive: bool


NODE_FIELDS = (
    "uuid",
    "name",
    "driver",
    "provision_state",
    "target_provision_state",
    "last_error",
    "power_state",
    "maintenance",
    "inspect_interface",
    "inspection_finished_at",
    "driver_info",
    "instance_info",
)

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def path_template(path: str) -> str:
    """``/v1/nodes/6f1c.../states/provision`` -> ``/v1/nodes/{node}/states/provision``."""
    path = path.split("?", 1)[0]
    path = re.sub(r"(/nodes/)[^/]+", r"\1{node}", path)
    path = re.sub(r"(/ports/)[^/]+", r"\1{port}", path)
    return _UUID.sub("{uuid}", path)


class CallLog:
    """Counts HTTP requests by ``METHOD /path/template``; thread-safe (the engine uses threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()

    def record(self, method: str, url: str) -> None:
        from urllib.parse import urlsplit

        key = f"{method} {path_template(urlsplit(url).path)}"
        with self._lock:
            self.counts[key] += 1

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


def _quiet_sdk_loggers() -> None:
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


def connect(auth: IronicAuth) -> Any:
    """An openstack.connection.Connection for Ironic (imported here: the agent never needs the SDK)."""
    auth.validate()
    _quiet_sdk_loggers()
    try:
        import openstack
        from openstack import connection
    except ImportError:  # pragma: no cover - depends on the install
        raise errors.FailedPrecondition(
            "enroll needs openstacksdk: install atoll with the coordinator extra (pip install 'atoll[coordinator]')"
        ) from None
    try:
        return _connect(auth, openstack, connection)
    except errors.AtollError:
        raise
    except Exception as exc:  # the SDK's config and auth errors have no common base worth naming
        raise errors.FailedPrecondition(f"Ironic: {type(exc).__name__}: {exc}") from None


def _connect(auth: IronicAuth, openstack: Any, connection: Any) -> Any:
    options: dict[str, Any] = {"baremetal_api_version": auth.api_version}
    if auth.url:
        options["baremetal_endpoint_override"] = auth.url
    if auth.cloud:
        return openstack.connect(cloud=auth.cloud, **options)
    if auth.auth == "noauth":
        return connection.Connection(auth_type="none", **options)
    if auth.auth == "http_basic":
        return connection.Connection(
            auth_type="http_basic",
            auth={"username": auth.username, "password": auth.password.value},
            **options,
        )
    return openstack.connect(load_envvars=True, **options)


class Baremetal:
    """The Ironic calls enroll and unenroll make; blocking, one connection, every request counted."""

    def __init__(self, conn: Any, calls: CallLog | None = None) -> None:
        self._conn = conn
        self._bm = conn.baremetal
        self.calls = calls or CallLog()
        hooks = conn.session.session.hooks.setdefault("response", [])
        hooks.append(self._on_response)

    def _on_response(self, response: Any, *args: object, **kwargs: object) -> None:
        self.calls.record(response.request.method, response.request.url)

    def close(self) -> None:
        self._conn.close()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from openstack import exceptions

        try:
            return fn(*args, **kwargs)
        except exceptions.NotFoundException as exc:
            raise errors.NotFound(f"{what}: {_message(exc)}") from None
        except exceptions.ConflictException as exc:
            raise errors.Conflict(f"{what}: {_message(exc)}") from None
        except exceptions.BadRequestException as exc:
            raise errors.InvalidArgument(f"{what}: {_message(exc)}") from None
        except exceptions.HttpException as exc:
            if getattr(exc, "status_code", None) in (401, 403):
                raise errors.PermissionDenied(f"Ironic refused the credentials: {_message(exc)}") from None
            raise errors.Unavailable(f"{what}: {_message(exc)}") from None
        except exceptions.SDKException as exc:
            raise errors.Unavailable(f"{what}: {exc}") from None

    def find_node(self, name: str) -> NodeView | None:
        try:
            node = self._call(f"node {name}", self._bm.get_node, name, fields=list(NODE_FIELDS))
        except errors.NotFound:
            return None
        return _view(node)

    def get_node(self, uuid: str) -> NodeView:
        return _view(self._call(f"node {uuid}", self._bm.get_node, uuid, fields=list(NODE_FIELDS)))

    def create_node(
        self,
        name: str,
        driver: str,
        driver_info: Mapping[str, str],
        properties: Mapping[str, object],
        interfaces: Mapping[str, str],
    ) -> NodeView:
        attrs: dict[str, object] = {
            "name": name,
            "driver": driver,
            "driver_info": dict(driver_info),
            "properties": dict(properties),
        }
        attrs.update({f"{kind}_interface": value for kind, value in interfaces.items()})
        node = self._call(f"create node {name}", self._bm.create_node, **attrs)
        return _view(node)

    def port_macs(self, uuid: str) -> list[str]:
        ports = self._call("list ports", lambda: list(self._bm.ports(node_id=uuid, fields=["address"])))
        return [str(p.address).lower() for p in ports]

    def port_owner(self, mac: str) -> str:
        """The UUID of the node a MAC address is registered to, or ""."""
        ports = self._call("find port", lambda: list(self._bm.ports(address=mac, fields=["node_uuid"])))
        return str(ports[0].node_id) if ports else ""

    def create_port(self, uuid: str, mac: str) -> None:
        self._call(f"create port {mac}", self._bm.create_port, node_id=uuid, address=mac)

    def set_provision_state(
        self, uuid: str, target: str, configdrive: Mapping[str, object] | None = None
    ) -> None:
        kwargs: dict[str, object] = {"wait": False}
        if configdrive is not None:
            kwargs["config_drive"] = dict(configdrive)
        self._call(f"{target} node {uuid}", self._bm.set_node_provision_state, uuid, target, **kwargs)

    def set_instance_info(self, uuid: str, info: Mapping[str, object]) -> None:
        patch = [
            {"op": "add", "path": f"/instance_info/{key}", "value": value} for key, value in info.items()
        ]
        self._call(f"set instance_info of {uuid}", self._bm.patch_node, uuid, patch)

    def delete_node(self, uuid: str) -> None:
        self._call(f"delete node {uuid}", self._bm.delete_node, uuid, ignore_missing=True)

    def set_maintenance(self, uuid: str, on: bool, reason: str = "") -> None:
        if on:
            self._call("maintenance", self._bm.set_node_maintenance, uuid, reason=reason)
        else:
            self._call("maintenance", self._bm.unset_node_maintenance, uuid)


def _message(exc: Any) -> str:
    """Ironic's own error text (its 'faultstring'), without the SDK's URL preamble."""
    details = getattr(exc, "details", None)
    if details:
        return str(details).strip()
    return str(getattr(exc, "message", exc)).strip()


def _view(node: Any) -> NodeView:
    info = node.driver_info or {}
    bmc = next((str(v) for k, v in sorted(info.items()) if k.endswith("_address")), "")
    return NodeView(
        uuid=str(node.id),
        name=str(node.name or ""),
        driver=str(node.driver or ""),
        provision_state=str(node.provision_state or ""),
        target_provision_state=str(node.target_provision_state or ""),
        last_error=str(node.last_error or ""),
        power_state=str(node.power_state or ""),
        maintenance=bool(node.is_maintenance),
        inspect_interface=str(node.inspect_interface or ""),
        inspected=bool(getattr(node, "inspection_finished_at", None)),
        bmc_address=bmc,
        has_configdrive=bool((node.instance_info or {}).get("configdrive")),
    )


def driver_info(driver: str, bmc: str, user: str, password: Secret) -> dict[str, str]:
    """driver_info for the hardware types enroll knows. The password goes only here, to Ironic."""
    if driver == "ipmi":
        info = {"ipmi_address": bmc, "ipmi_username": user, "ipmi_password": password.value}
    elif driver == "redfish":
        # "https://10.0.0.5/redfish/v1/Systems/1" names the system too; a bare address leaves it to Ironic.
        address, system = bmc, ""
        match = re.fullmatch(r"(\w+://[^/]+)(/.*)?", bmc)
        if match and match.group(2) and match.group(2) != "/":
            address, system = match.group(1), match.group(2)
        info = {"redfish_address": address, "redfish_username": user, "redfish_password": password.value}
        if system:
            info["redfish_system_id"] = system
    else:  # fake-hardware keeps the same shape, so tests exercise the same secrets path
        info = {"fake_address": bmc, "fake_username": user, "fake_password": password.value}
    return {k: v for k, v in info.items() if v}


def mask(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret replaced, for errors that quote Ironic's words back."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "******")
    return text
