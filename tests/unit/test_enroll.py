"""Enrollment requests (flags, inventory files), Ironic field mapping and secret handling, without Ironic.

The engine's conversation with Ironic is tested against a real one in
tests/integration/ironic; here are the pure parts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib

import pytest

from atoll import errors
from coordinator.cli import enroll as enroll_cli
from coordinator.cli import main as cli_main
from coordinator.cli.provisioning import enroll, ironic
from coordinator.cli.provisioning.cloudinit import SriovPF
from coordinator.cli.provisioning.ironic import Secret

PASSWORD = "s3cret-bmc"


@pytest.fixture
def password_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "bmc.pass"
    path.write_text(PASSWORD + "\n")
    return path


def parse(*argv: str) -> list[enroll.EnrollSpec]:
    return enroll_cli.specs_of(cli_main.build_parser().parse_args(["enroll", *argv]))


def test_flags_make_one_spec(password_file: pathlib.Path) -> None:
    (spec,) = parse(
        "bm-01",
        "--driver=ipmi",
        "--bmc=10.0.0.5",
        "--bmc-user=admin",
        f"--bmc-password-file={password_file}",
        "--mac=52:54:00:AA:bb:01",
        "--mac=52:54:00:aa:bb:02",
        "--image=http://img/atomic.qcow2",
        "--image-checksum=sha256:" + "a" * 64,
        "--property=cpus=32",
        "--property=cpu_arch=x86_64",
        "--sriov-pf=ens1f0:8",
        "--labels=rack=r1,zone=z",
        "--add-host=coordinator:10.0.0.2",
        "--interface=deploy=direct",
    )
    assert spec.name == "bm-01" and spec.driver == "ipmi"
    assert spec.bmc_password.value == PASSWORD
    assert spec.macs == ("52:54:00:aa:bb:01", "52:54:00:aa:bb:02")
    assert spec.properties == {"cpus": 32, "cpu_arch": "x86_64"}
    assert spec.sriov_pfs == (SriovPF("ens1f0", 8),)
    assert spec.labels == {"rack": "r1", "zone": "z"}
    assert spec.hosts_entries == (("10.0.0.2", "coordinator"),)
    assert spec.interfaces == {"deploy": "direct"}
    assert PASSWORD not in repr(spec) and PASSWORD not in str(spec.bmc_password)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bm-01", "--driver=ipmi", "--mac=52:54:00:00:00:01"], "needs --bmc"),
        (["bm-01", "--driver=fake-hardware"], "at least one --mac"),
        (["bm-01", "--driver=fake-hardware", "--mac=nonsense"], "not a MAC address"),
        (["bm-01", "--driver=fake-hardware", "--mac=52:54:00:00:00:01", "--mac=52:54:00:00:00:01"], "twice"),
        (["bm-01", "--driver=fake-hardware", "--mac=52:54:00:00:00:01", "--image=http://x"], "go together"),
        (
            [
                "bm-01",
                "--driver=fake-hardware",
                "--mac=52:54:00:00:00:01",
                "--image=http://x",
                "--image-checksum=abc",
            ],
            "image-checksum",
        ),
        (["Bad_Name", "--driver=fake-hardware", "--mac=52:54:00:00:00:01"], "DNS-1123"),
        (
            ["bm-01", "--driver=fake-hardware", "--mac=52:54:00:00:00:01", "--interface=nic=x"],
            "unknown interface",
        ),
        (["bm-01", "--driver=fake-hardware", "--mac=52:54:00:00:00:01", "--sriov-pf=ens1"], "IFACE:NUM_VFS"),
        (
            ["bm-01", "--driver=fake-hardware", "--mac=52:54:00:00:00:01", "--bmc-password-file=/nope"],
            "/nope",
        ),
        ([], "NAME"),
    ],
)
def test_bad_requests_are_refused_before_any_call(argv: list[str], message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        parse(*argv)


def test_inventory_defaults_hosts_and_flags(tmp_path: pathlib.Path, password_file: pathlib.Path) -> None:
    (tmp_path / "hosts.yaml").write_text(
        f"""
defaults:
  driver: redfish
  bmc_user: admin
  bmcPasswordFile: {password_file.name}
  labels: {{rack: r1}}
hosts:
  - name: bm-01
    bmc: https://10.0.0.5/redfish/v1/Systems/1
    macs: ["52:54:00:00:00:01"]
    sriovPFs: [ens1f0:8, ens1f1:2]
  - name: bm-02
    bmc: https://10.0.0.6
    macs: 52:54:00:00:00:02,52:54:00:00:00:03
    labels: {{rack: r2}}
    properties: {{cpus: 8}}
"""
    )
    specs = parse(
        "-f", str(tmp_path / "hosts.yaml"), "--image=http://img/a.qcow2", "--image-checksum=md5:" + "b" * 32
    )
    assert [s.name for s in specs] == ["bm-01", "bm-02"]
    assert all(s.driver == "redfish" and s.bmc_password.value == PASSWORD for s in specs)
    assert all(s.image == "http://img/a.qcow2" for s in specs)  # flags are the outermost defaults
    assert specs[0].sriov_pfs == (SriovPF("ens1f0", 8), SriovPF("ens1f1", 2))
    assert specs[1].macs == ("52:54:00:00:00:02", "52:54:00:00:00:03")
    assert specs[1].labels == {"rack": "r2"} and specs[1].properties == {"cpus": 8}


def test_inventory_as_json_list(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "hosts.json"
    path.write_text(
        json.dumps(
            [{"name": f"h{i}", "driver": "fake-hardware", "macs": [f"52:54:00:00:00:0{i}"]} for i in range(3)]
        )
    )
    assert [s.name for s in parse("-f", str(path))] == ["h0", "h1", "h2"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "hosts: [{name: a, driver: fake-hardware, macs: ['52:54:00:00:00:01'], bmcPassword: x}]",
            "bmcPasswordFile",
        ),
        (
            "hosts: [{name: a, driver: fake-hardware, macs: ['52:54:00:00:00:01'], colour: red}]",
            "unknown key",
        ),
        ("hosts: []", "non-empty list"),
        ("defaults: {}\nextra: 1\nhosts: []", "defaults and hosts"),
        (
            "hosts: [{name: a, driver: fake-hardware, macs: ['52:54:00:00:00:01']},"
            " {name: a, driver: fake-hardware, macs: ['52:54:00:00:00:02']}]",
            "more than once",
        ),
    ],
)
def test_bad_inventories(tmp_path: pathlib.Path, text: str, message: str) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text(text)
    with pytest.raises(errors.InvalidArgument, match=message):
        parse("-f", str(path))


def test_image_checksum_fields() -> None:
    assert enroll.image_checksum_fields("md5:" + "A" * 32) == {"image_checksum": "a" * 32}
    assert enroll.image_checksum_fields("c" * 64) == {
        "image_os_hash_algo": "sha256",
        "image_os_hash_value": "c" * 64,
    }
    assert enroll.image_checksum_fields("sha512:" + "d" * 128)["image_os_hash_algo"] == "sha512"
    assert enroll.image_checksum_fields("https://img/SHA256SUMS") == {
        "image_checksum": "https://img/SHA256SUMS"
    }
    for bad in ("sha256:" + "a" * 10, "sha1:" + "a" * 40, "zz" * 16):
        with pytest.raises(errors.InvalidArgument):
            enroll.image_checksum_fields(bad)


def test_driver_info_per_hardware_type() -> None:
    pw = Secret(PASSWORD)
    assert ironic.driver_info("ipmi", "10.0.0.5", "admin", pw) == {
        "ipmi_address": "10.0.0.5",
        "ipmi_username": "admin",
        "ipmi_password": PASSWORD,
    }
    redfish = ironic.driver_info("redfish", "https://10.0.0.5/redfish/v1/Systems/1", "admin", pw)
    assert redfish["redfish_address"] == "https://10.0.0.5"
    assert redfish["redfish_system_id"] == "/redfish/v1/Systems/1"
    assert "redfish_system_id" not in ironic.driver_info("redfish", "https://10.0.0.5", "admin", pw)


def test_call_templates_and_masking() -> None:
    calls = ironic.CallLog()
    calls.record(
        "PUT", "http://127.0.0.1:6385/v1/nodes/6f1c2f7e-0d6a-4d2e-9d59-1b0f6c8a1e11/states/provision"
    )
    calls.record("GET", "http://127.0.0.1:6385/v1/nodes/bm-01?fields=uuid")
    calls.record("GET", "http://127.0.0.1:6385/v1/ports?address=52:54:00:00:00:01")
    assert calls.counts == {
        "PUT /v1/nodes/{node}/states/provision": 1,
        "GET /v1/nodes/{node}": 1,
        "GET /v1/ports": 1,
    }
    assert ironic.mask(f"bad password {PASSWORD}!", [PASSWORD, ""]) == "bad password ******!"


def test_connect_keeps_request_bodies_out_of_debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    """keystoneauth logs request bodies (driver_info, configdrive) at DEBUG: connect caps it."""
    pytest.importorskip("openstack")
    caplog.set_level(logging.DEBUG)
    conn = ironic.connect(ironic.IronicAuth(url="http://127.0.0.1:9"))
    try:
        for name in ironic.SDK_LOGGERS:
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG)
    finally:
        conn.close()


def test_ironic_auth_needs_an_endpoint() -> None:
    with pytest.raises(errors.InvalidArgument, match="--os-cloud"):
        ironic.IronicAuth().validate()
    with pytest.raises(errors.InvalidArgument, match="http_basic needs"):
        ironic.IronicAuth(url="http://x", auth="http_basic").validate()


async def test_inventory_concurrency_is_bounded() -> None:
    running, peak = 0, 0

    def job(i: int) -> object:
        async def go() -> enroll.Result:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1
            return enroll.Result(f"h{i}", ok=True)

        return go

    results = await enroll_cli._bounded(3, [job(i) for i in range(10)])
    assert [r.name for r in results] == [f"h{i}" for i in range(10)]
    assert peak == 3
