"""The RPMs of `make rpm`: built from this tree, lint-clean, with the right payload and dependencies.

One build (packaging/build-rpm.sh, what `make rpm` runs) into a temporary
directory serves every test of this module. rpm, rpmlint and systemd come from
scripts/install-deps.sh; nothing here skips.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("atoll-common", "atoll-agent", "atoll-coordinator")
SITELIB = f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CLOUD_SDK = re.compile(r"openstack|ironic|keystone|nova|glance|neutron", re.IGNORECASE)


@dataclasses.dataclass
class Build:
    out: Path
    rpms: dict[str, Path]  # package name -> binary RPM
    srpm: Path


def run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    # check=False: callers assert on the exit status with the output in the message.
    return subprocess.run(
        [str(a) for a in args], check=False, capture_output=True, text=True, timeout=120, **kwargs
    )


def query(rpm: Path, *args: str) -> list[str]:
    proc = run("rpm", "-qp", *args, rpm)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    out = tmp_path_factory.mktemp("rpm")
    # The interpreter running the tests is the venv's: it builds, as under `make rpm`.
    proc = run(ROOT / "packaging" / "build-rpm.sh", out, env={**os.environ, "ATOLL_PYTHON": sys.executable})
    assert proc.returncode == 0, f"build-rpm.sh failed:\n{proc.stderr}"
    printed = [Path(line) for line in proc.stdout.split()]
    assert printed and all(p.is_file() for p in printed), proc.stdout
    rpms = {query(p, "--qf", "%{NAME}")[0]: p for p in printed if not p.name.endswith(".src.rpm")}
    srpms = [p for p in printed if p.name.endswith(".src.rpm")]
    assert sorted(rpms) == sorted(PACKAGES) and len(srpms) == 1, printed
    return Build(out, rpms, srpms[0])


@pytest.fixture(scope="module")
def payload(build: Build, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All three packages unpacked into one root directory."""
    root = tmp_path_factory.mktemp("payload")
    for rpm in build.rpms.values():
        proc = run("rpm2archive", rpm)  # writes <rpm>.tgz next to it
        assert proc.returncode == 0, proc.stderr
        with tarfile.open(f"{rpm}.tgz") as archive:
            # Extraction filters exist from Python 3.11.4 on; Debian 12's python3 may predate them.
            if hasattr(tarfile, "tar_filter"):
                archive.extractall(root, filter="tar")
            else:
                archive.extractall(root)
    return root


def files(rpm: Path) -> set[str]:
    return set(query(rpm, "--list"))


def requires(rpm: Path) -> list[str]:
    return query(rpm, "--requires")


def test_packages_carry_the_pyproject_version(build: Build) -> None:
    for rpm in [*build.rpms.values(), build.srpm]:
        assert query(rpm, "--qf", "%{VERSION} %{ARCH}")[0] in (
            f"{PYPROJECT['version']} noarch",
            f"{PYPROJECT['version']} src",  # rpm reports the source RPM's arch so
        )


def test_rpmlint_reports_no_errors(build: Build) -> None:
    proc = run(
        "rpmlint",
        "-r",
        ROOT / "packaging" / "rpmlintrc",
        ROOT / "packaging" / "atoll.spec",
        *build.rpms.values(),
        build.srpm,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0 and " 0 errors" in summary, proc.stdout + proc.stderr


def test_agent_payload(build: Build) -> None:
    agent = build.rpms["atoll-agent"]
    listed = files(agent)
    assert {
        "/usr/bin/atoll-agent",
        "/usr/lib/systemd/system/atoll-agent.service",
        "/etc/atoll/agent.yaml",
    } <= listed
    assert f"{SITELIB}/agent/main.py" in listed
    # The agent package holds the agent and nothing of the other packages.
    python = {f for f in listed if f.startswith(SITELIB)}
    assert all(f.startswith(f"{SITELIB}/agent") for f in python), sorted(python)


def test_sample_configs_are_config_noreplace(build: Build) -> None:
    for package, path in (
        ("atoll-agent", "/etc/atoll/agent.yaml"),
        ("atoll-coordinator", "/etc/atoll/coordinator.yaml"),
    ):
        rpm = build.rpms[package]
        assert query(rpm, "--configfiles") == [path]
        flags = dict(
            line.split(" ", 1) for line in query(rpm, "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]")
        )
        assert "c" in flags[path] and "n" in flags[path], flags[path]


def test_coordinator_payload(build: Build) -> None:
    listed = files(build.rpms["atoll-coordinator"])
    assert {
        "/usr/bin/coordinator",
        "/usr/lib/systemd/system/atoll-coordinator.service",
        "/etc/atoll/coordinator.yaml",
    } <= listed
    assert f"{SITELIB}/coordinator/cli/main.py" in listed


def test_common_holds_the_generated_api(build: Build) -> None:
    listed = files(build.rpms["atoll-common"])
    protos = sorted((ROOT / "protos" / "atoll" / "v1").glob("*.proto"))
    assert protos
    expected = {f"{SITELIB}/atoll/v1/__init__.py"}
    for proto in protos:
        expected |= {
            f"{SITELIB}/atoll/v1/{proto.stem}{suffix}" for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
        }
    assert expected <= listed, sorted(expected - listed)
    assert (
        f"{SITELIB}/atoll/v1/__pycache__/node_pb2.cpython-{sys.version_info.major}{sys.version_info.minor}.pyc"
        in listed
    )
    for other in ("atoll-agent", "atoll-coordinator"):
        assert not any("/atoll/v1/" in f for f in files(build.rpms[other]))


def test_agent_needs_no_cloud_sdk(build: Build) -> None:
    # atoll-common comes with the agent, so it counts too; so do weak dependencies.
    for package in ("atoll-agent", "atoll-common"):
        rpm = build.rpms[package]
        deps = requires(rpm) + query(rpm, "--recommends") + query(rpm, "--suggests")
        assert not [d for d in deps if CLOUD_SDK.search(d)], deps
    assert "atoll-common = " + query(build.rpms["atoll-common"], "--qf", "%{VERSION}-%{RELEASE}")[
        0
    ] in requires(build.rpms["atoll-agent"])


def test_requires_match_pyproject(build: Build) -> None:
    """Every runtime dependency of pyproject.toml, at its minimum version, on agent hosts."""
    on_agent_hosts = set(requires(build.rpms["atoll-agent"]) + requires(build.rpms["atoll-common"]))
    for line in PYPROJECT["dependencies"]:
        req = Requirement(line)
        package = f"python3-{req.name.lower()}"  # Fedora's naming of Python distributions
        expected = [f"{package} {s.operator} {s.version}" for s in req.specifier] or [package]
        for dep in expected:
            assert dep in on_agent_hosts, (line, sorted(on_agent_hosts))
    assert "python3 >= 3.11" in on_agent_hosts
    # The coordinator does not drive Docker or netlink.
    coordinator = requires(build.rpms["atoll-coordinator"])
    assert not [d for d in coordinator if re.match(r"python3-(docker|psutil|pyroute2)\b", d)], coordinator


def test_console_scripts_run_the_system_python(payload: Path) -> None:
    for script in ("atoll-agent", "coordinator"):
        path = payload / "usr" / "bin" / script
        assert path.read_text().splitlines()[0] == "#!/usr/bin/python3 -sP"
        assert os.access(path, os.X_OK)


def test_sample_configs_are_the_generated_ones(payload: Path) -> None:
    for daemon in ("agent", "coordinator"):
        generated = run(sys.executable, ROOT / "packaging" / "gen-sample-config.py", daemon)
        assert generated.returncode == 0, generated.stderr
        assert (payload / "etc" / "atoll" / f"{daemon}.yaml").read_text() == generated.stdout


def test_units_verify(payload: Path) -> None:
    # systemd-analyze verify resolves ExecStart= and the units' dependencies
    # under --root: give it the host's units next to the packaged ones.
    unit_dir = payload / "usr" / "lib" / "systemd" / "system"
    shutil.copytree("/usr/lib/systemd/system", unit_dir, symlinks=True, dirs_exist_ok=True)
    for unit in ("atoll-agent.service", "atoll-coordinator.service"):
        shutil.copy2(ROOT / "systemd" / unit, unit_dir / unit)  # the packaged ones, unchanged
    proc = run(
        "systemd-analyze",
        "verify",
        f"--root={payload}",
        "/usr/lib/systemd/system/atoll-agent.service",
        "/usr/lib/systemd/system/atoll-coordinator.service",
    )
    # verify only warns (exit 0) about unknown or malformed settings: any output is a finding.
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr


def test_unit_essentials(payload: Path) -> None:
    units = payload / "usr" / "lib" / "systemd" / "system"
    agent = (units / "atoll-agent.service").read_text().splitlines()
    for line in (
        "KillMode=process",
        "After=docker.service",
        "Wants=docker.service",
        "After=network-online.target",
        "EnvironmentFile=-/etc/sysconfig/atoll-agent",
        "StateDirectory=atoll-agent",
        "Restart=always",
    ):
        assert line in agent, line
    coordinator = (units / "atoll-coordinator.service").read_text().splitlines()
    for line in (
        "StateDirectory=atoll",
        "EnvironmentFile=-/etc/sysconfig/atoll-coordinator",
        "DynamicUser=yes",
    ):
        assert line in coordinator, line


@pytest.mark.parametrize("package", ["atoll-agent", "atoll-coordinator"])
def test_scriptlets_are_harmless_without_systemctl(build: Build, package: str, tmp_path: Path) -> None:
    """Valid shell, and a no-op where systemctl is missing (containers, image builds)."""
    rpm = build.rpms[package]
    for tag, args in (("POSTIN", ["1", "2"]), ("PREUN", ["0", "1"]), ("POSTUN", ["0", "1"])):
        body = query(rpm, "--qf", f"%{{{tag}}}")
        assert body and "systemctl" in "\n".join(body), (tag, body)
        script = tmp_path / f"{tag}.sh"
        script.write_text("\n".join(body) + "\n")
        for arg in args:
            proc = run("/bin/sh", "-e", script, arg, env={"PATH": str(tmp_path / "empty")})
            assert proc.returncode == 0 and not proc.stdout + proc.stderr, (tag, arg, proc.stderr)
