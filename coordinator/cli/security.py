"""CLI commands for trust: join tokens (`token create|list|revoke`) and client configs
(`config create-user`, and `config set-server`, which rewrites a client config's
servers without asking a coordinator, like `kubectl config set-cluster --server`).

Token secrets are made here and only their digest is sent; certificates for
users are signed from a CSR, the key never leaves this machine. What is
printed or written is the only copy of a secret.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import time
from typing import Any

from atoll import errors, kinds, pki
from atoll.config import parse_duration
from atoll.v1 import auth_pb2, cluster_pb2
from coordinator.auth import tokens
from coordinator.auth.certs import check_user
from coordinator.auth.roles import USER_ROLES
from coordinator.cli import printers
from coordinator.cli.printers.common import duration
from coordinator.client import config as clientconfig
from coordinator.client.api import Client
from coordinator.client.config import ClientConfig
from coordinator.config import DEFAULT_TOKEN_PORT, server_address
from coordinator.kube import kubeconfig

TOKEN = kinds.by_name("Token")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parsers(sub: Any) -> None:
    token = sub.add_parser("token", help="join tokens: create, list, revoke")
    tsub = token.add_subparsers(dest="token_command", metavar="ACTION")
    tsub.required = True
    create = tsub.add_parser("create", help="a new join token, and the command that joins a host with it")
    create.add_argument(
        "--ttl", type=_duration, default=3600.0, help="lifetime: 30m, 1h, 7d; 0 never expires (default 1h)"
    )
    create.add_argument(
        "--uses", type=int, default=1, help="how many hosts may join with it (default 1; 0: unlimited)"
    )
    create.add_argument(
        "--node",
        default="",
        help="bind it to one node name: the only name it joins as, and the way to re-join a host "
        "whose Node exists (a reinstall)",
    )
    create.add_argument("--description", default="", help="what the token is for")
    create.add_argument("--output", "-o", choices=["json"], help="json: for scripts")
    tlist = tsub.add_parser("list", help="every token (never their secrets)")
    tlist.add_argument("--output", "-o", choices=["json"])
    revoke = tsub.add_parser(
        "revoke", help="refuse a token from now on (hosts that joined keep their certificates)"
    )
    revoke.add_argument("id", nargs="+", help="token ids (the part before the dot)")

    config = sub.add_parser("config", help="client configs for users")
    csub = config.add_subparsers(dest="config_command", metavar="ACTION")
    csub.required = True
    user = csub.add_parser("create-user", help="write a client config for a user with a role")
    user.add_argument("name", help="user name: lower-case letters, digits and -._@")
    user.add_argument("--role", choices=USER_ROLES, required=True)
    user.add_argument(
        "--token", action="store_true", help="a bearer token (revocable) instead of a client certificate"
    )
    user.add_argument(
        "--ttl",
        type=_duration,
        default=0.0,
        help="lifetime (default: the server's certificate lifetime; tokens: never)",
    )
    user.add_argument("--file", "-f", help="where to write it, mode 0600 (default: ./NAME.conf)")
    user.add_argument(
        "--server-address",
        default="",
        help="the server address to write, or several coordinators' HOST[:PORT],... "
        "(default: what the coordinator advertises)",
    )
    kube = csub.add_parser(
        "kubeconfig",
        help="write a kubeconfig for kubectl and Kubernetes clients (coordinator serve --kube-listen)",
        description="Without --user: your own credentials (those of the client config the CLI uses) as a "
        "kubeconfig. With --user and --role: a new user's, as config create-user makes them.",
    )
    kube.add_argument("--user", default="", help="a new user (lower-case letters, digits and -._@)")
    kube.add_argument("--role", choices=USER_ROLES, help="the new user's role (with --user)")
    kube.add_argument("--token", action="store_true", help="with --user: a bearer token, not a certificate")
    kube.add_argument("--ttl", type=_duration, default=0.0, help="with --user: lifetime, as create-user")
    kube.add_argument(
        "--server",
        dest="kube_server",
        default="",
        help="the Kubernetes API: https://HOST:PORT or HOST[:PORT] (default: the coordinator's host, "
        f"port {kubeconfig.DEFAULT_KUBE_PORT})",
    )
    kube.add_argument("--namespace", "-n", default="", help="the context's namespace")
    kube.add_argument("--file", "-f", help="where to write it, mode 0600 (default: ./kubeconfig)")
    servers = csub.add_parser(
        "set-server",
        help="set the coordinator(s) a client config calls (offline, like kubectl config set-cluster)",
        description="Rewrite the server of a client config, keeping its credentials: one coordinator, or "
        "several of one cluster (written as a servers: list; the client moves to another when one is "
        "down). The file is --file, else the one the CLI uses (--config, $ATOLL_CONFIG, ~/.atoll/config).",
    )
    servers.add_argument("servers", help="HOST[:PORT][,HOST[:PORT]...] (port default 6443), or unix:///PATH")
    servers.add_argument("--file", "-f", help="the client config to change (e.g. a copy of admin.conf)")


def set_server(args: argparse.Namespace) -> int:
    """`coordinator config set-server`: no coordinator is asked; the file keeps its mode 0600."""
    path = (
        pathlib.Path(args.file).expanduser()
        if args.file
        else clientconfig.resolve(args.client_config, os.environ)
    )
    if path is None:
        raise errors.InvalidArgument(
            f"no client config to change: pass --file, --config or ${clientconfig.ENV_VAR}, "
            f"or create {clientconfig.DEFAULT_PATH} (e.g. a copy of the coordinator's admin.conf)"
        )
    current = clientconfig.load(str(path), {})
    assert current is not None
    updated = dataclasses.replace(current, server=server_address(args.servers, {}))
    updated.write(path)
    print(f"{path}: server{'s' if len(updated.servers) > 1 else ''} {', '.join(updated.servers)}")
    return 0


def join_command(info: cluster_pb2.GetClusterInfoResponse, token: str) -> str:
    parts = ["atoll-agent", "--coordinator", info.server, "--join-token", token, "--ca-hash", info.ca_hash]
    host = info.server.rpartition(":")[0]
    if info.token_server and info.token_server != f"{host}:{DEFAULT_TOKEN_PORT}":
        parts += ["--join-address", info.token_server]
    return " ".join(parts)


async def cmd_token(client: Client, args: argparse.Namespace) -> int:
    if args.token_command == "create":
        return await _token_create(client, args)
    if args.token_command == "list":
        return await _token_list(client, args)
    for token_id in args.id:
        for _ in range(10):
            token = await client.get(TOKEN, "", token_id)
            assert isinstance(token, auth_pb2.Token)
            token.spec.revoked = True
            try:
                await client.update(token)
            except errors.Conflict:
                continue
            break
        print(f"token {token_id} revoked")
    return 0


async def _token_create(client: Client, args: argparse.Namespace) -> int:
    if args.uses < 0:
        raise errors.InvalidArgument("--uses must not be negative")
    info = await client.cluster_info()
    if not info.ca_hash:
        raise errors.FailedPrecondition("the coordinator runs --insecure: hosts join without tokens")
    token_id, secret = tokens.generate()
    value = f"{token_id}.{secret}"
    await client.create(
        tokens.new_token(
            token_id, secret, ttl=args.ttl, uses=args.uses, description=args.description, node=args.node
        )
    )
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + args.ttl)) if args.ttl else ""
    command = join_command(info, value)
    if args.output == "json":
        print(
            json.dumps(
                {
                    "token": value,
                    "id": token_id,
                    "expires": expires,
                    "uses": args.uses,
                    "caHash": info.ca_hash,
                    "server": info.server,
                    "joinServer": info.token_server,
                    "command": command,
                },
                indent=2,
            )
        )
        return 0
    lifetime = f"expires {expires} (in {duration(int(args.ttl))})" if args.ttl else "never expires"
    uses = f"{args.uses} join(s)" if args.uses else "unlimited joins"
    print(f"token:   {value}")
    print(f"         {lifetime}, {uses}")
    print(f"CA hash: {info.ca_hash}")
    print()
    print("Join a host (as root on it):")
    print(f"  {command}")
    return 0


def _token_fields(t: auth_pb2.Token) -> dict[str, Any]:
    spec = t.spec
    return {
        "id": t.metadata.name,
        "usages": list(spec.usages),
        "user": spec.user,
        "role": spec.role,
        "uses": t.status.uses,
        "maxUses": spec.max_uses,
        "expires": spec.expiration.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")
        if spec.HasField("expiration")
        else "",
        "revoked": spec.revoked,
        "joinedNodes": list(t.status.joined_nodes),
        "description": spec.description,
    }


async def _token_list(client: Client, args: argparse.Namespace) -> int:
    items, _ = await client.list(TOKEN)
    found = [t for t in items if isinstance(t, auth_pb2.Token)]
    if args.output == "json":
        print(json.dumps([_token_fields(t) for t in found], indent=2))
        return 0
    if not found:
        print("No tokens.")
        return 0
    print(printers.render_table(auth_pb2.Token, found, wide=True))
    return 0


async def cmd_config(client: Client, args: argparse.Namespace) -> int:
    if args.config_command == "kubeconfig":
        return await _kubeconfig(client, args)
    name, role = args.name, args.role
    check_user(name)
    target = pathlib.Path(args.file or f"{name}.conf")
    info = await client.cluster_info()
    if not info.ca_certificate:
        raise errors.FailedPrecondition("the coordinator runs --insecure: it has no credentials to give")
    if args.token:
        token_id, secret = await _new_bearer_token(client, name, role, args.ttl, f"bearer token of {name}")
        config = ClientConfig(
            server=args.server_address or info.token_server,
            user=name,
            ca=info.ca_certificate,
            token=f"{token_id}.{secret}",
        )
        how = f"bearer token {token_id} (revoke: coordinator token revoke {token_id})"
    else:
        key = pki.new_key()
        signed = await client.sign_user_certificate(name, role, pki.build_csr(key, name), args.ttl)
        cert = pki.load_cert(signed.certificate)
        config = ClientConfig(
            server=server_address(args.server_address, {}) if args.server_address else info.server,
            user=name,
            ca=signed.ca_certificate,
            cert=signed.certificate,
            key=pki.key_pem(key),
        )
        how = f"client certificate valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M UTC}"
    config.write(target)
    print(f"wrote {target} for {name} ({role}): {how}")
    print(f"use it with: coordinator --config {target} get pods   (or ATOLL_CONFIG={target})")
    return 0


async def _new_bearer_token(
    client: Client, user: str, role: str, ttl: Any, description: str
) -> tuple[str, str]:
    """A bearer token for `user` with `role`, stored on the coordinator; (id, secret)."""
    token_id, secret = tokens.generate()
    await client.create(
        tokens.new_token(
            token_id,
            secret,
            ttl=ttl,
            usages=(tokens.USAGE_AUTH,),
            user=user,
            role=role,
            description=description,
        )
    )
    return token_id, secret


async def _kubeconfig(client: Client, args: argparse.Namespace) -> int:
    """`coordinator config kubeconfig`: a kubeconfig with the caller's or a new user's credentials."""
    target = pathlib.Path(args.file or "kubeconfig")
    info = await client.cluster_info()
    secure = bool(info.ca_certificate)
    if args.kube_server:
        server = kubeconfig.server_url(args.kube_server, secure=secure)
    else:  # the coordinator's advertised host, on the default port of the Kubernetes API
        host = info.server.split(",")[0].rpartition(":")[0] or "127.0.0.1"
        server = kubeconfig.server_url(host.strip("[]"), secure=secure)
    if args.user:
        if not args.role:
            raise errors.InvalidArgument("--role is required with --user")
        check_user(args.user)
        user, ca, cert, key, token = args.user, info.ca_certificate, b"", b"", ""
        if args.token:
            token_id, secret = await _new_bearer_token(
                client, user, args.role, args.ttl, f"bearer token of {user} (kubeconfig)"
            )
            token = f"{token_id}.{secret}"
        else:
            private = pki.new_key()
            signed = await client.sign_user_certificate(
                user, args.role, pki.build_csr(private, user), args.ttl
            )
            ca, cert, key = signed.ca_certificate, signed.certificate, pki.key_pem(private)
        role = args.role
    else:
        own = clientconfig.load(args.client_config, os.environ)
        if own is None or not (own.cert or own.token):
            raise errors.FailedPrecondition(
                "no credentials to write: pass --config with a client config (e.g. admin.conf), "
                "or --user NAME --role ROLE for a new user"
            )
        user, ca, cert, key, token = own.user or "atoll-user", own.ca, own.cert, own.key, own.token
        role = "your own"
    doc = kubeconfig.build(server, user, ca=ca, cert=cert, key=key, token=token, namespace=args.namespace)
    pki.write_private(target, kubeconfig.dump(doc).encode())
    print(f"wrote {target} for {user} ({role} credentials) calling {server}")
    print(f"use it with: KUBECONFIG={target} kubectl get pods")
    return 0
