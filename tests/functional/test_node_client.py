"""Issue 15, point 3: a Node.js @grpc/grpc-js client lists pods, pages, watches and decodes a
validation error's standard field violations, against an in-process coordinator on a port,
over mutual TLS with the admin's certificate.

The client (tests/clients/node/client.js) loads our protos at run time; a TypeScript client
(typed_client.ts) is type-checked by tsc against types generated from the protos; `buf build`
and `buf lint` run with the pinned buf of the same package.json.
The npm packages come from tests/clients/node/package-lock.json through `npm ci`, once per
run (again only when the lock changes), into its git-ignored node_modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import status_pb2
from grpc_tools import protoc

import atoll
from atoll.v1 import pod_pb2
from tests.functional.harness import Cluster

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLIENT_DIR = ROOT / "tests" / "clients" / "node"
MODULES = CLIENT_DIR / "node_modules"
STAMP = MODULES / ".atoll-installed-lock"
BUF = MODULES / ".bin" / "buf"
INCLUDE_DIRS = [
    ROOT / "protos",
    pathlib.Path(protoc.__file__).parent / "_proto",  # google/protobuf/*.proto
    pathlib.Path(status_pb2.__file__).parents[2],  # googleapis-common-protos: google/rpc/*.proto
]


@contextlib.contextmanager
def _locked(path: pathlib.Path) -> Iterator[None]:
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def node_modules() -> pathlib.Path:
    """`npm ci` from the lock, unless node_modules already holds this very lock's install."""
    npm = shutil.which("npm")
    assert npm and shutil.which("node"), "node and npm are missing: run scripts/install-deps.sh"
    digest = hashlib.sha256((CLIENT_DIR / "package-lock.json").read_bytes()).hexdigest()
    with _locked(CLIENT_DIR / ".npm-ci.lock"):
        if not (STAMP.exists() and STAMP.read_text() == digest):
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=CLIENT_DIR,
                check=True,
                timeout=600,
            )
            STAMP.write_text(digest)
    return MODULES


def test_buf_builds_and_lints_the_protos(node_modules: pathlib.Path, tmp_path: pathlib.Path) -> None:
    image = tmp_path / "atoll.binpb"
    built = subprocess.run(
        [BUF, "build", "-o", image],
        check=False,
        cwd=ROOT / "protos",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    assert image.stat().st_size > 0
    linted = subprocess.run(
        [BUF, "lint"], check=False, cwd=ROOT / "protos", capture_output=True, text=True, timeout=300
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_a_typescript_client_compiles_against_types_generated_from_the_protos(
    node_modules: pathlib.Path,
) -> None:
    """proto-loader-gen-types generates the messages' and services' types from protos/; tsc --strict
    type-checks typed_client.ts (a paging List client) against them. A proto change that breaks a
    typed client fails here. The scratch directory sits under the client's directory so that
    tsc finds its node_modules, and goes away afterwards."""
    scratch = CLIENT_DIR / "build" / f"tsc-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        files = sorted(
            str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos" / "atoll" / "v1").glob("*.proto")
        )
        generated = subprocess.run(
            [node_modules / ".bin" / "proto-loader-gen-types", "--grpcLib=@grpc/grpc-js",
             f"--outDir={scratch / 'gen'}", "--keepCase", "--longs=String", "--enums=String", "--defaults",
             "--oneofs", "--includeDirs", *map(str, INCLUDE_DIRS), "--", *files],
            check=False, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert generated.returncode == 0, generated.stderr
        assert (scratch / "gen" / "atoll" / "v1" / "ClusterService.ts").exists()
        shutil.copy(CLIENT_DIR / "typed_client.ts", scratch)
        compiled = subprocess.run(
            [node_modules / ".bin" / "tsc", "--noEmit", "--strict", "--target", "es2022", "--module", "commonjs",
             "--moduleResolution", "node", "--types", "node", "--skipLibCheck", "typed_client.ts"],
            check=False, cwd=scratch, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def pod(name: str) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.spec.containers.add(name="main", image="busybox")
    return p


async def test_a_node_client_lists_pages_watches_and_decodes_field_violations(
    node_modules: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    cluster = await Cluster(tmp_path).start()  # mutual TLS, with the admin's certificate
    try:
        assert cluster.client is not None and cluster.admin is not None
        for i in range(5):
            await cluster.client.create(pod(f"p{i}"))
        tls_dir = tmp_path / "node-tls"
        tls_dir.mkdir()
        for name, pem in (("ca", cluster.admin.ca), ("cert", cluster.admin.cert), ("key", cluster.admin.key)):
            (tls_dir / f"{name}.pem").write_bytes(pem)
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(CLIENT_DIR / "client.js"),
            cluster.admin.server,
            "default",
            *map(str, INCLUDE_DIRS),
            env={**os.environ, "ATOLL_TLS_DIR": str(tls_dir)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        result = json.loads(out)
    finally:
        await cluster.stop()

    # Every service of the protos became a client.
    assert {"ClusterService", "NodeService"} <= set(result["services"])
    assert result["version"]["server"] == atoll.version() and result["version"]["api"] == "atoll.v1"
    assert "list-paging" in result["version"]["features"]
    assert result["pages"] == [["p0", "p1"], ["p2", "p3"], ["p4"]]
    # protobuf.js replaces a message field that comes twice: a list put together from stored
    # bytes must never split one (coordinator.api.encodedlist).
    assert [o["image"] for o in result["listed"]] == ["busybox"] * 5
    assert all(int(o["version"]) > 0 for o in result["listed"])
    assert result["watched"] == {"type": "EVENT_TYPE_ADDED", "name": "from-node"}
    error = result["error"]
    assert error["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert len(error["violations"]) == 1
    violation = error["violations"][0]
    assert violation["field"].startswith("spec.containers[0]") and violation["description"]
    assert error["details"] == f"{violation['field']}: {violation['description']}"
