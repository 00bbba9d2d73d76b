"""The child that does for the agent what needs the cryptography package (atoll.pkichild).

    python -m atoll.pkitool {csr|issued-by|key-matches} < request.json > answer.json

It reads one JSON request on stdin and writes one JSON answer on stdout. Input
it refuses is a message on stderr and exit status 3 (INPUT_REFUSED); any other
failure is Python's own (status 1). Not a user command: atoll.pkichild runs it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from atoll import errors, pki
from atoll.pkichild import INPUT_REFUSED

_TOOL = pki.InProcessKeyTool()


def _csr(request: dict[str, Any]) -> dict[str, Any]:
    key, csr = _TOOL.new_key_and_csr(str(request["cn"]))
    return {"key": key.decode(), "csr": csr.decode()}


def _issued_by(request: dict[str, Any]) -> dict[str, Any]:
    return {"issued": _TOOL.issued_by(request["leaf"].encode(), request["ca"].encode())}


def _key_matches(request: dict[str, Any]) -> dict[str, Any]:
    return {"matches": _TOOL.key_matches(request["key"].encode(), request["cert"].encode(), thorough=True)}


OPERATIONS = {"csr": _csr, "issued-by": _issued_by, "key-matches": _key_matches}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in OPERATIONS:
        print(f"usage: python -m atoll.pkitool {{{'|'.join(OPERATIONS)}}}", file=sys.stderr)
        return 2
    try:
        answer = OPERATIONS[argv[0]](json.load(sys.stdin))
    except (errors.AtollError, json.JSONDecodeError, KeyError) as exc:
        # What atoll.pki refuses, or a request that is not one. Anything else is this child
        # failing (a bug, a broken install): status 1, which condemns no key.
        print(exc, file=sys.stderr)
        return INPUT_REFUSED
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
