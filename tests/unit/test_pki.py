"""The PKI building blocks, the token format, the role table and client configs, without servers."""

from __future__ import annotations

import hashlib
import pathlib
import stat

import pytest
from cryptography.hazmat.primitives import serialization

from agent.bootstrap import NodeCredentials, join_address, pick_ca
from atoll import certinfo, errors, pki, tls
from atoll import config as layered
from atoll.pkichild import ChildKeyTool
from atoll.v1 import auth_pb2, cluster_pb2, node_api_pb2
from coordinator.auth import roles, tokens
from coordinator.auth.certs import ClusterPki, PkiSettings, check_user
from coordinator.auth.roles import Identity, Permission
from coordinator.client import config as clientconfig


def test_ca_hash_is_kubeadms_spki_digest() -> None:
    ca = pki.CertificateAuthority.create(3600)
    spki = ca.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert ca.hash == "sha256:" + hashlib.sha256(spki).hexdigest() == pki.ca_hash(ca.cert_pem)
    assert certinfo.parse_pin(ca.hash.upper().replace("SHA256", "sha256")) == ca.hash
    for bad in ("md5:abc", "sha256:xyz", "deadbeef", "sha256:" + "0" * 63):
        with pytest.raises(errors.InvalidArgument, match="sha256:<64 hex digits>"):
            certinfo.parse_pin(bad)


def test_csr_signing_sets_identity_and_lifetime() -> None:
    ca = pki.CertificateAuthority.create(86400)
    key = pki.new_key()
    csr = pki.load_csr(pki.build_csr(key, "node-1", ["atoll:admins"]))  # asks for more than it gets
    cert = ca.issue(
        csr.public_key(), cn="node-1", orgs=("atoll:nodes",), dns=("node-1",), lifetime=600, server=True
    )
    assert pki.subject_cn(cert) == "node-1" and pki.subject_orgs(cert) == ("atoll:nodes",)
    assert pki.san_names(cert) == ({"node-1"}, set())
    assert ca.issued(cert) and pki.key_matches(key, cert)
    life = certinfo.Lifetime.of(cert)
    assert 600 <= (life.not_after - life.not_before).total_seconds() <= 631
    assert not life.due() and not life.expired()
    assert life.renew_at < life.not_after
    other = pki.CertificateAuthority.create(60)
    assert not other.issued(cert)
    with pytest.raises(errors.InvalidArgument, match="not a PEM certificate signing request"):
        pki.load_csr(b"garbage")


def test_ca_load_checks_key_and_constraints() -> None:
    ca = pki.CertificateAuthority.create(3600)
    other = pki.CertificateAuthority.create(3600)
    with pytest.raises(errors.InvalidArgument, match="does not belong"):
        pki.CertificateAuthority.load(ca.cert_pem, pki.key_pem(other.key))
    key, leaf = ca.issue_key_pair(cn="x", lifetime=60)
    with pytest.raises(errors.InvalidArgument, match="not a CA"):
        pki.CertificateAuthority.load(leaf, key)
    assert pki.CertificateAuthority.load(ca.cert_pem, pki.key_pem(ca.key)).hash == ca.hash


def test_private_files_are_never_readable_by_others(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "sub" / "key.pem"
    pki.write_private(path, b"secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_bytes() == b"secret"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_cluster_pki_creates_renews_and_keeps(tmp_path: pathlib.Path) -> None:
    settings = PkiSettings(data_dir=tmp_path, dns_names=("localhost", "coord"), ip_addresses=("127.0.0.1",))
    first = ClusterPki(settings)
    first.server = "127.0.0.1:6443"
    assert first.ensure()
    assert stat.S_IMODE((tmp_path / "pki" / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "admin.conf").stat().st_mode) == 0o600
    conf = clientconfig.parse((tmp_path / "admin.conf").read_text(), "admin.conf")
    cert = pki.load_cert(conf.cert)
    assert pki.subject_cn(cert) == "admin" and pki.subject_orgs(cert) == ("atoll:admins",)
    # A second start changes nothing; a new name re-issues only the server certificate.
    again = ClusterPki(settings)
    again.server = first.server
    assert not again.ensure()
    wider = ClusterPki(PkiSettings(data_dir=tmp_path, dns_names=("coord", "new.example"), ip_addresses=()))
    wider.server = first.server
    server_before = (tmp_path / "pki" / "server.crt").read_bytes()
    assert wider.ensure()
    assert (tmp_path / "pki" / "server.crt").read_bytes() != server_before
    assert "new.example" in pki.san_names(pki.load_cert((tmp_path / "pki" / "server.crt").read_bytes()))[0]
    assert wider.authority.hash == first.authority.hash
    with pytest.raises(errors.InvalidArgument, match="not node 'node-2'"):
        wider.sign_node(pki.build_csr(pki.new_key(), "node-1"), "node-2")
    with pytest.raises(errors.InvalidArgument, match="invalid user name"):
        wider.sign_user(pki.build_csr(pki.new_key(), "atoll:coordinator"), "atoll:coordinator", "admin", 0)


def test_operator_provided_ca(tmp_path: pathlib.Path) -> None:
    ca = pki.CertificateAuthority.create(3600)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "ca.key").write_bytes(pki.key_pem(ca.key))
    own = ClusterPki(
        PkiSettings(
            data_dir=tmp_path / "data", ca_cert=str(tmp_path / "ca.crt"), ca_key=str(tmp_path / "ca.key")
        )
    )
    own.ensure()
    assert own.authority.hash == ca.hash
    assert not (tmp_path / "data" / "pki" / "ca.key").exists()


@pytest.mark.allow_subprocess  # the signature check runs in atoll.pkitool
def test_discovery_keeps_only_the_pinned_ca_that_signed_the_server() -> None:
    ca = pki.CertificateAuthority.create(3600)
    _, leaf = ca.issue_key_pair(cn="coord", lifetime=60, server=True)
    assert pick_ca([leaf, ca.cert_pem], ca.hash, "x", ChildKeyTool()) == ca.cert_pem
    impostor = pki.CertificateAuthority.create(3600)
    _, fake_leaf = impostor.issue_key_pair(cn="coord", lifetime=60, server=True)
    with pytest.raises(errors.Unauthenticated, match="presented no CA matching"):
        pick_ca([fake_leaf, impostor.cert_pem], ca.hash, "x", ChildKeyTool())
    # The right CA sent along with a leaf it did not sign is refused too.
    with pytest.raises(errors.Unauthenticated, match="did not sign"):
        pick_ca([fake_leaf, ca.cert_pem], ca.hash, "x", ChildKeyTool())
    assert join_address("10.0.0.1:6443", "") == "10.0.0.1:6444"
    assert join_address("10.0.0.1:6443", "10.0.0.2:7000") == "10.0.0.2:7000"


def test_node_credentials_ignore_mismatched_files(tmp_path: pathlib.Path) -> None:
    ca = pki.CertificateAuthority.create(3600)
    creds = NodeCredentials(tmp_path)
    assert creds.read() is None and creds.lifetime() is None
    key, cert = ca.issue_key_pair(cn="n", lifetime=60)
    other_key, _ = ca.issue_key_pair(cn="m", lifetime=60)
    creds.save(other_key, cert, ca.cert_pem)
    assert creds.read() is None
    creds.save(key, cert, ca.cert_pem)
    assert creds.read() == (key, cert, ca.cert_pem)
    assert stat.S_IMODE(creds.files.key.stat().st_mode) == 0o600


def test_token_format_hash_and_refusals() -> None:
    token_id, secret = tokens.generate()
    assert tokens.TOKEN_RE.match(f"{token_id}.{secret}")
    assert tokens.split(f"{token_id}.{secret}") == (token_id, secret)
    for bad in ("abc.def", "ABCDEF.0123456789abcdef", "abcdef0123456789abcdef", ""):
        with pytest.raises(errors.Unauthenticated, match="malformed"):
            tokens.split(bad)
    obj = tokens.new_token(token_id, secret, ttl=10, uses=2, clock=lambda: 1000.0)
    assert obj.spec.secret_hash == "sha256:" + hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(obj)
    tokens.validate(obj)
    assert tokens.refusal(obj, 1005.0, consuming=True) is None
    assert "expired at" in str(tokens.refusal(obj, 1010.0))
    obj.status.uses = 2
    assert "used up (2 of 2 uses)" in str(tokens.refusal(obj, 1005.0, consuming=True))
    obj.spec.revoked = True
    assert "revoked" in str(tokens.refusal(obj, 1005.0))
    redacted = auth_pb2.Token()
    redacted.CopyFrom(obj)
    tokens.redact(redacted)
    assert not redacted.spec.secret_hash
    bad_role = tokens.new_token(token_id, secret, ttl=0, usages=(tokens.USAGE_AUTH,), user="u", role="root")
    with pytest.raises(errors.InvalidArgument, match="role must be one of"):
        tokens.validate(bad_role)


def test_token_updates_keep_the_secret_and_status() -> None:
    old = tokens.new_token("abcdef", "0123456789abcdef", ttl=0)
    old.status.uses = 1
    new = auth_pb2.Token()
    new.metadata.name = "abcdef"
    new.spec.usages.append("join")
    new.spec.revoked = True
    tokens.prepare_update(new, old)
    assert new.spec.secret_hash == old.spec.secret_hash and new.status.uses == 1 and new.spec.revoked


def _ident(role: str, node: str = "") -> Identity:
    return Identity(user="u", role=role, via="test", node=node)


@pytest.mark.parametrize(
    ("role", "permission", "allowed"),
    [
        ("admin", Permission("delete", "tokens"), True),
        ("admin", Permission("node", node="n1"), True),
        ("admin", Permission("join"), False),
        ("operator", Permission("create", "pods"), True),
        ("operator", Permission("delete", "replicationcontrollers"), True),
        ("operator", Permission("get", "pods/log"), True),
        ("operator", Permission("list", "nodes"), True),
        ("operator", Permission("update", "nodes"), False),
        ("operator", Permission("create", "networks"), False),
        ("operator", Permission("update", "registries"), False),
        ("operator", Permission("create", "machines"), False),
        ("operator", Permission("list", "tokens"), False),
        ("operator", Permission("create", "certificates"), False),
        ("viewer", Permission("watch", "pods"), True),
        ("viewer", Permission("get", "registries"), True),
        ("viewer", Permission("create", "pods"), False),
        ("viewer", Permission("get", "tokens"), False),
        ("node", Permission("node", node="u"), False),
        ("node", Permission("list", "pods"), False),
        ("bootstrap", Permission("join"), True),
        ("bootstrap", Permission("get", "pods"), False),
        ("", Permission("get", "pods"), False),
    ],
)
def test_role_table(role: str, permission: Permission, allowed: bool) -> None:
    if allowed:
        roles.authorize(_ident(role), permission)
    else:
        with pytest.raises(errors.PermissionDenied):
            roles.authorize(_ident(role), permission)


def test_nodes_act_only_as_themselves_and_every_method_is_mapped() -> None:
    roles.authorize(
        _ident("node", "n1"),
        roles.required("/atoll.v1.NodeService/Heartbeat", node_api_pb2.HeartbeatRequest(node_name="n1")),
    )
    with pytest.raises(errors.PermissionDenied, match="only act as itself, not as node n2"):
        roles.authorize(
            _ident("node", "n1"),
            roles.required("/atoll.v1.NodeService/Heartbeat", node_api_pb2.HeartbeatRequest(node_name="n2")),
        )
    assert roles.covered_methods() == set(roles.PERMISSIONS)
    with pytest.raises(errors.PermissionDenied, match="not open to any caller"):
        roles.required("/atoll.v1.ClusterService/Nope", cluster_pb2.ListRequest())
    create = cluster_pb2.CreateRequest()
    create.object.token.metadata.name = "abcdef"
    assert roles.required("/atoll.v1.ClusterService/Create", create) == Permission(
        "create", "tokens", name="abcdef"
    )


def test_client_config_round_trip_and_precedence(tmp_path: pathlib.Path) -> None:
    ca = pki.CertificateAuthority.create(3600)
    key, cert = ca.issue_key_pair(cn="alice", orgs=("atoll:viewers",), lifetime=60)
    conf = clientconfig.ClientConfig(server="10.0.0.1:6443", user="alice", ca=ca.cert_pem, cert=cert, key=key)
    path = tmp_path / "alice.conf"
    conf.write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert clientconfig.parse(path.read_text(), "x") == conf
    other = tmp_path / "env.conf"
    assert clientconfig.resolve(str(path), {"ATOLL_CONFIG": str(other)}) == path
    assert clientconfig.resolve(None, {"ATOLL_CONFIG": str(other)}) == other
    with pytest.raises(errors.InvalidArgument, match="unknown setting"):
        clientconfig.parse("server: x\npassword: y\n", "bad")
    with pytest.raises(errors.InvalidArgument, match="go together"):
        clientconfig.parse(f"server: x\nclient-certificate: |\n  {cert.decode().splitlines()[0]}\n", "bad")


def test_durations_users_and_loopback() -> None:
    assert layered.parse_duration("1h30m") == 5400 and layered.parse_duration("90") == 90
    assert layered.parse_duration("10y") == 10 * 365 * 86400
    with pytest.raises(ValueError, match="duration"):
        layered.parse_duration("soon")
    check_user("alice@example.com")
    for bad in ("atoll:coordinator", "Alice", "-x", ""):
        with pytest.raises(errors.InvalidArgument):
            check_user(bad)
    for address, loop in (
        ("127.0.0.1:1", True),
        ("127.9.9.9:1", True),
        ("[::1]:1", True),
        ("localhost:1", True),
        ("unix:///x.sock", True),
        ("0.0.0.0:1", False),
        ("[::]:1", False),
        ("10.0.0.1:1", False),
        ("example.com:1", False),
    ):
        assert tls.is_loopback(address) is loop, address
