#!/usr/bin/env python3
"""The pinned wheels the RPMs bundle: lock them, fetch them, list them.

    wheelhouse.py lock     # resolve pyproject.toml's dependencies into packaging/lock/cp311/ (online)
    wheelhouse.py fetch    # make build/wheelhouse/cp311 hold every locked wheel (online only if one is missing)
    wheelhouse.py check    # is the lock current with pyproject.toml and constraints.txt? (offline)
    wheelhouse.py list     # the wheel files of the lock, one a line (what build-rpm.sh packs)

`make wheelhouse` (a prerequisite of `make venv`, hence of `make test`) runs
`fetch`, which first locks again if the lock no longer covers pyproject.toml
or constraints.txt. Afterwards `make rpm` needs no network.

The wheels are manylinux2014 (glibc 2.17) builds for one CPython version
(`--python-version`, default 3.11, the interpreter the RPMs run on). Each
package gets its own group, installed into its own directory under
/usr/lib/atoll by packaging/atoll.spec:

* common: what `atoll` itself needs, for both daemons: every dependency of
  pyproject.toml except the agent's own (AGENT_ONLY below); new dependencies
  land here.
* agent: AGENT_ONLY and what they pull in, less what common holds.
* coordinator: the `coordinator` (openstacksdk) and `etcd` (aetcd) extras,
  less what common holds. Never installed on agent hosts.
* build: what building the atoll wheel needs (pyproject's build-system
  requires: setuptools, wheel, grpcio-tools), so that the source RPM rebuilds
  offline with nothing but python3.11 and pip. Not installed.

Versions come from constraints.txt (what the test suite runs) where it pins
them, else the newest release; the hashes are those of the one wheel chosen
for the platform.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GROUPS = ("common", "agent", "coordinator", "build")
# The dependencies only the agent imports (Docker's API, host statistics, netlink).
AGENT_ONLY = {"docker", "psutil", "pyroute2"}
# The extras the coordinator package bundles.
COORDINATOR_EXTRAS = ("coordinator", "etcd")
# Both daemons will serve metrics (issue 12): locked before pyproject.toml
# names it; redundant, and harmless, once it does.
COMMON_EXTRA = ["prometheus_client"]
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64")
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def req_name(requirement: str) -> str:
    m = _REQ_NAME.match(requirement)
    if not m:
        raise SystemExit(f"wheelhouse: cannot read requirement {requirement!r}")
    return canonical(m.group(1))


def abi(python_version: str) -> str:
    return "cp" + python_version.replace(".", "")


def lock_dir(python_version: str) -> Path:
    return ROOT / "packaging" / "lock" / abi(python_version)


def platform_args(python_version: str) -> list[str]:
    args = ["--only-binary=:all:"]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return [*args, "--python-version", python_version, "--implementation", "cp", "--abi", abi(python_version)]


def pip(*args: str) -> list[str]:
    # --isolated: no user or site pip configuration (find-links, constraints, mirrors) leaks in.
    return [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", *args]


def roots() -> dict[str, list[str]]:
    """Each group's top-level requirements, from pyproject.toml."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    deps = list(project["dependencies"])
    common = [d for d in deps if req_name(d) not in AGENT_ONLY]
    names = {req_name(d) for d in common}
    common += [d for d in COMMON_EXTRA if req_name(d) not in names]
    extras = project.get("optional-dependencies", {})
    return {
        "common": common,
        "agent": [d for d in deps if req_name(d) in AGENT_ONLY],
        "coordinator": [d for extra in COORDINATOR_EXTRAS for d in extras.get(extra, [])],
        "build": list(pyproject["build-system"]["requires"]),
    }


def constraints() -> dict[str, str]:
    pins = {}
    for raw in (ROOT / "constraints.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonical(name)] = version.strip()
    return pins


def resolve(requirements: list[str], pins: dict[str, str], python_version: str) -> dict[str, dict]:
    """name -> {name, version, file, sha256}: what pip would install for the target platform."""
    with tempfile.TemporaryDirectory() as tmp:
        cons = Path(tmp, "constraints.txt")
        cons.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
        report = Path(tmp, "report.json")
        subprocess.run(
            pip(
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--report",
                str(report),
                "--target",
                str(Path(tmp, "target")),
                *platform_args(python_version),
                "-c",
                str(cons),
                *requirements,
            ),
            check=True,
        )
        resolved = {}
        for item in json.loads(report.read_text())["install"]:
            info = item["download_info"]
            name = canonical(item["metadata"]["name"])
            resolved[name] = {
                "name": item["metadata"]["name"],
                "version": item["metadata"]["version"],
                "file": info["url"].rsplit("/", 1)[1],
                "sha256": info["archive_info"]["hashes"]["sha256"],
            }
        return resolved


def write_lock(group: str, wheels: dict[str, dict], python_version: str) -> None:
    where = {
        "common": "atoll-common: /usr/lib/atoll/common",
        "agent": "atoll-agent: /usr/lib/atoll/agent (next to atoll-common's)",
        "coordinator": "atoll-coordinator: /usr/lib/atoll/coordinator (next to atoll-common's)",
        "build": "the RPM build only (the atoll wheel's build-system requires), not installed",
    }[group]
    lines = [
        "# Generated by packaging/wheelhouse.py lock from pyproject.toml and constraints.txt: do not edit.",
        f"# {where}.",
        f"# CPython {python_version} ({abi(python_version)}), {' / '.join(PLATFORMS)}.",
    ]
    for key in sorted(wheels):
        w = wheels[key]
        lines += [f"# {w['file']}", f"{w['name']}=={w['version']} \\", f"    --hash=sha256:{w['sha256']}"]
    path = lock_dir(python_version) / f"{group}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def read_lock(python_version: str) -> dict[str, dict[str, dict]]:
    """group -> name -> {name, version, file, sha256}, as written by write_lock."""
    locked: dict[str, dict[str, dict]] = {}
    for group in GROUPS:
        path = lock_dir(python_version) / f"{group}.txt"
        entries: dict[str, dict] = {}
        if path.exists():
            text = path.read_text()
            for m in re.finditer(
                r"^# (?P<file>\S+\.whl)\n(?P<name>[^=\s]+)==(?P<version>\S+) \\\n\s+--hash=sha256:(?P<sha256>[0-9a-f]{64})$",
                text,
                re.MULTILINE,
            ):
                entries[canonical(m["name"])] = m.groupdict()
        locked[group] = entries
    return locked


def stale(python_version: str) -> list[str]:
    """Why the lock does not cover pyproject.toml and constraints.txt (empty: it does)."""
    from packaging.requirements import Requirement

    locked = read_lock(python_version)
    pins = constraints()
    problems = []
    for group, reqs in roots().items():
        for line in reqs:
            req = Requirement(line)
            entry = locked[group].get(canonical(req.name)) or locked["common"].get(canonical(req.name))
            if entry is None:
                problems.append(f"{req.name} ({group}) is not locked")
            elif not req.specifier.contains(entry["version"], prereleases=True):
                problems.append(f"{req.name} {entry['version']} does not satisfy {line!r}")
    for entries in locked.values():
        for name, entry in entries.items():
            if name in pins and pins[name] != entry["version"]:
                problems.append(f"{name} is locked at {entry['version']}, constraints.txt pins {pins[name]}")
    return problems


def lock(python_version: str) -> None:
    pins = constraints()
    groups = roots()
    common = resolve(groups["common"], pins, python_version)
    # The other groups resolve together with common's pins, then leave to it what it holds.
    with_common = {**pins, **{n: w["version"] for n, w in common.items()}}
    locks = {"common": common}
    for group in ("agent", "coordinator"):
        wheels = resolve(groups[group] + groups["common"], with_common, python_version)
        locks[group] = {n: w for n, w in wheels.items() if n not in common}
    locks["build"] = resolve(groups["build"], pins, python_version)
    for group, wheels in locks.items():
        write_lock(group, wheels, python_version)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def missing(dest: Path, python_version: str) -> list[dict]:
    wanted = {}
    for entries in read_lock(python_version).values():
        for entry in entries.values():
            wanted[entry["file"]] = entry
    return [
        e for f, e in sorted(wanted.items()) if not (dest / f).is_file() or sha256(dest / f) != e["sha256"]
    ]


def fetch(dest: Path, python_version: str) -> None:
    problems = stale(python_version)
    if problems:
        print("wheelhouse: the lock is out of date, locking again (commit packaging/lock):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        lock(python_version)
    todo = missing(dest, python_version)
    if not todo:
        return
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        reqs = Path(tmp, "requirements.txt")
        reqs.write_text("".join(f"{e['name']}=={e['version']} --hash=sha256:{e['sha256']}\n" for e in todo))
        subprocess.run(
            [
                *pip("download", "--quiet", "--no-deps", "--require-hashes", *platform_args(python_version)),
                *("--dest", str(dest), "-r", str(reqs)),
            ],
            check=True,
        )
    left = missing(dest, python_version)
    if left:
        raise SystemExit(f"wheelhouse: still missing after download: {[e['file'] for e in left]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("lock", "fetch", "check", "list"))
    parser.add_argument("--python-version", default=os.environ.get("ATOLL_PYTHON_VERSION", "3.11"))
    parser.add_argument("--dest", type=Path, help="the wheelhouse (default build/wheelhouse/cpXY)")
    args = parser.parse_args()
    dest = (args.dest or ROOT / "build" / "wheelhouse" / abi(args.python_version)).resolve()
    if args.command == "lock":
        lock(args.python_version)
    elif args.command == "fetch":
        fetch(dest, args.python_version)
    elif args.command == "check":
        problems = stale(args.python_version)
        for problem in problems:
            print(problem)
        sys.exit(1 if problems else 0)
    else:
        left = missing(dest, args.python_version)
        if left:
            raise SystemExit(
                f"wheelhouse: {len(left)} locked wheels are not in {dest}, e.g. {left[0]['file']}: "
                "run make wheelhouse (once, online)"
            )
        files = {e["file"] for entries in read_lock(args.python_version).values() for e in entries.values()}
        for name in sorted(files):
            print(dest / name)


if __name__ == "__main__":
    main()
