"""Client configs naming several coordinators: `coordinator config set-server`, and the coordinator's
own admin.conf keeping such a list when it renews the file."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

from atoll import pki
from coordinator.auth.certs import ClusterPki, PkiSettings
from coordinator.cli.main import main as cli
from coordinator.client import config as clientconfig


def test_set_server_rewrites_the_servers_and_keeps_the_credentials(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "admin.conf"
    clientconfig.ClientConfig(server="10.0.0.11:6443", user="admin", ca=b"CA", token="abc.def").write(path)
    assert cli(["config", "set-server", "10.0.0.11, 10.0.0.12:7443,coord-3", "--file", str(path)]) == 0
    text = path.read_text()
    got = clientconfig.parse(text, str(path))
    assert got.servers == ["10.0.0.11:6443", "10.0.0.12:7443", "coord-3:6443"]
    assert "servers:\n- 10.0.0.11:6443\n" in text  # a YAML list, as a person would write it
    assert (got.user, got.ca, got.token) == ("admin", b"CA", "abc.def")
    assert path.stat().st_mode & 0o777 == 0o600
    assert cli(["config", "set-server", "10.0.0.12", "--file", str(path)]) == 0  # back to one
    assert "server: 10.0.0.12:6443\n" in path.read_text()


def test_set_server_changes_the_config_the_cli_uses(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(clientconfig.ENV_VAR, raising=False)
    assert cli(["config", "set-server", "a,b"]) == 1
    assert "coordinator config: no client config to change" in capsys.readouterr().err
    used = tmp_path / "chosen.conf"
    clientconfig.ClientConfig(server="a:6443").write(used)
    monkeypatch.setenv(clientconfig.ENV_VAR, str(used))
    assert cli(["config", "set-server", "a,b"]) == 0
    assert clientconfig.parse(used.read_text(), "").servers == ["a:6443", "b:6443"]


def test_a_coordinators_admin_conf_keeps_a_list_that_names_it(tmp_path: pathlib.Path) -> None:
    cluster_pki = ClusterPki(PkiSettings(data_dir=tmp_path, dns_names=("localhost",)))
    cluster_pki.server = "10.0.0.11:6443"
    cluster_pki.ensure()
    conf = cluster_pki.admin_conf
    assert clientconfig.parse(conf.read_text(), "").servers == ["10.0.0.11:6443"]
    assert cli(["config", "set-server", "10.0.0.11,10.0.0.12,10.0.0.13", "--file", str(conf)]) == 0
    # A renewal (here: the file's CA is not this coordinator's) keeps the operator's list...
    other = pki.CertificateAuthority.create(3600)
    stale = dataclasses.replace(clientconfig.parse(conf.read_text(), ""), ca=other.cert_pem)
    stale.write(conf)
    assert cluster_pki.ensure()
    renewed = clientconfig.parse(conf.read_text(), "")
    assert renewed.servers == ["10.0.0.11:6443", "10.0.0.12:6443", "10.0.0.13:6443"]
    assert renewed.ca == cluster_pki.authority.cert_pem
    # ...but a list without this coordinator is not its admin.conf any more: it writes its own.
    assert cli(["config", "set-server", "10.0.0.12,10.0.0.13", "--file", str(conf)]) == 0
    cluster_pki.ensure()
    assert clientconfig.parse(conf.read_text(), "").servers == ["10.0.0.11:6443"]
