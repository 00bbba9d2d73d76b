"""OpenAPI v3, only as far as kubectl needs it: to learn that the server validates fields itself.

Before `create`, `apply`, `replace` and `edit`, kubectl asks /openapi/v3 whether
the PATCH operation of the object's kind takes a `fieldValidation` query
parameter; when it does, kubectl sends `fieldValidation=Strict` and leaves
validation to the server (our manifest decoder refuses unknown fields), and
otherwise it tries to validate against /openapi/v2 and stops with "failed to
download openapi". So the document lists each served kind's operations with
their group-version-kind and parameters, and no schemas: `kubectl explain`
has nothing to explain, and client-side apply computes its strategic merge
patches from kubectl's compiled-in types. /openapi/v2 answers 404.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from coordinator.kube import resources

ROOT_PATH = "api/v1"


def _gvk(kind: str) -> dict[str, str]:
    return {"group": "", "version": "v1", "kind": kind}


def _parameters(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": True} for n in names]


def _operation(kind: str, action: str, params: tuple[str, ...]) -> dict[str, Any]:
    return {
        "operationId": f"{action}CoreV1{kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(kind),
        "parameters": _parameters(*params),
        "responses": {"200": {"description": "OK"}},
    }


def document() -> dict[str, Any]:
    """The /openapi/v3/api/v1 document."""
    paths: dict[str, Any] = {}
    write = ("dryRun", "fieldManager", "fieldValidation")
    for r in resources.SERVED:
        base = f"/api/v1/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"/api/v1/{r.plural}"
        paths[base] = {
            "get": _operation(
                r.kind, "list", ("labelSelector", "fieldSelector", "limit", "continue", "watch")
            ),
            "post": _operation(r.kind, "post", write),
        }
        paths[f"{base}/{{name}}"] = {
            "get": _operation(r.kind, "get", ()),
            "put": _operation(r.kind, "put", write),
            "patch": _operation(r.kind, "patch", (*write, "force")),
            "delete": _operation(r.kind, "delete", ("dryRun", "propagationPolicy")),
        }
    return {"openapi": "3.0.0", "info": {"title": "Atoll", "version": "v1"}, "paths": paths, "components": {}}


def _hash(doc: dict[str, Any]) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()


DOCUMENT = document()
HASH = _hash(DOCUMENT)


def root() -> dict[str, Any]:
    """/openapi/v3: where each group-version's document is."""
    return {"paths": {ROOT_PATH: {"serverRelativeURL": f"/openapi/v3/{ROOT_PATH}?hash={HASH}"}}}
