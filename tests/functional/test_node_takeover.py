"""Node identity that survives restarts: a join token cannot take over an existing node's name,
and a node cannot label itself into another node's pods (after Kubernetes' NodeRestriction)."""

from __future__ import annotations

import asyncio
import json
import pathlib
import time

import pytest

from atoll import errors, kinds, rpc
from atoll.v1 import auth_pb2, node_api_pb2, node_api_pb2_grpc, node_pb2
from coordinator.auth import tokens
from coordinator.cli.main import main
from tests.functional.harness import Cluster
from tests.functional.test_security import _join, cert_config

NODE = kinds.by_name("Node")
TOKEN = kinds.by_name("Token")


async def join_token(c: Cluster, *, node: str = "", uses: int = 0) -> str:
    token_id, secret = tokens.generate()
    assert c.client is not None
    await c.client.create(tokens.new_token(token_id, secret, ttl=3600, uses=uses, node=node))
    return f"{token_id}.{secret}"


async def uses_of(c: Cluster, token: str) -> int:
    assert c.client is not None
    got = await c.client.get(TOKEN, "", token.split(".", maxsplit=1)[0])
    assert isinstance(got, auth_pb2.Token)
    return got.status.uses


async def test_a_join_token_cannot_take_over_an_existing_nodes_name(tmp_path: pathlib.Path) -> None:
    c = await Cluster(tmp_path).start()
    try:
        await c.add_node("node-a")
        general = await join_token(c)
        with pytest.raises(errors.AlreadyExists, match=r"node node-a exists: .*token create --node node-a"):
            await _join(c, general, "node-a")
        assert await uses_of(c, general) == 0  # a refused join spends nothing
        for node in c.nodes:
            await node.stop()
        c.nodes.clear()
    finally:
        await c.stop()
    # After a coordinator restart (no heartbeat remembered in memory) the name is still taken.
    again = await Cluster(tmp_path).start()
    try:
        with pytest.raises(errors.AlreadyExists, match="node node-a exists"):
            await _join(again, general, "node-a")
        elsewhere = await join_token(again, node="node-b")
        with pytest.raises(errors.PermissionDenied, match="is bound to node node-b, not node-c"):
            await _join(again, elsewhere, "node-c")
        reinstalled = await join_token(again, node="node-a")  # the host's own token: a reinstall
        assert (await _join(again, reinstalled, "node-a")).certificate
        assert again.client is not None
        await again.client.delete(NODE, "", "node-a")  # or an admin forgets the node
        assert (await _join(again, general, "node-a")).certificate
    finally:
        await again.stop()


async def test_token_create_defaults_to_one_use_for_an_hour(
    secure: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(
        main, [*secure.cli_args(), "token", "create", "-o", "json", "--node", "bm-01"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["uses"] == 1
    assert secure.client is not None
    token = await secure.client.get(TOKEN, "", out["id"])
    assert isinstance(token, auth_pb2.Token)
    assert token.spec.max_uses == 1 and token.spec.node_name == "bm-01"
    assert 3500 < token.spec.expiration.ToSeconds() - time.time() <= 3600


@pytest.mark.parametrize(
    ("label", "value", "message"),
    [
        ("kubernetes.io/hostname", "node-a", "may not label itself kubernetes.io/hostname=node-a"),
        ("node-restriction.atoll.io/pci", "yes", "are set by admins, not by node node-x itself"),
    ],
)
async def test_a_node_cannot_label_itself_into_other_nodes_pods(
    secure: Cluster, label: str, value: str, message: str
) -> None:
    config = cert_config(secure, "node-x", "atoll:nodes")
    channel = rpc.open_channel(config.server, credentials=config.credentials(config.server))
    try:
        registration = node_api_pb2.RegisterRequest()
        registration.node.metadata.name = "node-x"
        registration.node.metadata.labels[label] = value
        registration.node.status.allocatable.cpu_millis = 10**9  # "a huge capacity"
        with pytest.raises(errors.PermissionDenied, match=message):
            await rpc.unary(node_api_pb2_grpc.NodeServiceStub(channel).Register(registration))
    finally:
        await channel.close()
    assert secure.client is not None
    with pytest.raises(errors.NotFound):
        await secure.client.get(NODE, "", "node-x")  # nothing registered


async def test_admins_set_protected_labels_and_a_reregistering_node_keeps_them(secure: Cluster) -> None:
    node = await secure.add_node("node-y")
    assert secure.client is not None
    got = await secure.client.get(NODE, "", "node-y")
    assert isinstance(got, node_pb2.Node)
    got.metadata.labels["node-restriction.atoll.io/sriov"] = "true"
    await secure.client.update(got)
    await node.restart()  # registers again
    again = await secure.client.get(NODE, "", "node-y")
    assert again.metadata.labels["node-restriction.atoll.io/sriov"] == "true"  # type: ignore[attr-defined]
