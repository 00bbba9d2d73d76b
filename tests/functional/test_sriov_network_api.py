"""SriovNetwork through the real API and CLI: admins write it, operators read it, mistakes store nothing."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from atoll import errors, kinds
from coordinator import manifests
from coordinator.client.api import Client
from tests.functional.harness import Cluster
from tests.functional.test_cli import EXAMPLES, cli
from tests.functional.test_security import cert_config

SRIOV_NETWORK = kinds.by_name("SriovNetwork")


async def test_create_get_and_round_trip(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await cli(cluster, capsys, "create", "-f", str(EXAMPLES / "sriov-network.yaml"))
    assert code == 0 and out.strip() == "sriovnetwork/sriov-a created", err
    code, out, _ = await cli(cluster, capsys, "get", "sriovnetworks")
    header, row = out.strip().splitlines()
    assert header.split() == ["NAME", "RESOURCE", "VLAN", "IPAM", "ADDRESSES", "AGE"]
    assert row.split()[:5] == ["sriov-a", "atoll.io/sriov_ens1f0", "100", "host-local", "10.56.217.0/24"]
    code, out, _ = await cli(cluster, capsys, "get", "sriovnetwork", "sriov-a", "-o", "yaml")
    doc = yaml.safe_load(out)
    assert doc["apiVersion"] == "sriovnetwork.openshift.io/v1" and doc["spec"]["vlan"] == 100
    code, out, _ = await cli(cluster, capsys, "apply", "-f", str(EXAMPLES / "sriov-network.yaml"))
    assert out.strip() == "sriovnetwork/sriov-a unchanged"


async def test_a_bad_network_names_the_field_and_stores_nothing(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    doc = yaml.safe_load((EXAMPLES / "sriov-network.yaml").read_text())
    doc["spec"]["vlan"] = 5000
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    code, _, err = await cli(cluster, capsys, "create", "-f", str(bad))
    assert code != 0 and "spec.vlan: must be within 0..4094, got 5000" in err
    assert cluster.client is not None
    items, _ = await cluster.client.list(SRIOV_NETWORK)
    assert items == []


async def test_operators_read_but_do_not_write_sriov_networks(secure: Cluster) -> None:
    (net,) = manifests.load_file(EXAMPLES / "sriov-network.yaml")
    assert secure.client is not None
    async with Client(config=cert_config(secure, "olga", "atoll:operators")) as op:
        with pytest.raises(errors.PermissionDenied, match="may not create sriovnetworks"):
            await op.create(net)
        await secure.client.create(net)
        items, _ = await op.list(SRIOV_NETWORK)
        assert [n.metadata.name for n in items] == ["sriov-a"]  # type: ignore[attr-defined]
