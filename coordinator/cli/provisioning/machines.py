"""Machine records through the cluster API: what `enroll` and `unenroll` tell the coordinator.

Writes are read-modify-write with the object's resource version, retried on
Conflict, so two enrollments (or a provisioner and an operator's `apply`)
never lose each other's fields. A record carries no secret: the Machine
validation refuses credential-looking details, and callers pass token ids only.
"""

from __future__ import annotations

import time
from typing import Any

from atoll import errors, kinds
from atoll.v1 import machines_pb2, node_pb2
from coordinator.cli.printers.pods import node_status_text
from coordinator.client.api import Client

MACHINE = kinds.by_name("Machine")
NODE = kinds.by_name("Node")
_SPEC_FIELDS = ("provider_id", "host_name", "node_name", "token_id", "floating_ip")
_STATUS_FIELDS = ("state", "last_error")


class ApiRecorder:
    def __init__(self, client: Client, provider: str = "ironic") -> None:
        self.client = client
        self.provider = provider

    async def get(self, name: str) -> machines_pb2.Machine | None:
        try:
            found = await self.client.get(MACHINE, "", name)
        except errors.NotFound:
            return None
        assert isinstance(found, machines_pb2.Machine)
        return found

    async def record(self, name: str, **changes: Any) -> None:
        """Create or update machine ``name`` with spec/status ``changes`` (field names of the protos)."""
        for _ in range(10):
            current = await self.get(name)
            machine = machines_pb2.Machine()
            if current is not None:
                machine.CopyFrom(current)
            else:
                machine.metadata.name = name
                machine.spec.provider = self.provider
                machine.spec.node_name = name
            for key, value in changes.items():
                if key in _SPEC_FIELDS:
                    setattr(machine.spec, key, value)
                elif key in _STATUS_FIELDS:
                    setattr(machine.status, key, value)
                elif key in ("labels", "details"):
                    target = getattr(machine.spec, key)
                    target.clear()
                    target.update(value)
                elif key == "addresses":
                    del machine.spec.addresses[:]
                    machine.spec.addresses.extend(value)
                else:
                    raise ValueError(f"unknown machine field {key}")
            if current is not None and machine == current:
                return
            machine.status.updated.FromSeconds(int(time.time()))
            try:
                if current is None:
                    await self.client.create(machine)
                else:
                    await self.client.update(machine)
                return
            except (errors.Conflict, errors.AlreadyExists):
                continue
        raise errors.Conflict(f"machine {name} kept changing; try again")

    async def token_id(self, name: str) -> str:
        machine = await self.get(name)
        return machine.spec.token_id if machine is not None else ""

    async def forget(self, name: str) -> None:
        """Delete the Machine and the Atoll node its agent registered (the host is gone)."""
        machine = await self.get(name)
        node_name = (machine.spec.node_name if machine is not None else "") or name
        for info, obj in ((MACHINE, name), (NODE, node_name)):
            try:
                await self.client.delete(info, "", obj)
            except errors.NotFound:
                pass

    async def node_status(self, node_name: str) -> str:
        try:
            node = await self.client.get(NODE, "", node_name)
        except errors.NotFound:
            return ""
        assert isinstance(node, node_pb2.Node)
        return node_status_text(node)
