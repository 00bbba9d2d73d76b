"""`coordinator provision` / `deprovision`: a named set of OpenStack servers, brought to a count.

The set is named by a prefix: its servers are ``<prefix>-1``, ``<prefix>-2``,
... and carry the prefix in their metadata. Provisioning is level-triggered:
every run lists what the cloud has, then creates only what is missing (and,
with ``--ensure``, removes the surplus, highest index first), so re-running
the same command creates nothing and a half-finished run is completed by the
next one. A server in ERROR is replaced rather than counted.

Each new server gets its own join token, named in its metadata and in its
Machine record, so that deprovisioning a server revokes exactly its token;
its user-data (cloudinit.render) carries the token, the CA pin and the
coordinator's address. The token's value exists only in that user-data: it
is never printed or logged, and Machine records hold its id only.

Floating IPs are made per server on the server's first port and tagged with
its name, so a floating IP whose server vanished is still found and freed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from atoll.v1 import machines_pb2
from coordinator.cli.provisioning import cloudinit, openstack
from coordinator.cli.provisioning.openstack import CloudError, OpenStackCloud, Server
from coordinator.cli.provisioning.tokens import TokenIssuer

log = logging.getLogger(__name__)
T = TypeVar("T")

PROVIDER = "openstack"
PREFIX_LABEL = "atoll.io/provision-prefix"
BOOT_PARALLEL = 4
TOKEN_TTL = 24 * 3600.0


@dataclass(frozen=True)
class Request:
    cloud: str
    prefix: str
    count: int
    exact: bool  # --ensure: also remove servers beyond `count`
    flavor: str
    image: str
    network: str
    coordinator: str  # HOST:PORT the agents dial
    join_address: str = ""
    floating_ip_pool: str = ""
    key_name: str = ""
    public_key_file: str = ""
    image_file: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    security_group: str = "atoll-hosts"
    agent_port: int = 10250
    vxlan_port: int = 8472
    timeout: float = 900.0
    poll_interval: float = 1.0


@dataclass
class ServerResult:
    name: str
    id: str = ""
    status: str = ""
    action: str = ""  # created, kept, replaced, deleted, gone
    addresses: list[str] = field(default_factory=list)
    floating_ip: str = ""
    token_id: str = ""
    elapsed: float = 0.0
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "id": self.id, "status": self.status, "action": self.action}
        for key, value in (
            ("addresses", self.addresses),
            ("floatingIP", self.floating_ip),
            ("tokenID", self.token_id),
            ("error", self.error),
        ):
            if value:
                out[key] = value
        out["elapsedSeconds"] = round(self.elapsed, 2)
        return out


@dataclass
class Outcome:
    servers: list[ServerResult] = field(default_factory=list)
    removed: list[ServerResult] = field(default_factory=list)
    setup: dict[str, str] = field(default_factory=dict)  # what was ensured: security group, keypair, image

    @property
    def ok(self) -> bool:
        return not any(r.error for r in (*self.servers, *self.removed))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "setup": self.setup,
            "servers": [r.to_dict() for r in self.servers],
            "removed": [r.to_dict() for r in self.removed],
        }


@dataclass(frozen=True)
class _Boot:
    """What every server of one run boots with."""

    flavor_id: str
    image_id: str
    network_id: str
    ca_hash: str


class Recorder(Protocol):
    """Machine records (coordinator.cli.provisioning.machines.ApiRecorder)."""

    async def record(self, name: str, **changes: Any) -> None: ...

    async def token_id(self, name: str) -> str: ...

    async def forget(self, name: str) -> None: ...

    async def names(self, prefix: str) -> list[str]:
        """Names of the Machines recorded for `prefix`."""
        ...

    async def get(self, name: str) -> machines_pb2.Machine | None: ...


Progress = Callable[[str, str, float], None]  # (server name, what happened, seconds since start)


def _quiet(name: str, text: str, elapsed: float) -> None:
    return None


def plan(
    ours: Sequence[str], taken: set[str], prefix: str, count: int, exact: bool
) -> tuple[list[str], list[str]]:
    """(names to create, names to remove) to bring the set `ours` to `count` servers.

    New servers take the lowest free indices; `taken` holds every name in the
    pattern (ours or not), which is never reused. Surplus goes highest index
    first, so a set scaled down and up again keeps its oldest members.
    """
    by_index = sorted(ours, key=lambda n: int(n.rsplit("-", 1)[1]))
    remove = by_index[count:] if exact else []
    create: list[str] = []
    index = 1
    while len(by_index) - len(remove) + len(create) < count:
        name = f"{prefix}-{index}"
        if name not in taken:
            create.append(name)
        index += 1
    return create, remove


class Provisioner:
    def __init__(
        self,
        cloud: OpenStackCloud,
        tokens: TokenIssuer,
        recorder: Recorder,
        *,
        progress: Progress = _quiet,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cloud = cloud
        self.tokens = tokens
        self.recorder = recorder
        self.progress = progress
        self.clock = clock
        self.started = clock()

    async def _io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _say(self, name: str, text: str) -> None:
        self.progress(name, text, self.clock() - self.started)

    # -- provision -------------------------------------------------------------------------

    async def provision(self, req: Request) -> Outcome:
        self.started = self.clock()
        outcome = Outcome()
        flavor_id = await self._io(self.cloud.flavor_id, req.flavor)
        network_id = await self._io(self.cloud.network_id, req.network)
        external_id = (
            await self._io(self.cloud.network_id, req.floating_ip_pool, external=True)
            if req.floating_ip_pool
            else ""
        )
        image_id, uploaded = await self._io(self.cloud.ensure_image, req.image, req.image_file or None)
        outcome.setup["image"] = f"{req.image} ({'uploaded' if uploaded else 'exists'})"
        if uploaded:
            self._say(req.image, "image uploaded")
        if req.key_name:
            made = await self._io(self.cloud.ensure_keypair, req.key_name, req.public_key_file or None)
            outcome.setup["keypair"] = f"{req.key_name} ({'created' if made else 'exists'})"
            if made:
                self._say(req.key_name, "keypair created")
        host, port = _split(req.coordinator)

        def rules(group_id: str) -> list[openstack.Rule]:
            return openstack.host_rules(group_id, host, port, req.agent_port, req.vxlan_port)

        _, added = await self._io(self.cloud.ensure_security_group, req.security_group, rules)
        outcome.setup["securityGroup"] = f"{req.security_group} ({added} rules added)"
        if added:
            self._say(req.security_group, f"security group: {added} rules added")

        ours = await self._io(self.cloud.servers, req.prefix)
        broken = [s for s in ours if s.status == "ERROR"]
        for server in broken:
            self._say(server.name, f"ERROR ({server.fault or 'no fault given'}): replacing it")
        if broken:
            outcome.removed += await self._remove(broken, [], action="replaced")
            ours = [s for s in ours if s.status != "ERROR"]
        taken = await self._io(self.cloud.server_names, req.prefix)
        taken -= {s.name for s in broken}
        create, remove = plan([s.name for s in ours], taken, req.prefix, req.count, req.exact)
        if remove:
            gone = [s for s in ours if s.name in remove]
            outcome.removed += await self._remove(gone, [], action="deleted")
            ours = [s for s in ours if s.name not in remove]

        ca_hash = await self.tokens.ca_hash() if create else ""
        boot = asyncio.Semaphore(BOOT_PARALLEL)

        async def create_one(name: str) -> ServerResult:
            async with boot:
                return await self._create(req, name, _Boot(flavor_id, image_id, network_id, ca_hash))

        created = list(await asyncio.gather(*(create_one(n) for n in create)))
        results = {s.name: ServerResult(s.name, s.id, s.status, "kept", token_id=s.token_id) for s in ours}
        results.update({r.name: r for r in created})
        waiting = [r for r in results.values() if not r.error]
        await self._wait_active(req, waiting)
        for result in waiting:
            if not result.error:
                await self._finish(req, result, external_id)
            elif result.id:
                # Recorded too, so `get machines` shows why; the next run replaces it.
                await self.recorder.record(
                    result.name,
                    provider_id=result.id,
                    host_name=result.name,
                    token_id=result.token_id,
                    details=_details(req),
                    state=result.status,
                    last_error=result.error,
                )
        outcome.servers = sorted(results.values(), key=lambda r: int(r.name.rsplit("-", 1)[1]))
        return outcome

    async def _create(self, req: Request, name: str, boot: _Boot) -> ServerResult:
        result = ServerResult(name, action="created")
        # Single use, and worth nothing a day later: user-data stays readable in Nova.
        token = await self.tokens.create(
            f"provision {name} ({req.cloud})", ttl=TOKEN_TTL, uses=1, node=name.lower()
        )
        result.token_id = token.id
        try:
            user_data = cloudinit.render(
                cloudinit.HostConfig(
                    hostname=name,
                    coordinator=req.coordinator,
                    join_token=token.value,
                    ca_hash=boot.ca_hash,
                    labels=req.labels,
                    join_address=req.join_address,
                )
            )
            server = await self._io(
                self.cloud.create_server,
                name,
                flavor_id=boot.flavor_id,
                image_id=boot.image_id,
                network_id=boot.network_id,
                security_group=req.security_group,
                user_data=user_data,
                metadata={openstack.PREFIX_KEY: req.prefix, openstack.TOKEN_KEY: token.id},
                key_name=req.key_name or None,
            )
        except Exception as exc:
            # No server carries the token: it must not stay valid.
            await self.tokens.revoke(token.id)
            result.error = f"create failed: {exc}"
            self._say(name, result.error)
            return result
        result.id = server.id
        result.status = server.status
        self._say(name, f"created ({server.id}), join token {token.id}")
        return result

    async def _wait_active(self, req: Request, results: list[ServerResult]) -> None:
        """Poll the set (one list call per round) until every booting server is ACTIVE or failed.

        A server kept from an earlier run is waited for only while it is still
        building: one an operator stopped (SHUTOFF, PAUSED, ...) is left as it is.
        """
        seen: dict[str, tuple[str, str]] = {}
        pending = {
            r.name: r
            for r in results
            if r.status != "ACTIVE" and (r.action == "created" or r.status == "BUILD")
        }
        deadline = self.clock() + req.timeout
        began = self.clock()
        while pending:
            current = {s.name: s for s in await self._io(self.cloud.servers, req.prefix)}
            for name, result in list(pending.items()):
                server = current.get(name)
                if server is None:
                    continue
                state = (server.status, server.task_state)
                if seen.get(name) != state:
                    seen[name] = state
                    task = f" ({server.task_state})" if server.task_state else ""
                    self._say(name, f"{server.status}{task}")
                result.status = server.status
                if server.status == "ACTIVE":
                    result.elapsed = self.clock() - began
                    del pending[name]
                elif server.status == "ERROR":
                    result.error = f"boot failed: {server.fault or 'nova gave no reason'}"
                    result.elapsed = self.clock() - began
                    del pending[name]
            if not pending:
                break
            if self.clock() > deadline:
                for result in pending.values():
                    result.error = f"not ACTIVE after {req.timeout:.0f}s (still {result.status})"
                break
            await asyncio.sleep(req.poll_interval)

    async def _finish(self, req: Request, result: ServerResult, external_id: str) -> None:
        """Floating IP (when asked) and the Machine record of an ACTIVE server."""
        server = await self._io(self.cloud.server, result.id)
        if server is None:
            result.error = "vanished after becoming ACTIVE"
            return
        if external_id:
            try:
                address, created = await self._io(self.cloud.ensure_floating_ip, server, external_id)
            except CloudError as exc:
                result.error = str(exc)
                return
            result.floating_ip = address
            if created:
                self._say(result.name, f"floating IP {address}")
        result.addresses = [a for a in server.addresses if a != result.floating_ip]
        result.token_id = server.token_id
        await self.recorder.record(
            result.name,
            provider_id=server.id,
            host_name=server.name,
            node_name=server.name.lower(),
            token_id=server.token_id,
            floating_ip=result.floating_ip,
            addresses=result.addresses,
            labels=dict(req.labels),
            details=_details(req),
            state=server.status,
            last_error="",
        )

    # -- deprovision -----------------------------------------------------------------------

    async def deprovision(
        self, names: Sequence[str] = (), prefix: str = "", wait_limit: float = 600.0
    ) -> Outcome:
        """Delete servers (by name, or the whole set of `prefix`), their floating IPs, tokens and records."""
        self.started = self.clock()
        servers: list[Server] = []
        orphans: list[str] = []  # Machine records whose server is already gone
        if prefix:
            servers = await self._io(self.cloud.servers, prefix)
            known = {s.name for s in servers}
            orphans = [n for n in await self.recorder.names(prefix) if n not in known]
        for name in names:
            server = await self._io(self.cloud.server, name)
            if server is not None and openstack.PREFIX_KEY not in server.metadata:
                raise CloudError(f"server {name} was not made by `coordinator provision`: left alone")
            if server is not None:
                servers.append(server)
            else:
                orphans.append(name)
        outcome = Outcome()
        outcome.removed = await self._remove(servers, orphans, action="deleted", wait_limit=wait_limit)
        return outcome

    async def _remove(
        self, servers: Sequence[Server], orphans: Sequence[str], *, action: str, wait_limit: float = 600.0
    ) -> list[ServerResult]:
        results = []
        for server in servers:
            self._say(server.name, "deleting")
            released = await self._io(self.cloud.delete_floating_ips, server.id, server.name)
            await self._io(self.cloud.delete_server, server.id)
            result = ServerResult(server.name, server.id, "DELETED", action, token_id=server.token_id)
            result.floating_ip = ", ".join(released)
            results.append(result)
        await self._wait_gone(results, wait_limit)
        for name in orphans:
            machine = await self.recorder.get(name)
            token_id = machine.spec.token_id if machine is not None else ""
            recorded = [machine.spec.floating_ip] if machine is not None else []
            released = await self._io(self.cloud.delete_floating_ips, "", name, recorded)
            results.append(
                ServerResult(
                    name, status="DELETED", action="gone", token_id=token_id, floating_ip=", ".join(released)
                )
            )
        for result in results:
            if result.error:
                continue
            token_id = result.token_id or await self.recorder.token_id(result.name)
            if token_id:
                await self.tokens.revoke(token_id)
            await self.recorder.forget(result.name)
            extra = [f"floating IP {result.floating_ip} released"] if result.floating_ip else []
            if token_id:
                extra.append(f"join token {token_id} revoked")
            gone = "already gone" if result.action == "gone" else "deleted"
            self._say(result.name, gone + (f" ({'; '.join(extra)})" if extra else ""))
        return results

    async def _wait_gone(self, results: list[ServerResult], wait_limit: float) -> None:
        deadline = self.clock() + wait_limit
        pending = {r.id: r for r in results}
        while pending:
            for server_id in list(pending):
                if not await self._io(self.cloud.exists, server_id):
                    pending.pop(server_id).elapsed = self.clock() - self.started
            if not pending:
                return
            if self.clock() > deadline:
                for result in pending.values():
                    result.error = f"still there after {wait_limit:.0f}s"
                return
            await asyncio.sleep(0.5)


def _details(req: Request) -> dict[str, str]:
    return {
        "cloud": req.cloud,
        "prefix": req.prefix,
        "flavor": req.flavor,
        "image": req.image,
        "network": req.network,
        "securityGroup": req.security_group,
    }


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
