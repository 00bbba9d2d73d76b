"""Client config files: where the coordinator is and the credentials to call it (YAML, 0600).

    server: 10.0.0.1:6443          # HOST:PORT, or unix:///path.sock
    servers: [10.0.0.1:6443, 10.0.0.2:6443]  # or: several coordinators of one cluster (instead)
    user: admin                    # for humans; the server reads the credential
    certificate-authority: |       # PEM of the cluster CA the server's certificate must chain to
    client-certificate: |          # PEM; with client-key: mutual TLS
    client-key: |
    token: abcdef.0123456789abcdef # or a bearer token (then server is the token port)

The CLI picks the file from --config, else $ATOLL_CONFIG, else ~/.atoll/config
if it exists; --server and $ATOLL_SERVER still override the address. Several
servers (a `servers` list, or `server: a:6443,b:6443`) are one cluster's
coordinators: the client moves to another when one is down
(coordinator.client.api says which calls it repeats). Without
any file, TCP is plain text (for --insecure coordinators on loopback) and unix
sockets use their local credentials.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
import yaml

from atoll import errors, pki, tls

ENV_VAR = "ATOLL_CONFIG"
DEFAULT_PATH = pathlib.Path("~/.atoll/config")


@dataclass(frozen=True)
class ClientConfig:
    server: str = ""
    user: str = ""
    ca: bytes = b""
    cert: bytes = b""
    key: bytes = b""
    token: str = ""

    def credentials(self, target: str) -> grpc.ChannelCredentials | None:
        """Channel credentials towards `target` (None: plain text)."""
        if target.startswith("unix:"):
            return tls.local_channel_credentials(self.token or None)
        if not self.ca:
            return None
        return tls.channel_credentials(
            self.ca, key=self.key or None, cert=self.cert or None, token=self.token or None
        )

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.server.split(",") if s.strip()]

    def dump(self) -> str:
        several = self.servers
        doc: dict[str, str | list[str]] = (
            {"servers": several} if len(several) > 1 else {"server": self.server}
        )
        if self.user:
            doc["user"] = self.user
        for key, value in (
            ("certificate-authority", self.ca),
            ("client-certificate", self.cert),
            ("client-key", self.key),
        ):
            if value:
                doc[key] = value.decode()
        if self.token:
            doc["token"] = self.token
        return yaml.dump(doc, Dumper=_Dumper, sort_keys=False)

    def write(self, path: pathlib.Path) -> None:
        pki.write_private(path, self.dump().encode())


class _Dumper(yaml.SafeDumper):
    """PEM blocks as literal blocks, readable and diffable."""


_Dumper.add_representer(
    str,
    lambda dumper, data: dumper.represent_scalar(
        "tag:yaml.org,2002:str", data, style="|" if "\n" in data else None
    ),
)


def parse(text: str, source: str) -> ClientConfig:
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise errors.InvalidArgument(f"{source}: not YAML: {exc}") from None
    if not isinstance(doc, Mapping):
        raise errors.InvalidArgument(f"{source}: expected a mapping of settings")
    known = {
        "server",
        "servers",
        "user",
        "certificate-authority",
        "client-certificate",
        "client-key",
        "token",
    }
    unknown = sorted(str(k) for k in doc if k not in known)
    if unknown:
        raise errors.InvalidArgument(f"{source}: unknown setting(s) {', '.join(unknown)}")

    def text_of(key: str) -> str:
        value = doc.get(key, "")
        if not isinstance(value, str):
            raise errors.InvalidArgument(f"{source}: {key} must be a string")
        return value

    listed = doc.get("servers", [])
    if not isinstance(listed, list) or not all(isinstance(s, str) and s.strip() for s in listed):
        raise errors.InvalidArgument(f"{source}: servers must be a list of HOST:PORT strings")
    if listed and text_of("server"):
        raise errors.InvalidArgument(f"{source}: give server or servers, not both")
    config = ClientConfig(
        server=",".join(s.strip() for s in listed) or text_of("server"),
        user=text_of("user"),
        ca=text_of("certificate-authority").encode(),
        cert=text_of("client-certificate").encode(),
        key=text_of("client-key").encode(),
        token=text_of("token"),
    )
    if bool(config.cert) != bool(config.key):
        raise errors.InvalidArgument(f"{source}: client-certificate and client-key go together")
    if (config.cert or config.token) and not config.ca and not config.server.startswith("unix:"):
        raise errors.InvalidArgument(f"{source}: certificate-authority is required with credentials over TCP")
    return config


def resolve(flag: str | None, environ: Mapping[str, str]) -> pathlib.Path | None:
    """--config, else $ATOLL_CONFIG, else ~/.atoll/config when it exists."""
    if flag:
        return pathlib.Path(flag).expanduser()
    if environ.get(ENV_VAR):
        return pathlib.Path(environ[ENV_VAR]).expanduser()
    default = pathlib.Path(os.path.expanduser(str(DEFAULT_PATH)))
    return default if default.exists() else None


def load(flag: str | None, environ: Mapping[str, str]) -> ClientConfig | None:
    path = resolve(flag, environ)
    if path is None:
        return None
    try:
        text = path.read_text()
    except OSError as exc:
        raise errors.InvalidArgument(f"cannot read client config {path}: {exc.strerror or exc}") from None
    return parse(text, str(path))
