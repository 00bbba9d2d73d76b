"""New keys, CSRs and signature checks for a process that keeps cryptography out (the agent).

Each call runs `python -m atoll.pkitool` once, about 0.2 s: at a join, at a
renewal, or for a key file atoll.certinfo cannot read. The private key comes
back through a pipe, never through a file. Blocking: async callers run these
in a thread.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

from atoll import certinfo, errors

TIMEOUT = 30.0


def _run(operation: str, request: dict[str, str]) -> dict[str, Any]:
    root = str(pathlib.Path(__file__).resolve().parent.parent)  # where the atoll package is
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "atoll.pkitool", operation],
            input=json.dumps(request).encode(),
            capture_output=True,
            timeout=TIMEOUT,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise errors.Unavailable(f"atoll.pkitool {operation} took longer than {TIMEOUT:.0f}s") from None
    except OSError as exc:
        raise errors.Internal(f"cannot run atoll.pkitool {operation}: {exc}") from None
    message = done.stderr.decode(errors="replace").strip()
    if done.returncode == 1:
        raise errors.InvalidArgument(message)
    if done.returncode != 0:
        raise errors.Internal(f"atoll.pkitool {operation} failed (status {done.returncode}): {message}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def new_key_and_csr(cn: str) -> tuple[bytes, bytes]:
    """A new private key (PKCS#8 PEM) and a CSR for CN = `cn` signed by it."""
    answer = _run("csr", {"cn": cn})
    return answer["key"].encode(), answer["csr"].encode()


def issued_by(leaf: bytes, ca: bytes) -> bool:
    """Whether the CA certificate `ca` signed `leaf` (both PEM)."""
    return bool(_run("issued-by", {"leaf": leaf.decode(), "ca": ca.decode()})["issued"])


def key_matches(key: bytes, cert: bytes) -> bool:
    """Whether the private key `key` belongs to the certificate `cert` (both PEM). Read here for
    PKCS#8 EC and RSA keys (the ones Atoll writes); any other form goes to the child."""
    found = certinfo.public_key_matches(key, certinfo.read_certificate(cert).spki)
    if found is not None:
        return found
    return bool(_run("key-matches", {"key": key.decode(errors="replace"), "cert": cert.decode()})["matches"])
