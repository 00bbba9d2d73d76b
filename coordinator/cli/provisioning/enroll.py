"""The bare-metal enrollment engine: drive an Ironic node from nothing (or wherever it is) to `active`.

The engine is level-triggered on the node's provision state, not a script of
steps: every turn of the loop reads the state and does what that state calls
for (enroll -> manage, manageable -> inspect or provide, available ->
instance_info + deploy with a configdrive, transient states -> wait). So a
re-run picks up where the node is, `--retry` is only a permission to act on a
failed state, and an enrollment interrupted half-way (CLI killed, laptop
closed) resumes without special cases.

Why the CLI drives Ironic, not the coordinator: Ironic credentials are the
operator's (clouds.yaml, keystone roles, BMC passwords), and keeping them on
the operator's side means the coordinator -- the host every agent talks to --
never holds cloud-admin or BMC credentials, needs no OpenStack SDK, and stays
zero-setup. The coordinator only learns the outcome: a Machine object
(provider id, state, host name, token id) written through the API at every
transition, so `get machines` shows enrollment as it happens. The price is
that nothing advances a node while no CLI runs; re-running `enroll` (or
`--retry`) is the way to continue, and it is idempotent.

Secrets: the BMC password exists as an `ironic.Secret` and goes only into the
driver_info sent to Ironic; the join token goes only into the configdrive.
Neither is logged, put in a Machine, or printed (errors are masked).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from atoll import errors
from coordinator.cli.provisioning import cloudinit, ironic
from coordinator.cli.provisioning.cloudinit import HostConfig, SriovPF
from coordinator.cli.provisioning.ironic import Baremetal, NodeView, Secret
from coordinator.cli.provisioning.tokens import TokenIssuer

log = logging.getLogger(__name__)
T = TypeVar("T")

DRIVERS = ("ipmi", "redfish", "fake-hardware")
INTERFACES = ("boot", "deploy", "inspect", "management", "network", "power", "raid", "bios", "rescue")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")
_HEX = re.compile(r"[0-9a-fA-F]+\Z")
_HASH_BY_LENGTH = {32: "md5", 64: "sha256", 128: "sha512"}

HINTS = {
    "enroll": "Ironic could not reach the BMC: check --bmc, --bmc-user and --bmc-password-file, then --retry",
    "inspect failed": "inspection failed: check the BMC and the inspection setup in Ironic, then --retry",
    "clean failed": "cleaning failed: check the node's disks and BMC in Ironic, then --retry",
    "deploy failed": "deployment failed: check --image/--image-checksum and that Ironic can fetch the image, "
    "then --retry",
    "error": "the node failed a tear-down: `coordinator unenroll` it, or fix it in Ironic",
    "adopt failed": "adoption failed: fix or delete the node in Ironic",
    "timeout": "the node is still moving: re-run the same command to keep waiting",
}


@dataclass(frozen=True)
class EnrollSpec:
    """One host to enroll, as the flags or one inventory entry describe it."""

    name: str
    driver: str
    bmc: str = ""
    bmc_user: str = ""
    bmc_password: Secret = field(default_factory=lambda: Secret(""))
    macs: tuple[str, ...] = ()
    image: str = ""
    image_checksum: str = ""
    root_gb: int = 10
    properties: Mapping[str, object] = field(default_factory=dict)
    interfaces: Mapping[str, str] = field(default_factory=dict)
    sriov_pfs: tuple[SriovPF, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    hosts_entries: tuple[tuple[str, str], ...] = ()

    def validate(self) -> None:
        from atoll import validation

        problems = validation.Problems()
        validation.core.check_name(problems, "name", self.name)
        problems.raise_first()
        if self.driver not in DRIVERS:
            raise errors.InvalidArgument(f"{self.name}: --driver must be one of {', '.join(DRIVERS)}")
        if self.driver != "fake-hardware" and not (self.bmc and self.bmc_user and self.bmc_password):
            raise errors.InvalidArgument(
                f"{self.name}: driver {self.driver} needs --bmc, --bmc-user and --bmc-password-file"
            )
        if not self.macs:
            raise errors.InvalidArgument(
                f"{self.name}: give at least one --mac (the NICs Ironic may boot from)"
            )
        for mac in self.macs:
            if not _MAC.fullmatch(mac):
                raise errors.InvalidArgument(
                    f"{self.name}: {mac!r} is not a MAC address like 52:54:00:12:34:56"
                )
        if len(set(self.macs)) != len(self.macs):
            raise errors.InvalidArgument(f"{self.name}: a MAC address is given twice")
        if bool(self.image) != bool(self.image_checksum):
            raise errors.InvalidArgument(f"{self.name}: --image and --image-checksum go together")
        if self.image:
            image_checksum_fields(self.image_checksum)
        for kind in self.interfaces:
            if kind not in INTERFACES:
                raise errors.InvalidArgument(
                    f"{self.name}: unknown interface {kind!r} ({', '.join(INTERFACES)})"
                )
        if self.root_gb < 1:
            raise errors.InvalidArgument(f"{self.name}: --root-gb must be at least 1")


def image_checksum_fields(checksum: str) -> dict[str, str]:
    """instance_info fields for ``md5:HEX``, ``sha256:HEX``, ``sha512:HEX``, a bare hex digest or a URL."""
    if checksum.startswith(("http://", "https://", "file://")):
        return {"image_checksum": checksum}
    algo, sep, value = checksum.partition(":")
    if not sep:
        algo, value = _HASH_BY_LENGTH.get(len(checksum), ""), checksum
    if (
        algo not in ("md5", "sha256", "sha512")
        or not _HEX.fullmatch(value)
        or _HASH_BY_LENGTH.get(len(value)) != algo
    ):
        raise errors.InvalidArgument(
            f"--image-checksum {checksum!r}: expected md5:HEX, sha256:HEX, sha512:HEX, a bare digest or a URL"
        )
    if algo == "md5":
        return {"image_checksum": value.lower()}
    return {"image_os_hash_algo": algo, "image_os_hash_value": value.lower()}


@dataclass(frozen=True)
class Options:
    coordinator: str  # HOST:PORT the host's agent dials once it has its certificate
    join_address: str = ""  # HOST:PORT of the coordinator's token port (default: the agent's)
    retry: bool = False
    wait_join: bool = False
    poll_interval: float = 1.0
    timeout: float = 3600.0  # per enrollment, Ironic part
    join_timeout: float = 900.0
    token_ttl: float = 24 * 3600.0


@dataclass
class Transition:
    state: str
    target: str
    elapsed: float


@dataclass
class Result:
    name: str
    ok: bool = False
    state: str = ""
    node_uuid: str = ""
    elapsed: float = 0.0
    transitions: list[Transition] = field(default_factory=list)
    error: str = ""
    hint: str = ""
    token_id: str = ""
    joined: str = ""  # the node's status once --wait saw it
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "ok": self.ok,
            "state": self.state,
            "nodeUUID": self.node_uuid,
            "elapsedSeconds": round(self.elapsed, 2),
            "transitions": [
                {"state": t.state, "target": t.target, "elapsedSeconds": round(t.elapsed, 2)}
                for t in self.transitions
            ],
        }
        for key, value in (
            ("error", self.error),
            ("hint", self.hint),
            ("tokenID", self.token_id),
            ("nodeStatus", self.joined),
            ("note", self.note),
        ):
            if value:
                out[key] = value
        return out


class Failure(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class Recorder(Protocol):
    """Where enrollments are recorded (the coordinator's Machine objects)."""

    async def record(self, name: str, **changes: Any) -> None: ...

    async def token_id(self, name: str) -> str: ...

    async def forget(self, name: str) -> None: ...

    async def node_status(self, node_name: str) -> str:
        """The node's status text ("Ready", "NotReady"), or "" while no node of that name exists."""
        ...


Progress = Callable[[str, Transition], None]


def _quiet(name: str, t: Transition) -> None:
    return None


class Enroller:
    def __init__(
        self,
        baremetal: Baremetal,
        tokens: TokenIssuer,
        recorder: Recorder,
        options: Options,
        *,
        progress: Progress = _quiet,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bm = baremetal
        self.tokens = tokens
        self.recorder = recorder
        self.options = options
        self.progress = progress
        self.clock = clock

    async def _io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- enroll --------------------------------------------------------------------------------

    async def enroll(self, spec: EnrollSpec) -> Result:
        started = self.clock()
        result = Result(spec.name)
        secrets = [spec.bmc_password.value]
        try:
            spec.validate()
            node = await self._io(self.bm.find_node, spec.name)
            if node is None:
                node = await self._create(spec)
            else:
                self._check_same(spec, node)
                await self._ensure_ports(spec, node)
            result.node_uuid = node.uuid
            await self.recorder.record(
                spec.name,
                provider_id=node.uuid,
                host_name=spec.name,
                labels=dict(spec.labels),
                details=_details(spec),
                state=node.provision_state,
                last_error="",
            )
            node = await self._drive(spec, node, result, started)
            result.state = node.provision_state
            if node.provision_state == "active" and self.options.wait_join:
                result.joined = await self._wait_join(spec, result, started)
            result.ok = True
        except Failure as exc:
            result.error, result.hint = ironic.mask(str(exc), secrets), exc.hint
        except errors.AtollError as exc:
            result.error = ironic.mask(str(exc), secrets)
        result.elapsed = self.clock() - started
        if not result.ok and result.token_id and result.state != "active":
            # The failed deploy's configdrive stays in Ironic's database: its token must not work.
            await self._revoke_quietly(result.token_id)
        if not result.ok and result.node_uuid:
            await self._record_quietly(spec.name, state=result.state or "", last_error=result.error)
        return result

    async def _create(self, spec: EnrollSpec) -> NodeView:
        """The node and its ports, or nothing: a MAC another node owns is found before creating,
        and a port that still fails takes the new node with it, so a re-run starts clean."""
        await self._check_macs_free(spec, "")
        info = ironic.driver_info(spec.driver, spec.bmc, spec.bmc_user, spec.bmc_password)
        properties = dict(spec.properties)
        node = await self._io(self.bm.create_node, spec.name, spec.driver, info, properties, spec.interfaces)
        try:
            for mac in spec.macs:
                await self._io(self.bm.create_port, node.uuid, mac)
        except errors.AtollError:
            await self._io(self.bm.delete_node, node.uuid)
            raise
        return node

    async def _check_macs_free(self, spec: EnrollSpec, uuid: str) -> None:
        for mac in spec.macs:
            owner = await self._io(self.bm.port_owner, mac)
            if owner and owner != uuid:
                raise Failure(
                    f"{spec.name}: MAC {mac} is already registered to Ironic node {owner}",
                    "each NIC belongs to one node: check --mac, or unenroll the other node",
                )

    def _check_same(self, spec: EnrollSpec, node: NodeView) -> None:
        """Re-running enroll on an existing node continues it; a different host under the same name stops."""
        if node.driver != spec.driver:
            raise Failure(
                f"node {spec.name} already exists in Ironic with driver {node.driver}, not {spec.driver}",
                f"`coordinator unenroll {spec.name}` first, or enroll under another name",
            )
        if spec.bmc and node.bmc_address and node.bmc_address != _bmc_address(spec):
            raise Failure(
                f"node {spec.name} already exists in Ironic with BMC {node.bmc_address}, not {spec.bmc}",
                f"`coordinator unenroll {spec.name}` first, or enroll under another name",
            )

    async def _ensure_ports(self, spec: EnrollSpec, node: NodeView) -> None:
        existing = set(await self._io(self.bm.port_macs, node.uuid))
        if any(mac not in existing for mac in spec.macs):
            await self._check_macs_free(spec, node.uuid)
        for mac in spec.macs:
            if mac not in existing:
                await self._io(self.bm.create_port, node.uuid, mac)

    async def _drive(self, spec: EnrollSpec, node: NodeView, result: Result, started: float) -> NodeView:
        requested: list[str] = []
        initial = node.provision_state
        last: tuple[str, str] | None = None
        deadline = started + self.options.timeout
        while True:
            state, target = node.provision_state, node.target_provision_state
            if (state, target) != last:
                last = (state, target)
                transition = Transition(state, target, self.clock() - started)
                result.transitions.append(transition)
                result.state = state
                self.progress(spec.name, transition)
                await self.recorder.record(
                    spec.name, state=state, last_error=node.last_error if state in ironic.FAILED else ""
                )
            if node.maintenance:
                raise Failure(
                    f"node {spec.name} is in maintenance: {node.last_error or 'no reason given'}",
                    "unset maintenance in Ironic (openstack baremetal node maintenance unset), then re-run",
                )
            action = self._next_action(spec, node, requested, initial)
            if action == "done":
                if initial == "active" and not requested:
                    result.note = "already active: nothing to do"
                elif not spec.image and state == "available":
                    result.note = "no --image: left available"
                return node
            if action == "wait":
                if self.clock() > deadline:
                    raise Failure(
                        f"node {spec.name} still {state} after {self.options.timeout:.0f}s", HINTS["timeout"]
                    )
                await asyncio.sleep(self.options.poll_interval)
            elif action == "deploy":
                await self._deploy(spec, node, result)
                requested.append("active")
            else:
                await self._io(self.bm.set_provision_state, node.uuid, action)
                requested.append(action)
            node = await self._io(self.bm.get_node, node.uuid)

    def _next_action(self, spec: EnrollSpec, node: NodeView, requested: list[str], initial: str) -> str:
        """What the node's state calls for: "wait", "done", "deploy" or an Ironic provision target."""
        state = node.provision_state
        if state in ironic.TRANSIENT or (node.target_provision_state and state not in ironic.FAILED):
            return "wait"
        if state == "enroll":
            if node.last_error and ("manage" in requested or not self.options.retry):
                raise Failure(f"{spec.name}: enroll failed: {node.last_error}", HINTS["enroll"])
            return "manage"
        if state == "manageable":
            inspectable = node.inspect_interface not in ("", "no-inspect")
            if inspectable and not node.inspected and "inspect" not in requested:
                return "inspect"
            if "provide" in requested:
                raise Failure(
                    f"{spec.name}: back in manageable after provide: {node.last_error}", HINTS["clean failed"]
                )
            return "provide"
        if state == "available":
            if not spec.image:
                return "done"
            if "active" in requested:
                raise Failure(
                    f"{spec.name}: deploy ended in available: {node.last_error}", HINTS["deploy failed"]
                )
            return "deploy"
        if state == "active":
            return "done"
        if state in ironic.FAILED:
            failed_now = bool(requested) or state != self._initial_failed(initial)
            if failed_now or not self.options.retry or state in ("error", "adopt failed"):
                hint = HINTS.get(state, "")
                if not failed_now and state not in ("error", "adopt failed"):
                    hint = f"the node was left in {state} by an earlier run; fix the cause, then re-run with --retry"
                raise Failure(f"{spec.name}: {state}: {node.last_error or 'no error recorded'}", hint)
            return "deploy" if state == "deploy failed" else "manage"
        raise Failure(
            f"{spec.name}: unexpected provision state {state!r}",
            "enroll handles enroll, manageable, available, active and the failed states; fix the node in Ironic",
        )

    @staticmethod
    def _initial_failed(initial: str) -> str:
        return initial if initial in ironic.FAILED else ""

    async def _deploy(self, spec: EnrollSpec, node: NodeView, result: Result) -> None:
        """A fresh single-use join token, the user-data around it, instance_info, then `active`."""
        ca_hash = await self.tokens.ca_hash()
        old = await self.recorder.token_id(spec.name)
        if old:
            await self.tokens.revoke(old)
        token = await self.tokens.create(
            f"enroll {spec.name} (ironic node {node.uuid})",
            ttl=self.options.token_ttl,
            uses=1,
            node=spec.name.lower(),  # the node name its agent joins as (HostConfig's default)
        )
        result.token_id = token.id
        # Recorded before Ironic has it, so an interrupted run still knows what to revoke.
        await self.recorder.record(spec.name, token_id=token.id)
        try:
            user_data = cloudinit.render(
                HostConfig(
                    hostname=spec.name,
                    coordinator=self.options.coordinator,
                    join_token=token.value,
                    ca_hash=ca_hash,
                    join_address=self.options.join_address,
                    labels=dict(spec.labels),
                    hosts_entries=spec.hosts_entries,
                    sriov_pfs=spec.sriov_pfs,
                )
            )
            info: dict[str, object] = {"image_source": spec.image, "root_gb": spec.root_gb}
            info.update(image_checksum_fields(spec.image_checksum))
            await self._io(self.bm.set_instance_info, node.uuid, info)
            configdrive = {"meta_data": {"hostname": spec.name}, "user_data": user_data}
            await self._io(self.bm.set_provision_state, node.uuid, "active", configdrive)
        except Exception:
            await self.tokens.revoke(token.id)
            raise

    async def _wait_join(self, spec: EnrollSpec, result: Result, started: float) -> str:
        deadline = self.clock() + self.options.join_timeout
        seen = ""
        while True:
            status = await self.recorder.node_status(spec.name)
            if status != seen:
                seen = status
                transition = Transition(f"node {status or 'not joined'}", "", self.clock() - started)
                result.transitions.append(transition)
                self.progress(spec.name, transition)
            if status.startswith("Ready"):
                return status
            if self.clock() > deadline:
                raise Failure(
                    f"{spec.name} is active but its agent has not joined as a Ready node after "
                    f"{self.options.join_timeout:.0f}s",
                    f"check the host's /var/log/cloud-init-output.log and that it reaches {self.options.coordinator}",
                )
            await asyncio.sleep(self.options.poll_interval)

    async def _revoke_quietly(self, token_id: str) -> None:
        try:
            await self.tokens.revoke(token_id)
        except errors.AtollError as exc:
            log.warning(
                "could not revoke join token %s: %s (coordinator token revoke %s)", token_id, exc, token_id
            )

    async def _record_quietly(self, name: str, **changes: Any) -> None:
        try:
            await self.recorder.record(name, **changes)
        except errors.AtollError as exc:
            log.warning("could not record machine %s: %s", name, exc)

    # -- unenroll ------------------------------------------------------------------------------

    async def unenroll(self, name: str) -> Result:
        """Undeploy (tear down, clean), delete the Ironic node, revoke the token, forget the machine."""
        started = self.clock()
        result = Result(name)
        try:
            node = await self._io(self.bm.find_node, name)
            if node is not None:
                result.node_uuid = node.uuid
                await self._tear_down(name, node, result, started)
            token_id = await self.recorder.token_id(name)
            if token_id:
                await self.tokens.revoke(token_id)
                result.token_id = token_id
            await self.recorder.forget(name)
            result.ok, result.state = True, "deleted"
            if node is None:
                result.note = "no such node in Ironic"
        except Failure as exc:
            result.error, result.hint = str(exc), exc.hint
        except errors.AtollError as exc:
            result.error = str(exc)
        result.elapsed = self.clock() - started
        return result

    async def _tear_down(self, name: str, node: NodeView, result: Result, started: float) -> None:
        deadline = started + self.options.timeout
        last = ""
        requested: list[str] = []
        while True:
            state = node.provision_state
            if state != last:
                last = state
                transition = Transition(state, node.target_provision_state, self.clock() - started)
                result.transitions.append(transition)
                self.progress(name, transition)
                await self._record_quietly(name, state=state)
            if state in ironic.TRANSIENT or (node.target_provision_state and state not in ironic.FAILED):
                if self.clock() > deadline:
                    raise Failure(
                        f"node {name} still {state} after {self.options.timeout:.0f}s", HINTS["timeout"]
                    )
                await asyncio.sleep(self.options.poll_interval)
            elif state in ("available", "manageable", "enroll", "adopt failed"):
                await self._io(self.bm.delete_node, node.uuid)
                return
            else:
                action = "manage" if state in ("clean failed", "inspect failed") else "deleted"
                if requested.count(action) >= 2:
                    raise Failure(
                        f"node {name}: {state}: {node.last_error}", "fix the node in Ironic, then re-run"
                    )
                await self._io(self.bm.set_provision_state, node.uuid, action)
                requested.append(action)
            node = await self._io(self.bm.get_node, node.uuid)


def _bmc_address(spec: EnrollSpec) -> str:
    info = ironic.driver_info(spec.driver, spec.bmc, "", Secret(""))
    return next((v for k, v in sorted(info.items()) if k.endswith("_address")), "")


def _details(spec: EnrollSpec) -> dict[str, str]:
    """What the Machine shows of how the host was enrolled: never the BMC user's password."""
    details = {"driver": spec.driver, "macs": ",".join(spec.macs)}
    if spec.bmc:
        details["bmc"] = spec.bmc
    if spec.image:
        details["image"] = spec.image
    if spec.sriov_pfs:
        details["sriovPFs"] = ",".join(str(pf) for pf in spec.sriov_pfs)
    return details
