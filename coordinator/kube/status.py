"""Errors as Kubernetes `Status` objects: the HTTP code, the reason and, for validation, the causes.

kubectl prints `Error from server (NotFound): pods "x" not found` from
`reason` and `message`, retries on 409 Conflict, and shows each
`details.causes[].field` of a 422; so every AtollError maps here to the same
code and reason the Kubernetes API server would answer with.
"""

from __future__ import annotations

from typing import Any

from atoll import errors
from coordinator.kube import resources

# Error class -> (HTTP code, Status reason), most specific first.
_MAPPING: tuple[tuple[type[errors.AtollError], int, str], ...] = (
    (errors.InvalidArgument, 422, "Invalid"),
    (errors.NotFound, 404, "NotFound"),
    (errors.AlreadyExists, 409, "AlreadyExists"),
    (errors.Conflict, 409, "Conflict"),
    (errors.FailedPrecondition, 400, "BadRequest"),
    (errors.Gone, 410, "Expired"),
    (errors.PermissionDenied, 403, "Forbidden"),
    (errors.Unauthenticated, 401, "Unauthorized"),
    (errors.ResourceExhausted, 429, "TooManyRequests"),
    (errors.DeadlineExceeded, 504, "Timeout"),
    (errors.Unavailable, 503, "ServiceUnavailable"),
    (errors.Unimplemented, 405, "MethodNotAllowed"),
)


def status(
    code: int,
    reason: str,
    message: str,
    *,
    kind: str = "",
    name: str = "",
    causes: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A failure `Status` (meta/v1) as kubectl and client libraries read it."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if kind:
        details["kind"] = kind
    if causes:
        details["causes"] = causes
    if details:
        body["details"] = details
    return body


def success(kind: str, name: str, uid: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "kind": kind},
    }
    if uid:
        body["details"]["uid"] = uid
    return body


def from_error(exc: errors.AtollError, *, kind: str = "", name: str = "") -> dict[str, Any]:
    """The Status of an API error; `kind` is the resource (plural) the request was about."""
    code, reason = 500, "InternalError"
    for cls, http, why in _MAPPING:
        if isinstance(exc, cls):
            code, reason = http, why
            break
    message = str(exc)
    causes = None
    if code == 422:
        # As the API server words it (kubectl prints it as is): Pod "web" is invalid: spec...: ...
        kind = _singular(kind)
        name = name or getattr(exc, "object_name", "")
        causes = [{"reason": "FieldValueInvalid", "message": exc.message, "field": exc.field}]
        message = f'{kind or "object"} "{name}" is invalid: {message}'
    return status(code, reason, message, kind=kind, name=name, causes=causes)


def _singular(plural: str) -> str:
    """What a Kind of a plural resource is called in an Invalid message (as kubectl's: Pod "x")."""
    served = resources.BY_PLURAL.get(plural)
    return served.kind if served is not None else plural


def not_allowed(message: str) -> dict[str, Any]:
    return status(405, "MethodNotAllowed", message)
