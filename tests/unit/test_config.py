"""Config precedence: defaults < file < environment < flags; errors name the source."""

from __future__ import annotations

import pathlib

import pytest

from atoll import agentconfig as config
from atoll import errors


def test_precedence(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text("coordinator: file:1\nnode-name: from-file\nlabels: {zone: a}\nrelist_interval: 2\n")
    env = {"ATOLL_AGENT_COORDINATOR": "env:2", "ATOLL_AGENT_RELIST_INTERVAL": "3"}
    cfg, _ = config.load(["--config", str(f), "--coordinator", "flag:3"], environ=env)
    assert cfg.coordinator == "flag:3"
    assert cfg.relist_interval == 3.0
    assert cfg.node_name == "from-file"
    assert cfg.labels == {"zone": "a"}
    assert cfg.docker_host == "unix:///var/run/docker.sock"


def test_errors_name_option_and_source(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text("nodename: x\n")
    with pytest.raises(errors.InvalidArgument, match="unknown option 'nodename'"):
        config.load(["--config", str(f)], environ={})
    with pytest.raises(errors.InvalidArgument, match="ATOLL_AGENT_RELIST_INTERVAL"):
        config.load([], environ={"ATOLL_AGENT_RELIST_INTERVAL": "soon"})
    with pytest.raises(errors.InvalidArgument, match="coordinator"):
        config.load(["--coordinator", "nohost"], environ={})
    with pytest.raises(errors.InvalidArgument, match="node_name"):
        config.load(["--node-name", "Bad_Name"], environ={})


def test_from_mapping_is_the_file_loader() -> None:
    cfg = config.from_mapping({"coordinator": "10.0.0.1:6443", "labels": {"rack": "r1"}})
    assert cfg.coordinator == "10.0.0.1:6443" and cfg.labels == {"rack": "r1"}
