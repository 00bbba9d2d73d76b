"""Kubeconfig files for the Kubernetes API: one cluster, one user, one context (YAML, 0600).

Made from an Atoll client config's credentials (a client certificate and key,
or a bearer token) and the cluster CA, so that kubectl, client libraries and
`coordinator` share who a user is.
"""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

import yaml

DEFAULT_KUBE_PORT = 6445
CLUSTER_NAME = "atoll"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def build(
    server: str,
    user: str,
    *,
    ca: bytes = b"",
    cert: bytes = b"",
    key: bytes = b"",
    token: str = "",
    namespace: str = "",
) -> dict[str, Any]:
    """The kubeconfig document; `server` is https://HOST:PORT (or http:// for --insecure)."""
    cluster: dict[str, Any] = {"server": server}
    if ca:
        cluster["certificate-authority-data"] = _b64(ca)
    credentials: dict[str, Any] = {}
    if cert and key:
        credentials["client-certificate-data"] = _b64(cert)
        credentials["client-key-data"] = _b64(key)
    if token:
        credentials["token"] = token
    context_name = f"{user}@{CLUSTER_NAME}"
    context: dict[str, Any] = {"cluster": CLUSTER_NAME, "user": user}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": cluster}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": context_name, "context": context}],
        "current-context": context_name,
        "preferences": {},
    }


def dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def server_url(address: str, *, secure: bool = True) -> str:
    """HOST, HOST:PORT, [V6]:PORT or a URL -> the URL kubectl calls (default port DEFAULT_KUBE_PORT)."""
    if "://" in address:
        return address
    try:
        host, port = str(ipaddress.ip_address(address.strip("[]"))), str(DEFAULT_KUBE_PORT)
    except ValueError:
        host, sep, port = address.rpartition(":")
        if not sep:
            host, port = address, str(DEFAULT_KUBE_PORT)
    host = host.strip("[]")
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if secure else 'http'}://{host}:{port}"
