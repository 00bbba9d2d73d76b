"""The Machine kind: a host Atoll provisioned, as `coordinator enroll`/`provision` record it.

    apiVersion: v1
    kind: Machine
    metadata: {name: bm-01}
    spec:
      provider: ironic                 # or openstack
      providerID: 6f1c...              # Ironic node UUID / Nova server ID
      hostName: bm-01
      nodeName: bm-01                  # the Atoll node its agent registers as
      tokenID: abc123                  # the join token's id, never its secret
      labels: {rack: r1}
      addresses: [192.0.2.10]
      details: {driver: ipmi, bmc: 10.0.0.5}
    status:
      state: active                    # Ironic provision state / Nova status
      lastError: ""

The provisioners write these; operators read them (`get machines`) and may
export and re-create them. Status is read back too, for round trips.
"""

from __future__ import annotations

from typing import Any

from atoll import validation
from atoll.v1 import machines_pb2
from coordinator.manifests import meta
from coordinator.manifests.reader import Schema, Value
from coordinator.manifests.registry import Codec, Shape

MACHINE = Schema.of(known=("apiVersion", "kind", "metadata", "spec", "status"))
MACHINE_SPEC = Schema.of(
    known=(
        "provider",
        "providerID",
        "hostName",
        "nodeName",
        "tokenID",
        "labels",
        "addresses",
        "floatingIP",
        "details",
    )
)
MACHINE_STATUS = Schema.of(known=("state", "lastError", "updated"))

_SPEC_STRINGS = (
    ("provider", "provider"),
    ("providerID", "provider_id"),
    ("hostName", "host_name"),
    ("nodeName", "node_name"),
    ("tokenID", "token_id"),
    ("floatingIP", "floating_ip"),
)


def decode_v1(root: Value) -> machines_pb2.Machine:
    f = root.fields(MACHINE)
    machine = machines_pb2.Machine(metadata=meta.decode(f.get("metadata")), spec=machines_pb2.MachineSpec())
    sf = f.child_fields("spec", MACHINE_SPEC)
    spec = machine.spec
    for key, attr in _SPEC_STRINGS:
        if v := sf.get(key):
            setattr(spec, attr, v.string())
    if v := sf.get("labels"):
        spec.labels.update(v.string_map())
    if v := sf.get("addresses"):
        spec.addresses.extend(v.strings())
    if v := sf.get("details"):
        spec.details.update(v.string_map())
    st = f.child_fields("status", MACHINE_STATUS)
    if v := st.get("state"):
        machine.status.state = v.string()
    if v := st.get("lastError"):
        machine.status.last_error = v.string()
    if v := st.get("updated"):
        machine.status.updated.CopyFrom(v.timestamp())
    return machine


def encode(machine: machines_pb2.Machine) -> dict[str, Any]:
    s = machine.spec
    spec: dict[str, Any] = {key: getattr(s, attr) for key, attr in _SPEC_STRINGS if getattr(s, attr)}
    if s.labels:
        spec["labels"] = dict(sorted(s.labels.items()))
    if s.addresses:
        spec["addresses"] = list(s.addresses)
    if s.details:
        spec["details"] = dict(sorted(s.details.items()))
    out: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Machine",
        "metadata": meta.encode(machine.metadata),
        "spec": spec,
    }
    status: dict[str, Any] = {}
    if machine.status.state:
        status["state"] = machine.status.state
    if machine.status.last_error:
        status["lastError"] = machine.status.last_error
    if machine.status.HasField("updated"):
        status["updated"] = meta.encode_time(machine.status.updated)
    if status:
        out["status"] = status
    return out


CODEC = Codec(
    kind="Machine",
    message=machines_pb2.Machine,
    shapes={"v1": Shape(decode_v1)},
    encode=encode,
    validate=validation.validate_machine,
)
