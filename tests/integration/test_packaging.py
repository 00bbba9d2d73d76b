"""The RPMs of `make rpm`: built from this tree, self-contained, lint-clean, reproducible, and runnable.

One build (packaging/build-rpm.sh, what `make rpm` runs) into a temporary
directory serves every test of this module; a rebuild of its source RPM checks
that the build is reproducible. rpm, rpmlint and systemd come from
scripts/install-deps.sh, the wheels from `make wheelhouse`; nothing here
skips.
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
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("atoll-common", "atoll-agent", "atoll-coordinator")
PYTHON = "/usr/bin/python3.11"
LIB = "/usr/lib/atoll"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CLOUD_SDK = re.compile(r"openstack|ironic|keystone|nova|glance|neutron|os.service.types", re.IGNORECASE)
# What rpm -qpR may name: packages (or their files) that RHEL 9, CentOS Stream 9 and Fedora ship
# (python3.11 from AppStream), rpm's own features, and the packages of this build.
SYSTEM_REQUIRES = re.compile(
    r"python3\.11|/usr/bin/python3\.11|systemd|nftables|\(iptables-nft or iptables-legacy\)|/bin/sh"
    r"|rpmlib\([A-Za-z]+\) <= [0-9.-]+"
    r"|(atoll-common\(x86-64\)|config\(atoll-(agent|coordinator)\)) = [^ ]+"
)
# The tags that differ between `rpmbuild -ba` (which records the source RPM's digest in the
# binary packages) and `rpmbuild --rebuild`, and the digests of the header that includes them.
BUILD_MODE_TAGS = ("Sourcepkgid", "Sigsize", "Sigmd5", "Sha1header", "Sha256header", "Rsaheader", "Dsaheader")


@dataclasses.dataclass
class Build:
    out: Path
    rpms: dict[str, Path]  # package name -> binary RPM
    srpm: Path


def run(*args: str | Path, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess[str]:
    # check=False: callers assert on the exit status with the output in the message.
    return subprocess.run(
        [str(a) for a in args], check=False, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def query(rpm: Path, *args: str) -> list[str]:
    proc = run("rpm", "-qp", *args, rpm)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def collect(printed: list[Path]) -> tuple[dict[str, Path], Path]:
    assert printed and all(p.is_file() for p in printed), printed
    rpms = {query(p, "--qf", "%{NAME}")[0]: p for p in printed if not p.name.endswith(".src.rpm")}
    srpms = [p for p in printed if p.name.endswith(".src.rpm")]
    assert sorted(rpms) == sorted(PACKAGES) and len(srpms) == 1, printed
    return rpms, srpms[0]


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    out = tmp_path_factory.mktemp("rpm")
    # The interpreter running the tests is the venv's: it builds, as under `make rpm`.
    proc = run(
        ROOT / "packaging" / "build-rpm.sh",
        out,
        timeout=900,
        env={**os.environ, "ATOLL_PYTHON": sys.executable},
    )
    assert proc.returncode == 0, f"build-rpm.sh failed:\n{proc.stderr}"
    rpms, srpm = collect([Path(line) for line in proc.stdout.split()])
    return Build(out, rpms, srpm)


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


def bundled(payload: Path, package: str) -> dict[str, str]:
    """The distributions bundled in a package's private directory: name -> version."""
    found = {}
    for info in (payload / LIB.lstrip("/") / package).glob("*.dist-info"):
        name, version = info.name.removesuffix(".dist-info").split("-", 1)
        found[canonicalize_name(name)] = version
    return found


def test_packages_carry_the_pyproject_version(build: Build) -> None:
    for rpm in [*build.rpms.values(), build.srpm]:
        assert query(rpm, "--qf", "%{VERSION} %{ARCH}")[0] in (
            f"{PYPROJECT['version']} x86_64",
            f"{PYPROJECT['version']} src",  # rpm reports the source RPM's arch so
        )


def test_rpmlint_is_clean(build: Build) -> None:
    proc = run(
        "rpmlint",
        "-r",
        ROOT / "packaging" / "rpmlintrc",
        ROOT / "packaging" / "atoll.spec",
        *build.rpms.values(),
        build.srpm,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0 and " 0 errors, 0 warnings" in summary, proc.stdout + proc.stderr


def test_requires_name_only_what_the_system_provides(build: Build) -> None:
    for package, rpm in build.rpms.items():
        deps = requires(rpm)
        assert all(SYSTEM_REQUIRES.fullmatch(d) for d in deps), (package, deps)
        assert "python3.11" in deps, (package, deps)
    agent = requires(build.rpms["atoll-agent"])
    # The commands the agent runs (agent/proxy/netfilter.py, agent/network/firewall.py).
    assert {"nftables", "(iptables-nft or iptables-legacy)", "systemd", PYTHON} <= set(agent), agent
    # The bundled libraries provide nothing to the rest of the system.
    for rpm in build.rpms.values():
        provides = query(rpm, "--provides")
        assert all(re.match(r"(atoll-|config\(atoll-)", p) for p in provides), provides


def test_agent_payload(build: Build) -> None:
    agent = build.rpms["atoll-agent"]
    listed = files(agent)
    assert {
        "/usr/bin/atoll-agent",
        "/usr/lib/systemd/system/atoll-agent.service",
        "/etc/atoll/agent.yaml",
        f"{LIB}/agent/agent/main.py",
        f"{LIB}/agent/agent/__pycache__/main.cpython-311.pyc",
    } <= listed
    # The agent package holds the agent and its libraries, nothing of the other packages.
    private = {f for f in listed if f.startswith("/usr/lib/")} - {
        "/usr/lib/systemd/system/atoll-agent.service"
    }
    assert all(f.startswith(f"{LIB}/agent") for f in private), sorted(private)


def test_agent_hosts_get_no_cloud_sdk(build: Build) -> None:
    # atoll-common comes with the agent, so it counts too; so do weak dependencies and the payload.
    for package in ("atoll-agent", "atoll-common"):
        rpm = build.rpms[package]
        deps = requires(rpm) + query(rpm, "--recommends") + query(rpm, "--suggests")
        assert not [d for d in deps if CLOUD_SDK.search(d)], deps
        assert not [f for f in files(rpm) if CLOUD_SDK.search(f.removeprefix(LIB))], package
    assert "atoll-common(x86-64) = " + query(build.rpms["atoll-common"], "--qf", "%{VERSION}-%{RELEASE}")[
        0
    ] in requires(build.rpms["atoll-agent"])


def test_no_file_belongs_to_two_packages(build: Build) -> None:
    seen: dict[str, str] = {}
    for package, rpm in build.rpms.items():
        for path in files(rpm):
            if path in seen and not path.startswith("/etc/atoll") and path != "/usr/lib/atoll":
                pytest.fail(f"{path} is in {seen[path]} and {package}")
            seen.setdefault(path, package)
    owners = [p for p, rpm in build.rpms.items() if LIB in files(rpm)]
    assert owners == ["atoll-common"], owners


def test_lock_covers_pyproject() -> None:
    proc = run(sys.executable, ROOT / "packaging" / "wheelhouse.py", "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bundled_libraries_follow_pyproject(payload: Path) -> None:
    """Every dependency, at a version pyproject.toml accepts, where its daemon finds it."""
    common, agent, coordinator = (bundled(payload, p) for p in ("common", "agent", "coordinator"))
    extras = PYPROJECT["optional-dependencies"]
    for line, places in [
        *((d, (common, agent)) for d in PYPROJECT["dependencies"]),
        *((d, (common, coordinator)) for d in extras["coordinator"] + extras["etcd"]),
    ]:
        req = Requirement(line)
        versions = [p[canonicalize_name(req.name)] for p in places if canonicalize_name(req.name) in p]
        assert versions and req.specifier.contains(versions[0], prereleases=True), (line, versions)
    # Both daemons serve metrics; the agent's directory holds its own libraries only.
    assert "prometheus-client" in common
    assert {"docker", "psutil", "pyroute2", "requests"} <= set(agent)
    assert not set(agent) & set(common), set(agent) & set(common)
    assert not [name for name in agent if CLOUD_SDK.search(name)], agent
    assert "atoll" in common and "grpcio" not in agent


def test_compiled_extensions_are_bundled(payload: Path) -> None:
    common = payload / LIB.lstrip("/") / "common"
    # protobuf's upb extension, not the pure-Python fallback, and gRPC's core.
    assert list(common.glob("google/_upb/_message.*.so")), "protobuf is pure Python"
    assert list(common.glob("grpc/_cython/cygrpc.cpython-311-x86_64-linux-gnu.so"))
    # manylinux2014: no shared object needs a glibc newer than RHEL 9's (2.34), nor than 2.17.
    newest = (0, 0)
    for so in (payload / LIB.lstrip("/")).rglob("*.so*"):
        proc = run("objdump", "-T", so)
        assert proc.returncode == 0, proc.stderr
        for major, minor in re.findall(r"GLIBC_(\d+)\.(\d+)", proc.stdout):
            newest = max(newest, (int(major), int(minor)))
    assert (2, 0) < newest <= (2, 17), newest


def test_launchers_run_python311_isolated(payload: Path) -> None:
    for script, package in (("atoll-agent", "agent"), ("coordinator", "coordinator")):
        path = payload / "usr" / "bin" / script
        lines = path.read_text().splitlines()
        assert lines[0] == f"#!{PYTHON} -I"
        assert f'sys.path[:0] = ["{LIB}/{package}", "{LIB}/common"]' in lines
        assert os.access(path, os.X_OK)


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


def test_coordinator_payload(build: Build, payload: Path) -> None:
    listed = files(build.rpms["atoll-coordinator"])
    assert {
        "/usr/bin/coordinator",
        "/usr/lib/systemd/system/atoll-coordinator.service",
        "/etc/atoll/coordinator.yaml",
        f"{LIB}/coordinator/coordinator/cli/main.py",
    } <= listed
    # `coordinator enroll`/`provision` and `--store etcd://` work out of the box.
    assert {"openstacksdk", "aetcd"} <= set(bundled(payload, "coordinator"))


def test_common_holds_the_generated_api(build: Build) -> None:
    listed = files(build.rpms["atoll-common"])
    protos = sorted((ROOT / "protos" / "atoll" / "v1").glob("*.proto"))
    assert protos
    api = f"{LIB}/common/atoll/v1"
    expected = {f"{api}/__init__.py", f"{api}/__pycache__/node_pb2.cpython-311.pyc"}
    for proto in protos:
        expected |= {f"{api}/{proto.stem}{suffix}" for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")}
    assert expected <= listed, sorted(expected - listed)
    for other in ("atoll-agent", "atoll-coordinator"):
        assert not any("/atoll/v1/" in f for f in files(build.rpms[other]))


def test_builds_are_reproducible(build: Build, tmp_path: Path) -> None:
    """Rebuilding the source RPM elsewhere, at the same date, gives the same packages."""
    epoch = query(build.srpm, "--qf", "%{BUILDTIME}")[0]
    top = tmp_path / "rebuild"
    proc = run(
        "rpmbuild",
        "--rebuild",
        "--nodeps",  # Debian: no RPM database for the BuildRequires (as build-rpm.sh does)
        "--define",
        f"_topdir {top}",
        "--define",
        f"atoll_python {sys.executable}",
        build.srpm,
        timeout=900,
        env={**os.environ, "SOURCE_DATE_EPOCH": epoch},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for package, rpm in build.rpms.items():
        again = top / "RPMS" / "x86_64" / rpm.name
        # Payload and every header tag but the build mode's (see BUILD_MODE_TAGS).
        first, second = (
            re.sub(
                rf'  <rpmTag name="({"|".join(BUILD_MODE_TAGS)})">.*?</rpmTag>\n',
                "",
                "\n".join(query(r, "--xml")) + "\n",
                flags=re.DOTALL,
            )
            for r in (rpm, again)
        )
        assert first == second, package
        assert query(rpm, "--qf", "%{PAYLOADDIGEST}") == query(again, "--qf", "%{PAYLOADDIGEST}")
        assert rpm.read_bytes()[-1_000_000:] == again.read_bytes()[-1_000_000:], package


# Installs the packages into an overlay of this machine's root (its /usr/bin/python3.11 is
# Debian's 3.11) in a private mount namespace, and runs them at their real paths.
INSTALL_AND_RUN = r"""
set -eu
mount -t tmpfs tmpfs "$WORK"
mkdir "$WORK/upper" "$WORK/work" "$WORK/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$WORK/upper,workdir=$WORK/work" "$WORK/root"
R=$WORK/root
mount --rbind /dev "$R/dev"
mount -t proc proc "$R/proc"
rm -rf "$R/var/lib/rpm" "$R/usr/lib/atoll"
rpm --root "$R" --dbpath /var/lib/rpm --initdb
# --nodeps: the root is Debian, whose RPM database knows nothing of python3.11 or nftables.
rpm --root "$R" --dbpath /var/lib/rpm -i --nodeps --noscripts "$@"
rpm --root "$R" --dbpath /var/lib/rpm -qa --qf '%{NAME}\n' | sort
echo ---
chroot "$R" /usr/bin/atoll-agent --help >/dev/null
chroot "$R" /usr/bin/atoll-agent --config /etc/atoll/agent.yaml --print-config >/dev/null
chroot "$R" /usr/bin/coordinator --help >/dev/null
echo ---
# What the launchers set up, then the libraries that must be the bundled, compiled ones.
for launcher in atoll-agent coordinator; do
  { grep -v '^sys.exit' "$R/usr/bin/$launcher"; cat "$CHECK"; } >"$R/tmp/check-$launcher"
  chroot "$R" /usr/bin/python3.11 -I "/tmp/check-$launcher"
done
"""


def test_installed_packages_run_on_python311(build: Build, tmp_path: Path) -> None:
    check = tmp_path / "check.py"
    check.write_text(
        "import importlib, google.protobuf.internal.api_implementation as impl\n"
        "import grpc._cython.cygrpc, yaml._yaml, cryptography.hazmat.bindings._rust\n"
        "extra = ['agent.daemon', 'docker', 'pyroute2'] if 'agent' in main.__module__ else"
        " ['coordinator.server', 'openstack', 'aetcd']\n"
        "mods = [grpc._cython.cygrpc, yaml._yaml, *map(importlib.import_module, extra)]\n"
        "assert impl.Type() == 'upb', impl.Type()\n"
        "assert sys.flags.isolated and sys.version_info[:2] == (3, 11), sys.flags\n"
        "bad = [m.__file__ for m in mods if not m.__file__.startswith('/usr/lib/atoll/')]\n"
        "assert not bad, bad\n"
        "print(main.__module__, 'ok', impl.Type())\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    proc = run(
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        INSTALL_AND_RUN,
        "install-and-run",
        *build.rpms.values(),
        timeout=300,
        env={**os.environ, "WORK": str(work), "CHECK": str(check)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed, _, checks = proc.stdout.split("---\n")
    assert installed.split() == sorted(PACKAGES)
    assert checks.split("\n")[:2] == ["agent.main ok upb", "coordinator.cli.main ok upb"], checks


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
    # What the base system provides and the units run: kill(1) for ExecReload.
    kill = payload / "usr" / "bin" / "kill"
    if not kill.exists():
        shutil.copy2("/usr/bin/kill" if os.path.exists("/usr/bin/kill") else "/bin/kill", kill)
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
