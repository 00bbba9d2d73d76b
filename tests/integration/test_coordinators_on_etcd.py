"""Several coordinators on one etcd: all serve the API, exactly one leads, a successor takes over.

Three coordinators run in this process on the run's real etcd, with TLS: they
share one cluster CA through the store, sealed with the cluster secret.
Each answers the API from the shared store; only the leader schedules.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from atoll import errors, kinds
from atoll.v1 import pod_pb2
from coordinator.cli.main import main as cli
from coordinator.client import config as clientconfig
from coordinator.client.api import Client
from coordinator.config import ServeConfig
from coordinator.server import Coordinator
from coordinator.store.etcdelection import EtcdElector
from tests.functional.harness import serve_config
from tests.integration.etcd import EtcdCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
POD = kinds.by_name("Pod")


def secret_file(tmp_path: pathlib.Path, name: str, secret: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(secret)
    path.chmod(0o600)
    return str(path)


def config_for(tmp_path: pathlib.Path, i: int, store: str, secret: str) -> ServeConfig:
    return serve_config(
        tmp_path / f"c{i}", token_listen="", store=store, leader_ttl=2, cluster_secret_file=secret
    )


@pytest.fixture
async def three(etcd_cluster: EtcdCluster, tmp_path: pathlib.Path) -> AsyncIterator[list[Coordinator]]:
    """Three coordinators with TLS on one etcd (a key prefix of their own), started all at once."""
    prefix = f"atoll-{uuid.uuid4().hex[:6]}"
    store = f"etcd://{etcd_cluster.endpoints}/{prefix}"
    secret = secret_file(tmp_path, "cluster-secret", os.urandom(32).hex().encode())
    started = [Coordinator(config_for(tmp_path, i, store, secret)) for i in range(3)]
    try:
        # At once, on an empty store: they race to put the cluster CA there and must agree on one.
        await asyncio.gather(*(c.start() for c in started))
        yield started
    finally:
        for c in started:
            await c.stop()


async def leaders(coordinators: list[Coordinator]) -> list[Coordinator]:
    return [c for c in coordinators if c.leading is not None and not c.leading.lost.is_set()]


async def test_all_serve_one_leads_and_a_successor_takes_over(
    three: list[Coordinator], tmp_path: pathlib.Path
) -> None:
    deadline = time.monotonic() + 10
    while not await leaders(three):
        assert time.monotonic() < deadline, "no leader"
        await asyncio.sleep(0.05)
    (leader,) = await leaders(three)
    # One CA for all; each its own serving certificate.
    cas = {(c.cfg.data_path / "pki" / "ca.crt").read_bytes() for c in three}
    servers = {(c.cfg.data_path / "pki" / "server.crt").read_bytes() for c in three}
    assert len(cas) == 1 and len(servers) == 3
    # The admin credentials of one coordinator are good on every other (mutual TLS, one CA).
    admin = clientconfig.parse(three[0].security.pki.admin_conf.read_text(), "admin.conf")  # type: ignore[union-attr]
    async with Client(f"127.0.0.1:{three[0].port}", config=admin) as client:
        members = (await client.coordinators()).members
        assert len(members) == 3 and [m.leader for m in members].count(True) == 1
        pod = pod_pb2.Pod()
        pod.metadata.name = f"p-{uuid.uuid4().hex[:6]}"
        pod.spec.containers.add(name="main", image="busybox")
        pod_uid = (await client.create(pod)).metadata.uid  # type: ignore[attr-defined]
    for c in three:  # every coordinator answers from the shared store
        async with Client(f"127.0.0.1:{c.port}", config=admin) as client:
            got = await client.get(POD, "default", pod.metadata.name)
            assert got.metadata.name == pod.metadata.name  # type: ignore[attr-defined]
    # One client config for all three, the leader's address first: the way an operator writes it.
    several = tmp_path / "admin-all.conf"
    several.write_text(three[0].security.pki.admin_conf.read_text())  # type: ignore[union-attr]
    ordered = [leader, *(c for c in three if c is not leader)]
    assert (
        cli(
            ["config", "set-server", ",".join(f"127.0.0.1:{c.port}" for c in ordered), "--file", str(several)]
        )
        == 0
    )
    listed = clientconfig.parse(several.read_text(), str(several))
    assert listed.servers == [f"127.0.0.1:{c.port}" for c in ordered] and listed.cert == admin.cert
    assert "servers:" in several.read_text()

    stopped = time.monotonic()
    await leader.stop()
    three.remove(leader)
    while not await leaders(three):
        assert time.monotonic() - stopped < 6, "no successor"
        await asyncio.sleep(0.05)
    assert isinstance(three[0].elector, EtcdElector)
    async with Client(config=listed) as client:  # the first listed is gone: another answers
        got = await client.get(POD, "default", pod.metadata.name)
        assert got.metadata.uid == pod_uid  # type: ignore[attr-defined]


async def test_a_coordinator_with_another_secret_is_refused(
    three: list[Coordinator], tmp_path: pathlib.Path
) -> None:
    wrong = secret_file(tmp_path, "wrong-secret", b"not-the-cluster-secret-at-all")
    intruder = Coordinator(config_for(tmp_path, 9, three[0].cfg.store, wrong))
    with pytest.raises(errors.InvalidArgument, match="cluster_secret_file: this secret does not open"):
        await intruder.start()
    await intruder.stop()


async def test_serve_on_etcd_names_a_wrong_or_missing_secret_and_exits(
    three: list[Coordinator], tmp_path: pathlib.Path
) -> None:
    """`coordinator serve` as an operator runs it: one line saying what is wrong, a non-zero exit."""
    wrong = secret_file(tmp_path, "wrong-secret", os.urandom(32).hex().encode())

    def serve(*extra: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "coordinator.cli.main", "serve", "--data-dir", str(tmp_path / "proc")]
        argv += ["--listen", "127.0.0.1:0", "--token-listen", "", "--store", three[0].cfg.store, *extra]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    refused = await asyncio.to_thread(serve, "--cluster-secret-file", wrong)
    assert refused.returncode == 1, refused.stderr
    assert (
        "coordinator serve: cluster_secret_file: this secret does not open the cluster CA in the store"
        in refused.stderr
    ), refused.stderr
    assert not (tmp_path / "proc" / "pki" / "server.crt").exists()  # nothing issued with a wrong secret
    unsealed = await asyncio.to_thread(serve)
    assert unsealed.returncode == 2 and "cluster_secret_file: coordinators on etcd share" in unsealed.stderr
