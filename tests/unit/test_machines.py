"""The Machine kind: manifest round trips, validation (never a credential), table rows."""

from __future__ import annotations

import time

import pytest
from google.protobuf import timestamp_pb2

from atoll import errors, validation
from atoll.v1 import machines_pb2, meta_pb2, node_pb2
from coordinator import manifests
from coordinator.api import strategy
from coordinator.cli import printers

NOW = time.time()


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW)


def machine(name: str = "bm-01", **spec: object) -> machines_pb2.Machine:
    values: dict[str, object] = {
        "provider": "ironic",
        "provider_id": "6f1c2f7e-0d6a-4d2e-9d59-1b0f6c8a1e11",
        "host_name": name,
        "node_name": name,
        "token_id": "abc123",
        "labels": {"rack": "r1"},
        "addresses": ["192.0.2.10"],
        "details": {"driver": "ipmi", "bmc": "10.0.0.5"},
    }
    values.update(spec)
    return machines_pb2.Machine(
        metadata=meta_pb2.ObjectMeta(
            name=name, creation_timestamp=timestamp_pb2.Timestamp(seconds=int(NOW - 600))
        ),
        spec=machines_pb2.MachineSpec(**values),  # type: ignore[arg-type]
        status=machines_pb2.MachineStatus(state="active"),
    )


def test_manifest_round_trip() -> None:
    m = machine()
    text = manifests.dumps(manifests.to_dict(m), "yaml")
    assert "kind: Machine" in text and "providerID:" in text
    (back,) = manifests.load_text(text, "m.yaml")
    assert back == m


def test_manifest_with_unknown_field_is_refused() -> None:
    with pytest.raises(manifests.ManifestError, match="bmcPassword"):
        manifests.load_text(
            "apiVersion: v1\nkind: Machine\nmetadata: {name: x}\nspec: {provider: ironic, bmcPassword: x}\n",
            "m.yaml",
        )


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"provider": "vmware"}, "spec.provider"),
        ({"details": {"ipmi_password": "x"}}, "spec.details[ipmi_password]"),
        ({"details": {"join-token": "x"}}, "spec.details[join-token]"),
        ({"addresses": ["not-an-ip"]}, "spec.addresses[0]"),
        ({"node_name": "Bad_Name"}, "spec.nodeName"),
        ({"labels": {"bad key": "v"}}, "spec.labels[bad key]"),
    ],
)
def test_validation(spec: dict[str, object], field: str) -> None:
    problems = validation.validate_machine(machine(**spec))
    assert field in [f for f, _ in problems.items]


def test_api_strategy_keeps_client_status_and_refuses_credentials() -> None:
    s = strategy.STRATEGIES[machines_pb2.Machine]
    m = machine()
    s.prepare_create(m)
    assert m.status.state == "active"
    new = machine()
    new.status.state = "deploying"
    s.prepare_update(new, m)
    assert new.status.state == "deploying" and new.metadata.generation == 0
    with pytest.raises(errors.InvalidArgument, match="credentials"):
        s.prepare_create(machine(details={"bmc_password": "s3cret"}))
    with pytest.raises(errors.InvalidArgument, match="immutable"):
        s.prepare_update(machine(provider="openstack"), m)


def ready_node(name: str, address: str) -> node_pb2.Node:
    return node_pb2.Node(
        metadata=meta_pb2.ObjectMeta(name=name),
        status=node_pb2.NodeStatus(
            conditions=[node_pb2.NodeCondition(type="Ready", status=meta_pb2.CONDITION_STATUS_TRUE)],
            addresses=[node_pb2.NodeAddress(type="InternalIP", address=address)],
        ),
    )


def cells(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("   ") if c.strip()] for line in text.split("\n")]


def test_table_beside_nodes() -> None:
    joined, pending = machine("bm-01"), machine("bm-02", addresses=[], floating_ip="203.0.113.7")
    pending.status.state = "deploying"
    text = printers.render_table(
        machines_pb2.Machine, [joined, pending], False, nodes=[ready_node("bm-01", "10.1.0.5")]
    )
    assert cells(text) == [
        ["NAME", "PROVIDER", "STATE", "NODE", "NODE STATUS", "ADDRESS", "AGE"],
        ["bm-01", "ironic", "active", "bm-01", "Ready", "10.1.0.5", "10m"],
        ["bm-02", "ironic", "deploying", "<none>", "<not joined>", "203.0.113.7", "10m"],
    ]


def test_table_without_nodes_and_wide() -> None:
    m = machine()
    m.status.last_error = "Failed to prepare to deploy: boom\nmore"
    rows = cells(printers.render_table(machines_pb2.Machine, [m], True))
    assert rows[0][-4:] == ["PROVIDER ID", "HOST NAME", "LABELS", "LAST ERROR"]
    assert rows[1][3:6] == ["bm-01", "<unknown>", "192.0.2.10"]
    assert rows[1][-1] == "Failed to prepare to deploy: boom"
