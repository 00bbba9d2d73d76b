"""`coordinator enroll`/`unenroll` against a real Ironic (fake-hardware) and a real coordinator.

The CLI commands run in-process on the test's event loop (they reach Ironic
from worker threads), beside the in-process coordinator of the functional
harness; one test runs the installed `coordinator` script as a subprocess.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from atoll import kinds
from atoll.v1 import auth_pb2, machines_pb2
from coordinator import manifests
from coordinator.cli import main as cli_main
from coordinator.cli import printers
from coordinator.cli.provisioning import cloudinit
from tests.functional.harness import Cluster, FakeNode, eventually
from tests.integration.ironic.harness import INSTALL_TIMEOUT, Ironic, venv_dir

PASSWORD = "bmc-Pa55word-never-shown"
ROOT = pathlib.Path(__file__).resolve().parents[3]
MACHINE = kinds.by_name("Machine")
# The first test of a run on a new machine also installs Ironic (session fixture): allow for it.
INSTALLED = (venv_dir() / ".atoll-complete").exists()
pytestmark = [
    pytest.mark.timeout(180 if INSTALLED else 180 + INSTALL_TIMEOUT),
    # openstacksdk's deprecations of its own internals, raised from inside the SDK on every call.
    pytest.mark.filterwarnings("ignore::openstack.warnings.OpenStackDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]


@pytest.fixture
def password_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "bmc.pass"
    path.write_text(PASSWORD + "\n")
    return path


async def token(cluster: Cluster, token_id: str) -> auth_pb2.Token:
    assert cluster.client is not None
    found = await cluster.client.get(kinds.by_name("Token"), "", token_id)
    assert isinstance(found, auth_pb2.Token)
    return found


async def join_tokens(cluster: Cluster) -> list[str]:
    """Ids of the enrollment tokens (not the harness's own "test nodes" token)."""
    assert cluster.client is not None
    items, _ = await cluster.client.list(kinds.by_name("Token"))
    return sorted(t.metadata.name for t in items if t.spec.description.startswith("enroll "))  # type: ignore[attr-defined]


def mac(name: str, nic: int) -> str:
    """Distinct MACs per host: the session's Ironic keeps every test's ports."""
    digest = hashlib.sha256(name.encode()).digest()
    return "52:54:" + ":".join(f"{b:02x}" for b in digest[:3]) + f":{nic:02x}"


def enroll_argv(
    ironic: Ironic, cluster: Cluster, name: str, password_file: pathlib.Path, *extra: str
) -> list[str]:
    return [
        "enroll",
        name,
        "--driver",
        "fake-hardware",
        "--bmc",
        "10.0.0.5",
        "--bmc-user",
        "admin",
        "--bmc-password-file",
        str(password_file),
        "--mac",
        mac(name, 0),
        "--mac",
        mac(name, 1),
        "--property",
        "cpus=8",
        "--property",
        "cpu_arch=x86_64",
        "--sriov-pf",
        "ens1f0:8",
        "--labels",
        "rack=r1,atoll.io/provider=ironic",
        "--add-host",
        "coordinator:127.0.0.1",
        "--ironic-url",
        ironic.url,
        "--poll-interval",
        "0.2",
        *extra,
    ]


def image_flags(image: str = "http://127.0.0.1:9/atomic.qcow2") -> list[str]:
    return ["--image", image, "--image-checksum", "sha256:" + "ab" * 32]


async def run(cluster: Cluster, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """One CLI command, in-process, against the cluster's coordinator."""
    args = cli_main.build_parser().parse_args(argv)
    assert cluster.client is not None
    code = await cli_main.runner(args.command)(cluster.client, args)
    out, err = capsys.readouterr()
    return code, out, err


def states(out: str, name: str) -> list[str]:
    """The state column of the progress lines for ``name`` ("  1.2s  bm-01  deploying -> active")."""
    found = []
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].endswith("s") and parts[1] == name:
            found.append(parts[2].split(" -> ")[0])
    return found


def files_containing(root: pathlib.Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


async def machine(cluster: Cluster, name: str) -> machines_pb2.Machine:
    assert cluster.client is not None
    found = await cluster.client.get(MACHINE, "", name)
    assert isinstance(found, machines_pb2.Machine)
    return found


async def test_enroll_from_nothing_to_active_and_the_agent_joins(
    ironic: Ironic,
    cluster: Cluster,
    password_file: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: pathlib.Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    argv = enroll_argv(
        ironic, cluster, "bm-01", password_file, *image_flags(), "--wait", "--join-timeout", "60"
    )
    task = asyncio.create_task(run(cluster, argv, capsys))

    # The host "boots": once Ironic holds the configdrive and the node is active, an agent
    # built from the rendered config by the agent's own loader starts and joins.
    async def deployed() -> dict[str, Any] | None:
        if task.done():
            return {"ended": task.result()}
        try:
            row = ironic.node_row("bm-01")
        except KeyError:
            return None
        return row if row["provision_state"] == "active" else None

    row = await eventually(deployed, timeout=60, interval=0.2, what="bm-01 active in Ironic")
    assert "ended" not in row, f"enroll ended before the host booted: {row}"
    configdrive = row["instance_info"]["configdrive"]
    user_data = configdrive["user_data"]
    assert user_data.startswith("#cloud-config\n")
    doc = cloudinit.parse(user_data)
    assert doc["hostname"] == "bm-01"
    assert {"path": "/etc/hosts", "append": True, "content": "127.0.0.1 coordinator\n"} in doc["write_files"]
    values = cloudinit.agent_config_of(user_data)
    (token_id,) = await join_tokens(cluster)
    assert values["join_token"].startswith(token_id + ".")
    assert cluster.client is not None
    info = await cluster.client.cluster_info()
    assert values["ca_hash"] == info.ca_hash and values["join_address"] == info.token_server
    issued = await token(cluster, token_id)
    assert issued.spec.max_uses == 1 and issued.spec.HasField("expiration")  # single use, expires
    cfg = cloudinit.check_agent_config(values)  # atoll.agentconfig.from_mapping: the agent's own loader
    assert cfg.coordinator == info.server
    assert cfg.sriov_pfs == ["ens1f0:8"]
    assert cfg.labels == {"rack": "r1", "atoll.io/provider": "ironic"}
    host = FakeNode(tmp_path, cfg.node_name, cluster.coordinator.port)
    # Only what differs on a test machine: where state lives, loopback addresses, fast timers.
    host.config = dataclasses.replace(
        cfg,
        state_dir=str(tmp_path / "bm-01-agent"),
        listen="127.0.0.1:0",
        node_ip="127.0.0.1",
        relist_interval=0.05,
        heartbeat_interval=0.2,
    )
    host.agent = host._new_agent()
    await host.start()
    try:
        code, out, err = await asyncio.wait_for(task, 90)
        assert code == 0, err
        seen = states(out, "bm-01")
        assert seen[0] == "enroll" and "manageable" in seen and "available" in seen
        assert seen.index("deploying") < seen.index("active") < seen.index("node Ready")
        assert "bm-01: enrolled, active in" in out and "agent Ready" in out

        m = await machine(cluster, "bm-01")
        assert m.spec.provider == "ironic" and m.spec.provider_id == row["uuid"]
        assert m.status.state == "active" and m.spec.token_id == token_id
        assert m.spec.details["driver"] == "fake-hardware"
        used = await token(cluster, token_id)  # the agent joined with it: used up
        assert used.status.uses == 1 and list(used.status.joined_nodes) == ["bm-01"]

        # `get machines`: the host beside its node.
        code, out, _ = await run(cluster, ["get", "machines"], capsys)
        assert code == 0
        header, line = out.strip().splitlines()
        assert header.split() == ["NAME", "PROVIDER", "STATE", "NODE", "NODE", "STATUS", "ADDRESS", "AGE"]
        assert line.split()[:6] == ["bm-01", "ironic", "active", "bm-01", "Ready", "127.0.0.1"]

        # The BMC password: sent to Ironic (masked by its API), nowhere on our side.
        assert ironic.node_row("bm-01")["driver_info"]["fake_password"] == PASSWORD
        assert ironic.get("/v1/nodes/bm-01")["driver_info"]["fake_password"] == "******"
        assert PASSWORD not in caplog.text and PASSWORD not in out + err
        assert PASSWORD not in manifests.dumps(manifests.to_dict(m), "json")
        leaks = await asyncio.to_thread(files_containing, cluster.coordinator.cfg.data_path, PASSWORD)
        assert not leaks  # the store (SQLite + WAL), certificates, audit log
        # Nor the join token's secret in our logs.
        assert values["join_token"] not in caplog.text
    finally:
        await host.stop()


async def test_rerun_on_an_active_node_is_idempotent_and_a_different_host_is_refused(
    ironic: Ironic,
    cluster: Cluster,
    password_file: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = enroll_argv(ironic, cluster, "bm-02", password_file, *image_flags())
    code, out, err = await run(cluster, argv, capsys)
    assert code == 0, err
    uuid = ironic.node_row("bm-02")["uuid"]
    issued = await join_tokens(cluster)

    code, out, err = await run(cluster, argv, capsys)
    assert code == 0, err
    assert "already active: nothing to do" in out
    assert states(out, "bm-02") == ["active"]
    assert await join_tokens(cluster) == issued  # no new token
    assert ironic.node_row("bm-02")["uuid"] == uuid

    other = list(argv)
    other[other.index("10.0.0.5")] = "10.0.0.99"
    code, out, err = await run(cluster, other, capsys)
    assert code == 1
    assert "already exists in Ironic with BMC 10.0.0.5, not 10.0.0.99" in err
    assert "hint: `coordinator unenroll bm-02` first" in err


async def test_wrong_driver_stops_with_ironics_error(
    ironic: Ironic,
    cluster: Cluster,
    password_file: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = enroll_argv(ironic, cluster, "bm-03", password_file)
    argv[argv.index("fake-hardware")] = "ipmi"
    code, out, err = await run(cluster, argv, capsys)
    assert code == 1
    assert "No conductor service registered which supports driver ipmi" in err
    assert PASSWORD not in out + err
    with pytest.raises(KeyError):
        ironic.node_row("bm-03")
    assert not await join_tokens(cluster)


async def test_deploy_failure_stops_with_last_error_and_retry_resumes(
    ironic: Ironic,
    cluster: Cluster,
    password_file: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The `direct` deploy interface checks the image URL for real: nothing listens on port 9.
    argv = enroll_argv(
        ironic, cluster, "bm-04", password_file, *image_flags(), "--interface", "deploy=direct"
    )
    code, out, err = await run(cluster, argv, capsys)
    assert code == 1
    assert states(out, "bm-04")[-1] == "deploy failed"
    assert "bm-04: deploy failed: Failed to prepare to deploy: Validation of image href" in err
    assert "hint: deployment failed: check --image" in err
    m = await machine(cluster, "bm-04")
    assert m.status.state == "deploy failed" and "Validation of image href" in m.status.last_error
    first_token = m.spec.token_id
    assert (await token(cluster, first_token)).spec.revoked  # its configdrive sits in Ironic's database

    # Without --retry, a node an earlier run left failed stays as it is.
    code, out, err = await run(cluster, argv, capsys)
    assert code == 1
    assert "left in deploy failed by an earlier run" in err and "--retry" in err

    # The operator fixes the cause in Ironic; --retry resumes from `deploy failed`.
    node = ironic.node_row("bm-04")["uuid"]
    await asyncio.to_thread(_patch_deploy_interface, ironic, node, "fake")
    code, out, err = await run(cluster, [*argv, "--retry"], capsys)
    assert code == 0, err
    seen = states(out, "bm-04")
    assert seen[0] == "deploy failed" and seen[-1] == "active" and "deploying" in seen
    m = await machine(cluster, "bm-04")
    assert m.status.state == "active" and not m.status.last_error
    assert m.spec.token_id != first_token and not (await token(cluster, m.spec.token_id)).spec.revoked


def _patch_deploy_interface(ironic: Ironic, uuid: str, value: str) -> None:
    import openstack.connection

    conn = openstack.connection.Connection(auth_type="none", baremetal_endpoint_override=ironic.url)
    try:
        # Ironic changes interfaces of a failed node only in maintenance, as an operator would.
        conn.baremetal.set_node_maintenance(uuid, reason="fixing the deploy interface")
        conn.baremetal.patch_node(uuid, [{"op": "replace", "path": "/deploy_interface", "value": value}])
        conn.baremetal.unset_node_maintenance(uuid)
    finally:
        conn.close()


async def test_inventory_enrolls_concurrently_and_json_output_is_quiet(
    ironic: Ironic,
    cluster: Cluster,
    password_file: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: pathlib.Path,
) -> None:
    inventory = {
        "defaults": {
            "driver": "fake-hardware",
            "bmcUser": "admin",
            "bmcPasswordFile": str(password_file),
            "labels": {"rack": "r2"},
        },
        "hosts": [
            {
                "name": f"inv-{i}",
                "bmc": f"10.0.1.{i}",
                "macs": [f"52:54:00:00:01:0{i}"],
                "properties": {"cpus": 4},
            }
            for i in range(1, 4)
        ],
    }
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump(inventory))
    argv = [
        "enroll",
        "-f",
        str(path),
        "--parallel",
        "2",
        "-o",
        "json",
        "--ironic-url",
        ironic.url,
        "--poll-interval",
        "0.2",
        "--interface",
        "inspect=no-inspect",
    ]
    code, out, err = await run(cluster, argv, capsys)
    assert code == 0, err
    results = json.loads(out)  # nothing but the JSON on stdout
    assert [r["name"] for r in results] == ["inv-1", "inv-2", "inv-3"]
    assert all(r["ok"] and r["state"] == "available" for r in results)
    assert all("inspecting" not in [t["state"] for t in r["transitions"]] for r in results)
    assert results[0]["note"] == "no --image: left available"
    for i in range(1, 4):
        row = ironic.node_row(f"inv-{i}")
        assert row["properties"] == {"cpus": 4} and row["inspect_interface"] == "no-inspect"


async def test_unenroll_undeploys_deletes_and_revokes(
    ironic: Ironic,
    cluster: Cluster,
    password_file: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = await run(
        cluster, enroll_argv(ironic, cluster, "bm-05", password_file, *image_flags()), capsys
    )
    assert code == 0, err
    token_id = (await machine(cluster, "bm-05")).spec.token_id
    argv = ["unenroll", "bm-05", "--ironic-url", ironic.url, "--poll-interval", "0.2"]
    code, out, err = await run(cluster, argv, capsys)
    assert code == 0, err
    seen = states(out, "bm-05")
    assert seen[0] == "active" and ("deleting" in seen or "available" in seen)
    assert "bm-05: unenrolled, deleted" in out
    with pytest.raises(KeyError):
        ironic.node_row("bm-05")
    assert (await token(cluster, token_id)).spec.revoked
    assert cluster.client is not None
    items, _ = await cluster.client.list(MACHINE)
    assert "bm-05" not in [i.metadata.name for i in items]  # type: ignore[attr-defined]
    # Unenrolling what is gone is not an error.
    code, out, err = await run(cluster, argv, capsys)
    assert code == 0 and "no such node in Ironic" in out


async def test_installed_cli_prints_progress_lines(
    ironic: Ironic, cluster: Cluster, password_file: pathlib.Path
) -> None:
    """The `coordinator` entry point itself, as an operator runs it (its admin.conf, real tokens)."""
    argv = enroll_argv(ironic, cluster, "bm-06", password_file, *image_flags())
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "coordinator.cli.main",
        *cluster.cli_args(),
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 120)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, err
    seen = states(out, "bm-06")
    assert seen[0] == "enroll" and seen[-1] == "active"
    elapsed = [float(line.split()[0].rstrip("s")) for line in out.splitlines() if " bm-06 " in line]
    assert elapsed == sorted(elapsed)
    assert PASSWORD not in out + err
    assert printers.render_table(machines_pb2.Machine, [await machine(cluster, "bm-06")], False)


async def test_a_mac_another_node_owns_is_refused_before_anything_is_created(
    ironic: Ironic, cluster: Cluster, password_file: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = enroll_argv(ironic, cluster, "mac-a", password_file)
    code, _, err = await run(cluster, first, capsys)
    assert code == 0, err
    second = enroll_argv(ironic, cluster, "mac-b", password_file)
    second[second.index(mac("mac-b", 1))] = mac("mac-a", 1)
    code, _, err = await run(cluster, second, capsys)
    assert code == 1
    owner = ironic.node_row("mac-a")["uuid"]
    assert f"MAC {mac('mac-a', 1)} is already registered to Ironic node {owner}" in err
    with pytest.raises(KeyError):
        ironic.node_row("mac-b")


@pytest.fixture(scope="module")
def basic_ironic(ironic: Ironic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ironic]:
    """A second Ironic behind http_basic (the first one is noauth), for the credentials path."""
    server = Ironic(
        ironic.venv, tmp_path_factory.mktemp("ironic-basic"), basic_auth=("atoll", "ironic-Secret-1")
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_http_basic_credentials_from_a_file(
    basic_ironic: Ironic,
    cluster: Cluster,
    password_file: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: pathlib.Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = tmp_path / "ironic.pass"
    secret.write_text("ironic-Secret-1\n")
    argv = enroll_argv(basic_ironic, cluster, "basic-1", password_file, "--interface", "inspect=no-inspect")
    argv += ["--ironic-auth", "http_basic", "--ironic-user", "atoll", "--ironic-password-file", str(secret)]
    code, out, err = await run(cluster, argv, capsys)
    assert code == 0, err
    assert states(out, "basic-1")[-1] == "available"

    secret.write_text("wrong\n")
    code, out, err = await run(cluster, [*argv[:1], "basic-2", *argv[2:]], capsys)
    assert code == 1
    assert (
        "basic-2: FAILED after" in err
        and "Ironic refused the credentials: Incorrect username or password" in err
    )
    assert "ironic-Secret-1" not in caplog.text + out + err and PASSWORD not in caplog.text
