"""The sample configs the RPMs ship (packaging/gen-sample-config.py) read back with the real loaders."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import pathlib
import re
import runpy
import sys
from types import ModuleType
from typing import Any

import pytest

from atoll import agentconfig as agent_config
from coordinator import config as coordinator_config

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "packaging" / "gen-sample-config.py"
# An option line: '#' right before the key. Help lines have '# ' instead.
OPTION_LINE = re.compile(r"^#(?=[a-z_]+:)")


def _generator() -> ModuleType:
    # The script's name has dashes (it is a command), so import it by path.
    spec = importlib.util.spec_from_file_location("gen_sample_config", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _generator()


def load_agent(path: pathlib.Path) -> Any:
    cfg, _ = agent_config.load(["--config", str(path)], environ={})
    return cfg


def load_coordinator(path: pathlib.Path) -> Any:
    parser = argparse.ArgumentParser()
    coordinator_config.add_serve_flags(parser)
    return coordinator_config.load_serve(parser.parse_args(["--config", str(path)]), environ={})


CASES = {
    "agent": (agent_config.AgentConfig, load_agent),
    "coordinator": (coordinator_config.ServeConfig, load_coordinator),
}


@pytest.mark.parametrize("daemon", sorted(CASES))
def test_sample_as_shipped_loads_to_the_defaults(daemon: str, tmp_path: pathlib.Path) -> None:
    cls, load = CASES[daemon]
    sample = tmp_path / f"{daemon}.yaml"
    sample.write_text(gen.render(gen.daemons()[daemon]))
    assert load(sample) == cls()


@pytest.mark.parametrize("daemon", sorted(CASES))
def test_every_option_uncommented_is_valid_and_the_default(daemon: str, tmp_path: pathlib.Path) -> None:
    cls, load = CASES[daemon]
    text = gen.render(gen.daemons()[daemon])
    uncommented = [OPTION_LINE.sub("", line) for line in text.splitlines() if OPTION_LINE.match(line)]
    # Every field of the dataclass, once, in declaration order.
    assert [line.split(":", 1)[0] for line in uncommented] == [f.name for f in dataclasses.fields(cls)]
    sample = tmp_path / f"{daemon}.yaml"
    sample.write_text("\n".join(uncommented) + "\n")
    assert load(sample) == cls()


def test_collections_stay_on_one_line() -> None:
    assert gen.render_setting("labels", {"zone": "a", "x": "1:2"}) == "labels: {zone: a, x: '1:2'}"
    assert gen.render_setting("names", []) == "names: []"
    assert gen.render_setting("node_name", "") == "node_name: ''"


def test_script_prints_the_sample(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The command as `python gen-sample-config.py coordinator` runs it, in this process.
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "coordinator"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out == gen.render(gen.daemons()["coordinator"])
    assert "#data_dir: /var/lib/atoll\n" in out
