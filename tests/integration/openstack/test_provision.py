"""`coordinator provision`/`deprovision` against a real OpenStack (tests/integration/openstack) and a real coordinator.

The CLI commands run in-process on the test's event loop (openstacksdk runs in
worker threads) beside the in-process coordinator of the functional harness,
as the member user of the harness's cloud; the checks read the cloud as
admin (a member sees neither user_data nor port bindings). Every test uses its
own name prefix and security group, since the cloud lives for the whole run.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import os
import pathlib
import re
import sys
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from atoll import kinds
from atoll.v1 import auth_pb2, machines_pb2
from coordinator.cli import main as cli_main
from coordinator.cli.provisioning import cloudinit
from tests.functional.harness import Cluster, FakeNode, eventually
from tests.integration.openstack import controlplane
from tests.integration.openstack.controlplane import ControlPlane

pytestmark = [
    # The session fixture's first start may install the services' venv (about 1.5 min).
    pytest.mark.timeout(600),
    pytest.mark.filterwarnings("ignore::openstack.warnings.OpenStackDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
]
MACHINE = kinds.by_name("Machine")
TOKEN = kinds.by_name("Token")
ROOT = pathlib.Path(__file__).resolve().parents[3]


def public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def provision_argv(prefix: str, *extra: str) -> list[str]:
    return [
        "provision",
        *("--os-cloud", controlplane.MEMBER_CLOUD),
        *("--flavor", controlplane.FLAVOR, "--image", controlplane.IMAGE),
        *("--network", controlplane.NETWORK, "--name-prefix", prefix),
        *("--security-group", f"sg-{prefix}", "--poll-interval", "0.2"),
        *extra,
    ]


async def run(cluster: Cluster, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    args = cli_main.build_parser().parse_args(argv)
    assert cluster.client is not None
    code = await cli_main.runner(args.command)(cluster.client, args)
    out, err = capsys.readouterr()
    return code, out, err


def servers(plane: ControlPlane, prefix: str) -> dict[str, Any]:
    """The prefix's servers by name, as admin sees them (user_data included)."""
    admin = plane.connect()
    pattern = re.compile(rf"^{re.escape(prefix)}-\d+$")
    found = admin.compute.servers(details=True, all_projects=True, name=f"^{prefix}-")
    return {s.name: admin.compute.get_server(s.id) for s in found if pattern.match(s.name)}


def floating_ips(plane: ControlPlane) -> dict[str, str]:
    """Every floating IP: address -> port id."""
    return {f.floating_ip_address: f.port_id for f in plane.connect().network.ips()}


async def machines(cluster: Cluster, prefix: str) -> dict[str, machines_pb2.Machine]:
    assert cluster.client is not None
    items, _ = await cluster.client.list(MACHINE)
    return {
        m.metadata.name: m
        for m in items
        if isinstance(m, machines_pb2.Machine) and m.spec.details.get("prefix") == prefix
    }


async def tokens(cluster: Cluster) -> dict[str, auth_pb2.Token]:
    assert cluster.client is not None
    items, _ = await cluster.client.list(TOKEN)
    return {t.metadata.name: t for t in items if isinstance(t, auth_pb2.Token)}


def user_data(server: Any) -> str:
    return base64.b64decode(server.user_data).decode()


def progress(out: str, name: str) -> list[str]:
    """What the progress lines say about `name` ("   3.2s  t1-1  BUILD (spawning)")."""
    found = []
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and re.match(r"^\d+\.\ds$", parts[0]) and parts[1] == name:
            found.append(parts[2])
    return found


async def test_provision_boots_records_and_a_rerun_creates_nothing(
    openstack_cloud: ControlPlane,
    cluster: Cluster,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: pathlib.Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    plane = openstack_cloud
    key = tmp_path / "id.pub"
    pub = public_key()
    key.write_text(pub + " operator@atoll\n")
    image = tmp_path / "atomic-t1.img"
    image.write_bytes(b"\0" * 4096)
    argv = provision_argv(
        "t1",
        *("--count", "2", "--floating-ip-pool", controlplane.EXTERNAL_NETWORK),
        *("--key-name", "atoll-t1", "--public-key-file", str(key)),
        *("--labels", "zone=az1,atoll.io/pool=t1"),
    )
    argv[argv.index(controlplane.IMAGE)] = "atomic-t1"
    argv += ["--image-file", str(image)]
    fips_before = await asyncio.to_thread(floating_ips, plane)

    code, out, err = await run(cluster, argv, capsys)
    assert code == 0, err
    lines = progress(out, "t1-1")
    assert lines[0].startswith("created (") and "ACTIVE" in lines and "BUILD" in " ".join(lines)
    assert any(line.startswith("floating IP 203.0.113.") for line in lines)
    assert progress(out, "atomic-t1") == ["image uploaded"]
    assert progress(out, "atoll-t1") == ["keypair created"]
    assert progress(out, "sg-t1") == ["security group: 4 rules added"]
    assert "t1-1: created ACTIVE" in out and "t1-2: created ACTIVE" in out

    found = await asyncio.to_thread(servers, plane, "t1")
    assert sorted(found) == ["t1-1", "t1-2"]
    assert cluster.client is not None
    info = await cluster.client.cluster_info()
    recorded = await machines(cluster, "t1")
    issued = await tokens(cluster)
    fips = await asyncio.to_thread(floating_ips, plane)
    assert len(fips) == len(fips_before) + 2
    for name, server in found.items():
        assert server.status == "ACTIVE" and server.key_name == "atoll-t1"
        assert [g["name"] for g in server.security_groups] == ["sg-t1"]
        text = user_data(server)
        values = cloudinit.agent_config_of(text)
        token_id = server.metadata["atoll-token-id"]
        assert values["join_token"].startswith(token_id + ".")
        # Byte for byte what the renderer makes of this host's settings.
        assert text == cloudinit.render(
            cloudinit.HostConfig(
                hostname=name,
                coordinator=info.server,
                join_token=values["join_token"],
                ca_hash=info.ca_hash,
                labels={"zone": "az1", "atoll.io/pool": "t1"},
                join_address=info.token_server,
            )
        )
        assert cloudinit.parse(text)["hostname"] == name
        cfg = cloudinit.check_agent_config(values)  # atoll.agentconfig.from_mapping
        assert cfg.node_name == name and cfg.labels == {"zone": "az1", "atoll.io/pool": "t1"}
        assert cfg.coordinator == info.server and cfg.ca_hash == info.ca_hash
        token = issued[token_id]
        assert not token.spec.revoked and token.spec.max_uses == 1 and token.spec.HasField("expiration")
        # The secret is in the user-data only: not in our output or logs.
        assert values["join_token"] not in out + err + caplog.text
        assert server.user_data not in caplog.text  # keystoneauth's DEBUG request bodies

        machine = recorded[name]
        assert machine.spec.provider == "openstack" and machine.spec.provider_id == server.id
        assert machine.spec.host_name == name and machine.spec.node_name == name
        assert machine.spec.token_id == token_id and machine.status.state == "ACTIVE"
        assert machine.spec.floating_ip in fips and machine.spec.floating_ip not in fips_before
        assert list(machine.spec.addresses) and machine.spec.addresses[0].startswith("10.20.0.")
        assert dict(machine.spec.labels) == {"zone": "az1", "atoll.io/pool": "t1"}
        assert machine.spec.details["cloud"] == controlplane.MEMBER_CLOUD

    admin = plane.connect()
    group = admin.network.find_security_group("sg-t1")
    rules = {
        (r.direction, r.protocol, r.port_range_min, r.port_range_max, r.remote_ip_prefix, r.remote_group_id)
        for r in admin.network.security_group_rules(security_group_id=group.id)
        if r.protocol is not None
    }
    port = int(info.server.rpartition(":")[2])
    assert rules == {
        ("ingress", "tcp", 10250, 10250, "127.0.0.1/32", None),
        ("ingress", "udp", 8472, 8472, None, group.id),
        ("ingress", "icmp", None, None, "0.0.0.0/0", None),
        ("egress", "tcp", port, port, "127.0.0.1/32", None),
    }
    keypair = plane.connect(controlplane.MEMBER_CLOUD).compute.find_keypair("atoll-t1")
    assert keypair is not None and keypair.public_key.split()[:2] == pub.split()

    # The same command again: nothing new anywhere.
    code, out, err = await run(cluster, argv, capsys)
    assert code == 0, err
    assert "t1-1: kept ACTIVE" in out and "t1-2: kept ACTIVE" in out and "created" not in out
    assert progress(out, "sg-t1") == [] and progress(out, "atomic-t1") == []
    again = await asyncio.to_thread(servers, plane, "t1")
    assert {n: s.id for n, s in again.items()} == {n: s.id for n, s in found.items()}
    assert await asyncio.to_thread(floating_ips, plane) == fips
    assert sorted(await tokens(cluster)) == sorted(issued)
    group_rules = list(admin.network.security_group_rules(security_group_id=group.id))
    assert len([r for r in group_rules if r.protocol is not None]) == 4
    assert len(list(admin.image.images(name="atomic-t1"))) == 1

    # The user-data joins: an agent built from t1-1's config by the agent's loader.
    values = cloudinit.agent_config_of(user_data(found["t1-1"]))
    cfg = cloudinit.check_agent_config(values)
    host = FakeNode(tmp_path, cfg.node_name, cluster.coordinator.port)
    host.config = dataclasses.replace(
        cfg,
        state_dir=str(tmp_path / "t1-1-agent"),
        listen="127.0.0.1:0",
        node_ip="127.0.0.1",
        relist_interval=0.05,
        heartbeat_interval=0.2,
    )
    host.agent = host._new_agent()
    await host.start()
    try:

        async def joined() -> auth_pb2.Token | None:
            token = (await tokens(cluster))[found["t1-1"].metadata["atoll-token-id"]]
            return token if list(token.status.joined_nodes) == ["t1-1"] else None

        await eventually(joined, timeout=30, what="t1-1's agent joins with its token")

        # `get machines`: the server beside the node its agent registered.
        async def listed() -> list[str]:
            code, out, _ = await run(cluster, ["get", "machines"], capsys)
            rows = {line.split()[0]: line.split() for line in out.strip().splitlines()[1:]}
            return rows["t1-1"] if code == 0 and rows["t1-1"][4] == "Ready" else []

        row = await eventually(listed, timeout=30, what="t1-1 Ready in get machines")
        assert row[:5] == ["t1-1", "openstack", "ACTIVE", "t1-1", "Ready"]
    finally:
        await host.stop()


async def test_ensure_scales_the_set_up_and_down(
    openstack_cloud: ControlPlane, cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    plane = openstack_cloud
    code, out, err = await run(cluster, provision_argv("t2", "--ensure", "1", "-o", "json"), capsys)
    assert code == 0, err
    doc = json.loads(out)  # quiet: nothing but the JSON document
    assert doc["ok"] and [s["name"] for s in doc["servers"]] == ["t2-1"]
    assert doc["servers"][0]["status"] == "ACTIVE" and doc["servers"][0]["action"] == "created"
    first = (await asyncio.to_thread(servers, plane, "t2"))["t2-1"].id

    code, out, err = await run(cluster, provision_argv("t2", "--ensure", "3"), capsys)
    assert code == 0, err
    assert "t2-1: kept" in out and "t2-2: created" in out and "t2-3: created" in out
    now = await asyncio.to_thread(servers, plane, "t2")
    assert sorted(now) == ["t2-1", "t2-2", "t2-3"] and now["t2-1"].id == first
    assert sorted(await machines(cluster, "t2")) == ["t2-1", "t2-2", "t2-3"]
    dropped = {n: now[n].metadata["atoll-token-id"] for n in ("t2-2", "t2-3")}

    code, out, err = await run(cluster, provision_argv("t2", "--ensure", "1", "-o", "json"), capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert sorted(r["name"] for r in doc["removed"]) == ["t2-2", "t2-3"]
    assert [s["name"] for s in doc["servers"]] == ["t2-1"] and doc["servers"][0]["action"] == "kept"
    left = await asyncio.to_thread(servers, plane, "t2")
    assert sorted(left) == ["t2-1"] and left["t2-1"].id == first
    assert sorted(await machines(cluster, "t2")) == ["t2-1"]
    issued = await tokens(cluster)
    assert all(issued[t].spec.revoked for t in dropped.values())
    assert not issued[left["t2-1"].metadata["atoll-token-id"]].spec.revoked

    # --count never removes: asking for fewer keeps what is there.
    code, out, err = await run(cluster, provision_argv("t2", "--count", "0"), capsys)
    assert code == 0, err
    assert "t2-1: kept" in out
    await run(cluster, ["deprovision", "--os-cloud", controlplane.MEMBER_CLOUD, "--all-from", "t2"], capsys)


async def test_deprovision_deletes_servers_floating_ips_and_revokes_tokens(
    openstack_cloud: ControlPlane, cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    plane = openstack_cloud
    argv = provision_argv("t3", "--count", "2", "--floating-ip-pool", controlplane.EXTERNAL_NETWORK)
    code, out, err = await run(cluster, argv, capsys)
    assert code == 0, err
    found = await asyncio.to_thread(servers, plane, "t3")
    recorded = await machines(cluster, "t3")
    fip = {n: m.spec.floating_ip for n, m in recorded.items()}
    token_of = {n: s.metadata["atoll-token-id"] for n, s in found.items()}
    assert all(fip.values())

    deprovision = ["deprovision", "--os-cloud", controlplane.MEMBER_CLOUD]
    code, out, err = await run(cluster, [*deprovision, "t3-1"], capsys)
    assert code == 0, err
    assert f"floating IP {fip['t3-1']} released" in out and f"join token {token_of['t3-1']} revoked" in out
    left = await asyncio.to_thread(servers, plane, "t3")
    assert sorted(left) == ["t3-2"]
    fips = await asyncio.to_thread(floating_ips, plane)
    assert fip["t3-1"] not in fips and fip["t3-2"] in fips
    assert sorted(await machines(cluster, "t3")) == ["t3-2"]
    assert (await tokens(cluster))[token_of["t3-1"]].spec.revoked

    code, out, err = await run(cluster, [*deprovision, "--all-from", "t3"], capsys)
    assert code == 0, err
    assert await asyncio.to_thread(servers, plane, "t3") == {}
    assert fip["t3-2"] not in await asyncio.to_thread(floating_ips, plane)
    assert await machines(cluster, "t3") == {}
    issued = await tokens(cluster)
    assert all(issued[t].spec.revoked for t in token_of.values())

    # Again: nothing left to do, and that is not an error.
    code, out, err = await run(cluster, [*deprovision, "--all-from", "t3"], capsys)
    assert code == 0 and out.strip() == "", out + err
    code, out, err = await run(cluster, [*deprovision, "t3-1"], capsys)
    assert code == 0 and "t3-1: already gone" in out, out + err


async def test_a_failed_boot_is_reported_recorded_and_replaced_by_the_next_run(
    openstack_cloud: ControlPlane, cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    plane = openstack_cloud
    argv = provision_argv("t4", "--count", "1")
    argv[argv.index(controlplane.FLAVOR)] = controlplane.HUGE_FLAVOR
    code, out, err = await run(cluster, argv, capsys)
    assert code == 1
    assert "t4-1: FAILED: boot failed:" in err and "No valid host" in err
    assert "ERROR" in progress(out, "t4-1")
    failed = (await asyncio.to_thread(servers, plane, "t4"))["t4-1"]
    recorded = (await machines(cluster, "t4"))["t4-1"]
    assert recorded.status.state == "ERROR" and "No valid host" in recorded.status.last_error
    bad_token = failed.metadata["atoll-token-id"]

    code, out, err = await run(cluster, provision_argv("t4", "--count", "1"), capsys)
    assert code == 0, err
    assert any(line.startswith("ERROR (") and line.endswith("replacing it") for line in progress(out, "t4-1"))
    assert "t4-1: replaced DELETED" in out and "t4-1: created ACTIVE" in out
    now = (await asyncio.to_thread(servers, plane, "t4"))["t4-1"]
    assert now.id != failed.id and now.status == "ACTIVE"
    assert (await tokens(cluster))[bad_token].spec.revoked
    assert (await machines(cluster, "t4"))["t4-1"].status.state == "ACTIVE"
    code, _, err = await run(
        cluster, ["deprovision", "--os-cloud", controlplane.MEMBER_CLOUD, "t4-1"], capsys
    )
    assert code == 0, err


async def cli_process(cluster: Cluster, *argv: str) -> tuple[int, str, str]:
    """The `coordinator` entry point itself, as an operator runs it (its admin.conf, clouds.yaml)."""
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
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_installed_cli_progress_lines_and_one_line_errors(
    openstack_cloud: ControlPlane, cluster: Cluster
) -> None:
    code, out, err = await cli_process(cluster, *provision_argv("t5", "--count", "1"))
    assert code == 0, err
    elapsed = [float(line.split()[0].rstrip("s")) for line in out.splitlines() if "  t5-1  " in line]
    assert len(elapsed) >= 2 and elapsed == sorted(elapsed)
    assert "t5-1: created ACTIVE" in out
    code, out, err = await cli_process(
        cluster, "deprovision", "--os-cloud", controlplane.MEMBER_CLOUD, "--all-from", "t5"
    )
    assert code == 0 and "t5-1: deleted" in out, err

    # Operator mistakes: one line each, exit 1, nothing created.
    argv = provision_argv("t5", "--count", "1")
    argv[argv.index(controlplane.FLAVOR)] = "no-such-flavor"
    code, out, err = await cli_process(cluster, *argv)
    assert code == 1 and err.strip() == 'error: flavor "no-such-flavor" not found in cloud atoll-member'
    argv = provision_argv("t5", "--count", "1")
    argv[argv.index(controlplane.MEMBER_CLOUD)] = "no-such-cloud"
    code, out, err = await cli_process(cluster, *argv)
    assert code == 1 and err.startswith("error: --os-cloud no-such-cloud:") and err.count("\n") == 1
    assert await asyncio.to_thread(servers, openstack_cloud, "t5") == {}


async def test_deprovision_cleans_up_after_a_server_deleted_behind_its_back(
    openstack_cloud: ControlPlane, cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    plane = openstack_cloud
    argv = provision_argv("t6", "--count", "1", "--floating-ip-pool", controlplane.EXTERNAL_NETWORK)
    code, out, err = await run(cluster, argv, capsys)
    assert code == 0, err
    server = (await asyncio.to_thread(servers, plane, "t6"))["t6-1"]
    address = (await machines(cluster, "t6"))["t6-1"].spec.floating_ip
    admin = plane.connect()
    await asyncio.to_thread(admin.compute.delete_server, server.id)
    await asyncio.to_thread(admin.compute.wait_for_delete, server, wait=60)
    # Nova's delete leaves the floating IP behind, unattached.
    assert (await asyncio.to_thread(floating_ips, plane))[address] is None

    code, out, err = await run(
        cluster, ["deprovision", "--os-cloud", controlplane.MEMBER_CLOUD, "t6-1"], capsys
    )
    assert code == 0, err
    token_id = server.metadata["atoll-token-id"]
    assert f"already gone (floating IP {address} released; join token {token_id} revoked)" in out
    assert address not in await asyncio.to_thread(floating_ips, plane)
    assert (await tokens(cluster))[token_id].spec.revoked
    assert await machines(cluster, "t6") == {}
