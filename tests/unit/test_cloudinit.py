"""Cloud-init user-data: real YAML with the header cloud-init needs, and an agent config
the agent's own loader accepts (one schema: atoll.agentconfig)."""

from __future__ import annotations

import pytest
import yaml

from atoll import agentconfig as agent_config
from atoll import errors
from coordinator.cli.provisioning import cloudinit
from coordinator.cli.provisioning.cloudinit import HostConfig, SriovPF

TOKEN = "abcdef.0123456789abcdef"
PIN = "sha256:" + "ab" * 32


def host(**overrides: object) -> HostConfig:
    values: dict[str, object] = {
        "hostname": "bm-01",
        "coordinator": "10.0.0.2:6443",
        "join_token": TOKEN,
        "ca_hash": PIN,
        "labels": {"rack": "r1", "atoll.io/provider": "ironic"},
        "hosts_entries": (("10.0.0.2", "coordinator coordinator.example"),),
        "sriov_pfs": (SriovPF("ens1f0", 8), SriovPF("ens1f1", 4)),
        "join_address": "10.0.0.2:6444",
    }
    values.update(overrides)
    return HostConfig(**values)  # type: ignore[arg-type]


def test_rendered_document_is_cloud_config_yaml() -> None:
    text = cloudinit.render(host())
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert doc["hostname"] == "bm-01"
    assert doc["manage_etc_hosts"] is False
    assert ["systemctl", "enable", "--now", "atoll-agent.service"] in doc["runcmd"]
    files = {f["path"]: f for f in doc["write_files"]}
    agent_file = files["/etc/atoll/agent.yaml"]
    assert agent_file["permissions"] == "0600" and agent_file["owner"] == "root:root"
    hosts = files["/etc/hosts"]
    assert hosts["append"] is True
    assert hosts["content"] == "10.0.0.2 coordinator coordinator.example\n"


def test_agent_config_parses_back_with_the_agents_loader() -> None:
    text = cloudinit.render(host())
    values = cloudinit.agent_config_of(text)
    cfg = agent_config.from_mapping(values)
    assert cfg.join_token == TOKEN and cfg.ca_hash == PIN
    assert cfg.join_address == "10.0.0.2:6444"
    assert cfg.coordinator == "10.0.0.2:6443"
    assert cfg.node_name == "bm-01"
    assert cfg.labels == {"rack": "r1", "atoll.io/provider": "ironic"}
    assert cfg.sriov_pfs == ["ens1f0:8", "ens1f1:4"]


def test_rendering_is_deterministic_and_keeps_the_token_out_of_repr() -> None:
    assert cloudinit.render(host()) == cloudinit.render(host())
    assert TOKEN not in repr(host())


def test_node_name_and_extra_agent_options() -> None:
    values = cloudinit.agent_config(
        host(hostname="BM-02", node_name="", agent_options={"node_ip": "10.0.0.9"})
    )
    assert values["node_name"] == "bm-02"
    assert cloudinit.check_agent_config(values).node_ip == "10.0.0.9"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hostname": "bad_name"}, "not a valid host name"),
        ({"join_token": ""}, "join token"),
        ({"hosts_entries": (("not-an-ip", "x"),)}, "not an IP address"),
        ({"hosts_entries": (("10.0.0.1", ""),)}, "bad names"),
        ({"labels": {"bad key!": "v"}}, "labels"),
        ({"agent_options": {"no_such_option": 1}}, "unknown option"),
        ({"coordinator": "no-port"}, "HOST:PORT"),
        ({"join_token": "not-a-token"}, "join_token"),
        ({"ca_hash": "md5:abc"}, "ca_hash|pin|sha256"),
    ],
)
def test_render_refuses_what_the_agent_would_refuse(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        cloudinit.render(host(**overrides))


def test_sriov_pf_parsing() -> None:
    assert SriovPF.parse("ens1f0:8") == SriovPF("ens1f0", 8)
    assert str(SriovPF.parse("enp3s0f1:0")) == "enp3s0f1:0"
    for bad in ("ens1f0", ":4", "ens1f0:x", "ens1f0:9999", "a-very-long-interface-name:1"):
        with pytest.raises(errors.InvalidArgument):
            SriovPF.parse(bad)


def test_agent_sriov_option_from_flags_env_and_file() -> None:
    cfg, _ = agent_config.load(["--sriov-pfs", "ens1f0:8,ens1f1:2"], environ={})
    assert cfg.sriov_pfs == ["ens1f0:8", "ens1f1:2"]
    cfg, _ = agent_config.load([], environ={"ATOLL_AGENT_SRIOV_PFS": "eth1:1"})
    assert cfg.sriov_pfs == ["eth1:1"]
    cfg = agent_config.from_mapping({"sriov_pfs": [{"iface": "ens2", "num_vfs": 16}]})
    assert cfg.sriov_pfs == ["ens2:16"]
    with pytest.raises(errors.InvalidArgument, match="sriov_pfs"):
        agent_config.from_mapping({"sriov_pfs": ["ens1f0:many"]})


def test_user_data_without_header_or_agent_file_is_refused() -> None:
    with pytest.raises(errors.InvalidArgument, match="#cloud-config"):
        cloudinit.parse("hostname: x\n")
    with pytest.raises(errors.InvalidArgument, match=r"agent\.yaml"):
        cloudinit.agent_config_of("#cloud-config\nhostname: x\n")
