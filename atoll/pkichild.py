"""New keys, CSRs and signature checks for a process that keeps cryptography out (the agent).

`KeyTool` is the side effect; `ChildKeyTool`, the real one, runs atoll.pkitool
(`python -I -c`, with this process's import path) once per call, about 0.2 s: at a join, at a renewal, at a
start (the stored key checked once), or for a key file atoll.certinfo cannot
read. The private key comes back through a pipe, never through a file.
atoll.pki.InProcessKeyTool does the same work in the calling process, for
processes that hold cryptography anyway (a bench's thousand hollow agents).
Blocking: async callers run these in a thread.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any, Protocol

from atoll import certinfo, errors

TIMEOUT = 30.0
INPUT_REFUSED = 3  # atoll.pkitool's exit status for input it refuses; 1 is Python failing


def _argv(operation: str) -> list[str]:
    # Isolated (-I: no PYTHON* variables, no user site, not the working directory) and run from
    # "/": the child finds atoll where this process did, and nothing planted beside it.
    paths = [str(pathlib.Path(__file__).resolve().parent.parent)]
    paths += [p for p in sys.path if os.path.isabs(p) and p not in paths]
    code = (
        f"import sys; sys.path[:0] = {paths!r}; from atoll.pkitool import main; sys.exit(main(sys.argv[1:]))"
    )
    return [sys.executable, "-I", "-c", code, operation]


def _run(operation: str, request: dict[str, str]) -> dict[str, Any]:
    try:
        done = subprocess.run(
            _argv(operation),
            input=json.dumps(request).encode(),
            capture_output=True,
            timeout=TIMEOUT,
            cwd="/",
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise errors.Unavailable(f"atoll.pkitool {operation} took longer than {TIMEOUT:.0f}s") from None
    except OSError as exc:
        raise errors.Internal(f"cannot run atoll.pkitool {operation}: {exc}") from None
    message = done.stderr.decode(errors="replace").strip()
    if done.returncode == INPUT_REFUSED:
        raise errors.InvalidArgument(message)
    if done.returncode != 0:
        raise errors.Internal(f"atoll.pkitool {operation} failed (status {done.returncode}): {message}")
    try:
        answer: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise errors.Internal(f"atoll.pkitool {operation} answered {done.stdout[:80]!r}") from None
    return answer


class KeyTool(Protocol):
    def new_key_and_csr(self, cn: str) -> tuple[bytes, bytes]:
        """A new private key (PKCS#8 PEM) and a CSR for CN = `cn` signed by it."""
        ...

    def issued_by(self, leaf: bytes, ca: bytes) -> bool:
        """Whether the CA certificate `ca` signed `leaf` (both PEM)."""
        ...

    def key_matches(self, key: bytes, cert: bytes, *, thorough: bool = False) -> bool:
        """Whether the private key `key` belongs to the certificate `cert` (both PEM); `thorough`
        also checks that its private half is sound (cryptography loads it)."""
        ...


class ChildKeyTool:
    def new_key_and_csr(self, cn: str) -> tuple[bytes, bytes]:
        answer = _run("csr", {"cn": cn})
        return answer["key"].encode(), answer["csr"].encode()

    def issued_by(self, leaf: bytes, ca: bytes) -> bool:
        return bool(_run("issued-by", {"leaf": leaf.decode(), "ca": ca.decode()})["issued"])

    def key_matches(self, key: bytes, cert: bytes, *, thorough: bool = False) -> bool:
        # The public halves compared here (PKCS#8 EC and RSA, the keys Atoll writes) tell a torn
        # pair of files apart; `thorough`, and any other key form, go to cryptography in the child.
        found = None if thorough else certinfo.public_key_matches(key, certinfo.read_certificate(cert).spki)
        if found is not None:
            return found
        request = {"key": key.decode(errors="replace"), "cert": cert.decode(errors="replace")}
        return bool(_run("key-matches", request)["matches"])
