"""The README's layout table names every part of the tree, so a newcomer finds any concern in one hop."""

from __future__ import annotations

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _layout_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Layout")
    return text[start : text.index("\n## ", start + 1)]


def _parts(package: str) -> list[str]:
    """Subpackages (``name/``) and modules (``name.py``) directly under `package`."""
    parts = []
    for path in sorted((ROOT / package).iterdir()):
        if path.name.startswith(("_", ".")) or path.name == "v1":
            continue
        if path.is_dir() and (path / "__init__.py").exists():
            parts.append(f"{path.name}/")
        elif path.suffix == ".py":
            parts.append(path.name)
    return parts


def test_every_package_and_module_at_the_top_is_in_the_layout_table() -> None:
    section = _layout_section()
    missing = [
        f"{package}/{part}"
        for package in ("agent", "coordinator", "coordinator/api", "coordinator/cli")
        for part in _parts(package)
        if f"`{part}`" not in section and f"`{package}/{part}`" not in section
    ]
    assert missing == [], f"README's Layout does not name: {missing}"


def test_coordinator_top_level_holds_only_the_composition_root_and_config() -> None:
    modules = [part for part in _parts("coordinator") if part.endswith(".py")]
    assert modules == ["config.py", "server.py"]


def test_the_daemon_contract_covers_every_daemon_part() -> None:
    """A new coordinator package must join the "daemon never imports operator-side code" contract."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [
        c
        for c in config["tool"]["importlinter"]["contracts"]
        if c["name"] == "the daemon never imports operator-side code"
    ]
    daemon = {f"coordinator.{part.removesuffix('/').removesuffix('.py')}" for part in _parts("coordinator")}
    assert set(contract["source_modules"]) == daemon - {"coordinator.cli"}
