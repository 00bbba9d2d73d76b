"""`coordinator store migrate`: a live-looking SQLite cluster moved into the real etcd, served from there.

The cluster (TLS, a fake-runtime agent, pods, a replication controller, a
service, a token) runs in this process on SQLite and is stopped; the real
`coordinator store migrate` copies it into a key prefix of the run's etcd; a
new coordinator, with a data dir of its own, serves it from etcd with the
cluster secret. Every object and the CA are unchanged, and the agent, with
the node certificate it already had, reconnects without joining again.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import uuid

from atoll import kinds
from atoll.v1 import workloads_pb2
from coordinator.client import config as clientconfig
from coordinator.client.api import Client
from coordinator.server import Coordinator
from tests.functional.harness import Cluster, FakeNode, eventually, serve_config
from tests.functional.test_agent_behaviour import make_pod
from tests.functional.test_controllers import make_rc
from tests.integration.etcd import EtcdCluster

KINDS = ("Pod", "ReplicationController", "Service", "Node", "Token")


def migrate(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli.main", "store", "migrate", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def snapshot(client: Client) -> dict[str, dict[str, tuple[bytes, bytes]]]:
    """Every object's metadata (uid, labels, times, owners...) and spec; resourceVersions are the
    store's revisions, which etcd numbers anew."""
    seen: dict[str, dict[str, tuple[bytes, bytes]]] = {}
    for kind in KINDS:
        items, _ = await client.list(kinds.by_name(kind), "")
        seen[kind] = {}
        for o in items:
            meta = type(o.metadata)()  # type: ignore[attr-defined]
            meta.CopyFrom(o.metadata)  # type: ignore[attr-defined]
            meta.ClearField("resource_version")
            key = f"{meta.namespace}/{meta.name}"
            seen[kind][key] = (meta.SerializeToString(deterministic=True), o.spec.SerializeToString())  # type: ignore[attr-defined]
    return seen


async def test_migrate_sqlite_to_etcd_keeps_every_object_the_ca_and_the_agents(
    etcd_cluster: EtcdCluster, tmp_path: pathlib.Path
) -> None:
    old = await Cluster(tmp_path / "old").start()
    node = await old.add_node("node-0", images=("busybox",))
    assert old.client is not None
    await old.client.create(make_pod("solo"))
    await old.client.create(make_rc("web", 2))
    svc = workloads_pb2.Service()
    svc.metadata.name = "web"
    svc.spec.selector["name"] = "web"
    svc.spec.ports.add(port=80, target_port=80)
    await old.client.create(svc)

    async def settled() -> bool:
        items, _ = await old.client.list(kinds.by_name("Pod"), "")  # type: ignore[union-attr]
        return len(items) == 3 and all(p.status.phase == 2 for p in items)  # type: ignore[attr-defined]

    await eventually(settled, timeout=30, what="3 pods running")
    before = await snapshot(old.client)
    assert all(before[k] for k in KINDS), {k: len(v) for k, v in before.items()}
    ca_before = (old.coordinator.cfg.data_path / "pki" / "ca.crt").read_bytes()
    hash_before = (await old.client.cluster_info()).ca_hash

    secret = tmp_path / "cluster-secret"
    secret.write_bytes(os.urandom(24).hex().encode())
    db = old.coordinator.cfg.data_path / "atoll.db"
    target = f"etcd://{etcd_cluster.endpoints}/atoll-{uuid.uuid4().hex[:6]}"
    args = ("--from", f"sqlite://{db}", "--to", target, "--cluster-secret-file", str(secret))
    busy = migrate(*args)  # the coordinator still runs: its store is not to be copied under it
    assert busy.returncode == 1 and "in use by another process" in busy.stderr, busy.stderr
    await node.stop()
    await old.stop()

    res = migrate(*args)
    assert res.returncode == 0, res.stderr
    assert "and the cluster CA" in res.stdout, res.stdout
    copied = dict(line.split(": ") for line in res.stdout.splitlines() if ": " in line)
    assert copied["pods"] == "3" and copied["replicationcontrollers"] == "1", res.stdout
    assert copied["services"] == "1" and copied["nodes"] == "1" and int(copied["tokens"]) >= 1, res.stdout
    again = migrate(*args)
    assert again.returncode == 1 and "already holds" in again.stderr, again.stderr
    forced = migrate(*args, "--force")
    assert forced.returncode == 0 and "and the cluster CA" in forced.stdout, forced.stderr

    new = Coordinator(
        serve_config(tmp_path / "new", store=target, cluster_secret_file=str(secret), token_listen="")
    )
    await new.start()
    try:
        assert (new.cfg.data_path / "pki" / "ca.crt").read_bytes() == ca_before
        admin = clientconfig.parse((new.cfg.data_path / "admin.conf").read_text(), "admin.conf")
        async with Client(config=admin) as client:
            assert await snapshot(client) == before
            assert (await client.cluster_info()).ca_hash == hash_before
            # The agent comes back with its old state dir and certificate, no token: no joining again.
            back = FakeNode(tmp_path / "old", "node-0", new.port, ("busybox",))
            back.runtime = node.runtime
            back.agent = back._new_agent()
            await back.start()
            try:
                await eventually(settled_on(client), timeout=30, what="the pods Running, served from etcd")
            finally:
                await back.stop()
    finally:
        await new.stop()


def settled_on(client: Client):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        items, _ = await client.list(kinds.by_name("Pod"), "")
        return len(items) == 3 and all(p.status.phase == 2 for p in items)  # type: ignore[attr-defined]

    return check
