"""Trust, end to end over real gRPC: credentials for every call, roles, node identity, join
tokens, --insecure only on loopback, certificate rotation, the agent API, the audit trail."""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
from typing import Any

import grpc
import pytest

from atoll import errors, kinds, pki, rpc, tls
from atoll.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    cluster_pb2,
    node_api_pb2,
    node_api_pb2_grpc,
    pod_pb2,
)
from coordinator.auth import roles, tokens
from coordinator.cli.main import main
from coordinator.client.api import Client
from coordinator.client.config import ClientConfig
from coordinator.server import Coordinator
from tests.functional.harness import Cluster, FakeNode, eventually, serve_config
from tests.functional.test_agent_behaviour import app_container

POD = kinds.by_name("Pod")
NODE = kinds.by_name("Node")
TOKEN = kinds.by_name("Token")
SECRET_FRAGMENT_LEN = 16


def pod(name: str) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.spec.containers.add(name="main", image="busybox")
    return p


def admin(c: Cluster) -> ClientConfig:
    assert c.admin is not None
    return c.admin


def ca(c: Cluster) -> pki.CertificateAuthority:
    assert c.coordinator.security is not None and c.coordinator.security.pki is not None
    return c.coordinator.security.pki.authority


def cert_config(c: Cluster, cn: str, group: str, *, server: str = "") -> ClientConfig:
    """A client config with a certificate the cluster CA signed for `cn` in `group`."""
    key, cert = ca(c).issue_key_pair(cn=cn, orgs=(group,), dns=(cn,), lifetime=3600, server=True)
    return ClientConfig(server=server or admin(c).server, ca=ca(c).cert_pem, cert=cert, key=key)


def token_address(c: Cluster) -> str:
    return f"127.0.0.1:{c.coordinator.token_port}"


async def user_token(c: Cluster, role: str, **kw: Any) -> str:
    token_id, secret = tokens.generate()
    assert c.client is not None
    await c.client.create(
        tokens.new_token(
            token_id,
            secret,
            ttl=kw.pop("ttl", 3600),
            usages=(tokens.USAGE_AUTH,),
            user=f"u-{role}",
            role=role,
            **kw,
        )
    )
    return f"{token_id}.{secret}"


def every_call() -> list[tuple[str, str, Any, str]]:
    """(service, method, an empty request, its shape: "unary", "server" streaming or "both") for
    every ClusterService and NodeService RPC."""
    from google.protobuf import message_factory

    calls = []
    for module, service in ((cluster_pb2, "ClusterService"), (node_api_pb2, "NodeService")):
        for m in module.DESCRIPTOR.services_by_name[service].methods:
            request = message_factory.GetMessageClass(m.input_type)()
            shape = "both" if m.client_streaming else "server" if m.server_streaming else "unary"
            calls.append((service, m.name, request, shape))
    return calls


async def call(channel: grpc.aio.Channel, service: str, method: str, request: Any, shape: str) -> None:
    path = f"/atoll.v1.{service}/{method}"
    if shape == "both":  # one request, then the answers
        stream = channel.stream_stream(path, request_serializer=type(request).SerializeToString)(
            iter([request]), timeout=5
        )
        async for _ in rpc.stream(stream):
            break
    elif shape == "server":
        stream = channel.unary_stream(path, request_serializer=type(request).SerializeToString)(
            request, timeout=5
        )
        async for _ in rpc.stream(stream):
            break
    else:
        await rpc.unary(
            channel.unary_unary(path, request_serializer=type(request).SerializeToString)(request, timeout=5)
        )


async def test_every_method_is_in_the_permission_table() -> None:
    assert roles.covered_methods() == set(roles.PERMISSIONS)


async def test_no_call_succeeds_without_credentials(secure: Cluster) -> None:
    calls = every_call()
    assert len(calls) >= 20
    # The mutual-TLS port: without a client certificate the handshake itself fails.
    no_cert = rpc.open_channel(admin(secure).server, credentials=tls.channel_credentials(ca(secure).cert_pem))
    # The token port: TLS, but no token.
    no_token = rpc.open_channel(
        token_address(secure), credentials=tls.channel_credentials(ca(secure).cert_pem)
    )
    # Plain text to either port.
    plain = rpc.open_channel(admin(secure).server)
    # A certificate from another CA.
    other = pki.CertificateAuthority.create(3600)
    key, cert = other.issue_key_pair(cn="admin", orgs=("atoll:admins",), lifetime=3600)
    forged = rpc.open_channel(
        admin(secure).server, credentials=tls.channel_credentials(ca(secure).cert_pem, key=key, cert=cert)
    )
    try:
        for service, method, request, shape in calls:
            for channel, expected in (
                (no_cert, errors.Unavailable),
                (plain, errors.Unavailable),
                (forged, errors.Unavailable),
                (no_token, errors.Unauthenticated),
            ):
                with pytest.raises(expected):
                    await call(channel, service, method, request, shape)
        with pytest.raises(errors.Unauthenticated, match=r"unknown token|malformed"):
            bad = rpc.open_channel(
                token_address(secure),
                credentials=tls.channel_credentials(ca(secure).cert_pem, token="abcdef.0123456789abcdef"),
            )
            await call(bad, "ClusterService", "List", cluster_pb2.ListRequest(kind=POD.kind), "unary")
    finally:
        for ch in (no_cert, no_token, plain, forged):
            await ch.close()


async def test_viewer_reads_but_cannot_create(secure: Cluster) -> None:
    assert secure.client is not None
    await secure.client.create(pod("existing"))
    for config in (
        cert_config(secure, "vera", "atoll:viewers"),
        ClientConfig(
            server=token_address(secure), ca=ca(secure).cert_pem, token=await user_token(secure, "viewer")
        ),
    ):
        async with Client(config=config) as viewer:
            items, _ = await viewer.list(POD)
            assert [p.metadata.name for p in items] == ["existing"]  # type: ignore[attr-defined]
            with pytest.raises(errors.PermissionDenied, match=r"\(viewer\) may not create pods"):
                await viewer.create(pod("nope"))
            with pytest.raises(errors.PermissionDenied):
                await viewer.delete(POD, "default", "existing")
            with pytest.raises(errors.PermissionDenied, match="may not list tokens"):
                await viewer.list(TOKEN)
    items, _ = await secure.client.list(POD)
    assert [p.metadata.name for p in items] == ["existing"]  # type: ignore[attr-defined]


async def test_operator_manages_workloads_not_nodes_or_tokens(secure: Cluster) -> None:
    await secure.add_node("node-1")
    async with Client(config=cert_config(secure, "olga", "atoll:operators")) as op:
        await op.create(pod("mine"))
        await op.delete(POD, "default", "mine")
        node = await op.get(NODE, "", "node-1")  # reading nodes is fine
        node.spec.unschedulable = True  # type: ignore[attr-defined]
        with pytest.raises(errors.PermissionDenied, match=r"olga \(operator\) may not update nodes"):
            await op.update(node)
        with pytest.raises(errors.PermissionDenied, match="may not create tokens"):
            token_id, secret = tokens.generate()
            await op.create(tokens.new_token(token_id, secret, ttl=60))
        with pytest.raises(errors.PermissionDenied, match="may not list tokens"):
            await op.list(TOKEN)
        with pytest.raises(errors.PermissionDenied):
            await op.sign_user_certificate("eve", "admin", pki.build_csr(pki.new_key(), "eve"))


async def _join(c: Cluster, token: str, node: str) -> node_api_pb2.JoinResponse:
    channel = rpc.open_channel(
        token_address(c), credentials=tls.channel_credentials(ca(c).cert_pem, token=token)
    )
    try:
        csr = pki.build_csr(pki.new_key(), node)
        return await rpc.unary(
            node_api_pb2_grpc.NodeServiceStub(channel).Join(node_api_pb2.JoinRequest(node_name=node, csr=csr))
        )
    finally:
        await channel.close()


async def test_expired_used_up_revoked_and_wrong_tokens_are_refused(secure: Cluster) -> None:
    client = secure.client
    assert client is not None

    async def make(**kw: Any) -> str:
        token_id, secret = tokens.generate()
        await client.create(tokens.new_token(token_id, secret, **{"ttl": 3600, **kw}))
        return f"{token_id}.{secret}"

    once = await make(uses=1)
    joined = await _join(secure, once, "h-1")
    assert pki.subject_cn(pki.load_cert(joined.certificate)) == "h-1"
    with pytest.raises(errors.PermissionDenied, match=r"has been used up \(1 of 1 uses\)"):
        await _join(secure, once, "h-2")

    expired = await make(ttl=0.2)
    await eventually(lambda: _expired(secure, expired), what="token expiry")

    revoked = await make()
    token = await client.get(TOKEN, "", revoked.split(".")[0])
    token.spec.revoked = True  # type: ignore[attr-defined]
    await client.update(token)
    with pytest.raises(errors.Unauthenticated, match="has been revoked"):
        await _join(secure, revoked, "h-4")

    wrong = once.split(".")[0] + ".0000000000000000"
    with pytest.raises(errors.Unauthenticated, match=r"unknown token .* or wrong secret"):
        await _join(secure, wrong, "h-5")
    with pytest.raises(errors.Unauthenticated, match="malformed token"):
        await _join(secure, "not-a-token", "h-6")
    # A user's bearer token cannot join, and a join token cannot read the API.
    with pytest.raises(errors.PermissionDenied):
        await _join(secure, await user_token(secure, "admin"), "h-7")
    async with Client(
        config=ClientConfig(server=token_address(secure), ca=ca(secure).cert_pem, token=await make())
    ) as bootstrap:
        with pytest.raises(errors.PermissionDenied, match="bootstrap"):
            await bootstrap.list(POD)
    # The API never returns a secret, not even hashed.
    items, _ = await client.list(TOKEN)
    assert items and all(not t.spec.secret_hash for t in items)  # type: ignore[attr-defined]
    used = await client.get(TOKEN, "", once.split(".")[0])
    assert list(used.status.joined_nodes) == ["h-1"] and used.status.uses == 1  # type: ignore[attr-defined]


async def _expired(c: Cluster, token: str) -> bool:
    try:
        await _join(c, token, "h-3")
    except errors.Unauthenticated as exc:
        return "expired at" in str(exc)
    raise AssertionError("an expired token joined")


async def test_insecure_refuses_non_loopback_addresses(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for listen in ("0.0.0.0:6443", "198.51.100.7:6443", "127.0.0.1:6443,[::]:6443"):
        code = await asyncio.to_thread(
            main, ["serve", "--insecure", "--listen", listen, "--data-dir", str(tmp_path)]
        )
        err = capsys.readouterr().err
        assert (
            code == 2 and err.startswith("coordinator serve: ") and "refusing to listen in plain text" in err
        ), err
    with pytest.raises(errors.InvalidArgument, match=r"refusing to listen in plain text on 0\.0\.0\.0:10250"):
        from atoll.agentconfig import load

        load(["--insecure"], environ={})


async def test_insecure_on_loopback_serves_plain_text(tmp_path: pathlib.Path) -> None:
    c = await Cluster(tmp_path, insecure=True).start()
    try:
        await c.add_node("node-1")
        await eventually(lambda: _ready(c, "node-1"), what="node-1 Ready over plain text")
        assert not (tmp_path / "coordinator" / "pki").exists()
    finally:
        await c.stop()


async def _ready(c: Cluster, name: str, client: Client | None = None) -> bool:
    client = client or c.client
    assert client is not None
    try:
        node = await client.get(NODE, "", name)
    except errors.NotFound:
        return False
    return any(x.type == "Ready" and x.status == 1 for x in node.status.conditions)  # type: ignore[attr-defined]


async def test_certificates_rotate_without_restart(tmp_path: pathlib.Path) -> None:
    c = await Cluster(tmp_path, cert_lifetime=6.0).start()
    try:
        node = await c.add_node("node-1", images=("busybox",))
        first_node = node.agent.credentials.read()[1]  # type: ignore[union-attr]
        first_server = (tmp_path / "coordinator" / "pki" / "server.crt").read_bytes()
        first_admin = (tmp_path / "coordinator" / "admin.conf").read_bytes()
        # Two lifetimes: without renewal everything would have expired twice.
        await eventually(lambda: _renewed(node, 2), timeout=20, what="two node certificate renewals")
        assert node.agent.credentials.read()[1] != first_node  # type: ignore[union-attr]
        assert (tmp_path / "coordinator" / "pki" / "server.crt").read_bytes() != first_server
        assert (tmp_path / "coordinator" / "admin.conf").read_bytes() != first_admin
        # The agent keeps working: pods, status, logs through its renewed server certificate. The
        # harness's client holds the first admin certificate, long expired: admin.conf is read
        # again for every call, as a CLI would.
        async with fresh(tmp_path) as client:
            await client.create(pod("after"))

        async def running() -> str | None:
            async with fresh(tmp_path) as client:
                p = await client.get(POD, "default", "after")
            ok = p.status.phase == pod_pb2.POD_PHASE_RUNNING  # type: ignore[attr-defined]
            return app_container(node, "after") if ok else None

        cid = await eventually(running, timeout=15, what="a pod started after rotation")
        node.runtime.logs_by_id[cid] = b"rotated\n"
        async with fresh(tmp_path) as client:
            chunks = [x async for x in client.logs(cluster_pb2.GetLogsRequest(pod="after", container="main"))]
            assert b"".join(chunks) == b"rotated\n"
            assert await _ready(c, "node-1", client)
    finally:
        await c.stop()


def fresh(tmp_path: pathlib.Path) -> Client:
    return Client(config=ClientConfig(**_read_conf(tmp_path / "coordinator" / "admin.conf")))


def _read_conf(path: pathlib.Path) -> dict[str, Any]:
    from coordinator.client import config as clientconfig

    parsed = clientconfig.parse(path.read_text(), str(path))
    return {"server": parsed.server, "ca": parsed.ca, "cert": parsed.cert, "key": parsed.key}


async def _renewed(node: FakeNode, times: int) -> bool:
    return node.agent.connection is not None and node.agent.connection.renewals >= times


async def test_the_agent_api_accepts_only_the_coordinator(secure: Cluster) -> None:
    node = await secure.add_node("node-1")
    assert node.agent.server is not None
    target = f"127.0.0.1:{node.agent.server.port}"
    pem = ca(secure).cert_pem

    async def status(creds: grpc.ChannelCredentials | None) -> agent_pb2.GetStatusResponse:
        channel = rpc.open_channel(target, credentials=creds, server_name="node-1")
        try:
            return await rpc.unary(
                agent_pb2_grpc.AgentServiceStub(channel).GetStatus(agent_pb2.GetStatusRequest(), timeout=5)
            )
        finally:
            await channel.close()

    assert secure.coordinator.security is not None and secure.coordinator.security.pki is not None
    ok = await status(secure.coordinator.security.pki.agent_credentials())
    assert ok.node_name == "node-1"
    for cn, group in (
        ("node-2", "atoll:nodes"),
        ("admin", "atoll:admins"),
        ("atoll:coordinator", "atoll:admins"),
    ):
        key, cert = ca(secure).issue_key_pair(cn=cn, orgs=(group,), lifetime=3600)
        with pytest.raises(errors.PermissionDenied, match="only the coordinator may call the agent API"):
            await status(tls.channel_credentials(pem, key=key, cert=cert))
    with pytest.raises(errors.Unavailable):
        await status(tls.channel_credentials(pem))  # no client certificate: no handshake
    with pytest.raises(errors.Unavailable):
        await status(None)  # plain text


async def test_audit_trail_and_no_secrets_in_logs(
    secure: Cluster,
    caplog: pytest.LogCaptureFixture,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    assert secure.client is not None
    viewer_token = await user_token(secure, "viewer")
    await secure.client.create(pod("audited"))
    async with Client(
        config=ClientConfig(server=token_address(secure), ca=ca(secure).cert_pem, token=viewer_token)
    ) as viewer:
        with pytest.raises(errors.PermissionDenied):
            await viewer.create(pod("denied"))
        await viewer.list(POD)  # accepted reads are not audited
    node = await secure.add_node("node-1")
    # The CLI prints a token once; it must not reach any log either.
    code = await asyncio.to_thread(
        main, ["--config", str(secure.admin_conf), "token", "create", "--ttl", "1h", "-o", "json"]
    )
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["caHash"] == ca(secure).hash and "--join-token" in printed["command"]
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert stat_mode(tmp_path / "audit.jsonl") == 0o600
    created = [x for x in lines if x["method"].endswith("/Create") and x.get("name") == "audited"]
    assert created and created[0]["user"] == "admin" and created[0]["result"] == "OK" and created[0]["time"]
    denied = [x for x in lines if x["result"] == "PERMISSION_DENIED"]
    assert denied and denied[0]["user"] == "u-viewer" and "may not create pods" in denied[0]["reason"]
    assert not [x for x in lines if x["method"].endswith("/List")]
    joins = [x for x in lines if x["method"].endswith("/Join")]
    assert joins and joins[0]["user"].startswith("bootstrap:") and joins[0]["name"] == "node-1"
    secrets = [t.split(".")[1] for t in (viewer_token, secure.join_token, printed["token"])]
    key = node.agent.credentials.read()[0].decode()  # type: ignore[union-attr]
    text = caplog.text + (tmp_path / "audit.jsonl").read_text()
    for secret in secrets:
        assert len(secret) == SECRET_FRAGMENT_LEN and secret not in text
    assert "PRIVATE KEY" not in text and key[40:80] not in text


def stat_mode(path: pathlib.Path) -> int:
    return path.stat().st_mode & 0o777


async def test_create_user_writes_working_configs(
    secure: Cluster, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "vera.conf"
    assert (
        await asyncio.to_thread(
            main,
            [
                "--config",
                str(secure.admin_conf),
                "config",
                "create-user",
                "vera",
                "--role",
                "viewer",
                "-f",
                str(conf),
            ],
        )
        == 0
    )
    tok = tmp_path / "tom.conf"
    assert (
        await asyncio.to_thread(
            main,
            [
                "--config",
                str(secure.admin_conf),
                "config",
                "create-user",
                "tom",
                "--role",
                "operator",
                "--token",
                "-f",
                str(tok),
            ],
        )
        == 0
    )
    capsys.readouterr()
    assert stat_mode(conf) == 0o600 and stat_mode(tok) == 0o600
    assert await asyncio.to_thread(main, ["--config", str(conf), "get", "pods"]) == 0
    assert (
        await asyncio.to_thread(
            main,
            [
                "--config",
                str(conf),
                "create",
                "-f",
                str(pathlib.Path(__file__).parents[2] / "examples" / "apache-pod.json"),
            ],
        )
        == 1
    )
    assert "PermissionDenied" in capsys.readouterr().err
    # Token users go to the token port; the config says so.
    assert (
        await asyncio.to_thread(
            main,
            [
                "--config",
                str(tok),
                "create",
                "-f",
                str(pathlib.Path(__file__).parents[2] / "examples" / "apache-pod.json"),
            ],
        )
        == 0
    )
    assert await asyncio.to_thread(main, ["--config", str(secure.admin_conf), "token", "list"]) == 0
    out = capsys.readouterr().out
    assert "tom (operator)" in out and "<join>" in out
    token_id = next(line.split()[0] for line in out.splitlines() if "tom (operator)" in line)
    assert (
        await asyncio.to_thread(main, ["--config", str(secure.admin_conf), "token", "revoke", token_id]) == 0
    )
    assert await asyncio.to_thread(main, ["--config", str(tok), "get", "pods"]) == 1
    assert "revoked" in capsys.readouterr().err


async def test_unix_socket_is_private_and_admin(tmp_path: pathlib.Path) -> None:
    sock = tmp_path / "c.sock"
    coordinator = Coordinator(serve_config(tmp_path, listen=f"127.0.0.1:0,unix://{sock}"))
    await coordinator.start()
    try:
        assert stat_mode(sock) == 0o600
        async with Client(f"unix://{sock}") as local:
            await local.create(pod("over-the-socket"))
            info = await local.cluster_info()
            assert info.ca_hash.startswith("sha256:") and info.server
    finally:
        await coordinator.stop()
