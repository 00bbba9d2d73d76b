"""The one error hierarchy of Atoll.

Every failure that crosses an API boundary is an AtollError subclass with a
stable gRPC status code. `atoll.rpc` maps them to statuses on the server side
(one interceptor) and back to these classes on the client side, so neither
servicers nor the CLI ever look at grpc.StatusCode themselves.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc


class AtollError(Exception):
    """Base class. `message` is for humans; `field` names the offending field path."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidArgument(AtollError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(AtollError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(AtollError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Conflict(AtollError):
    """A compare-and-swap lost: the object changed since it was read."""

    code = grpc.StatusCode.ABORTED


class FailedPrecondition(AtollError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Gone(AtollError):
    """A watch asked for history the store no longer keeps."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Unavailable(AtollError):
    code = grpc.StatusCode.UNAVAILABLE


class CommandFailed(Unavailable):
    """A host command (agent.execute) could not start, exited non-zero, or ran out of time.

    `returncode` is None when the command never ran to its end (it could not
    start, or it was killed at its deadline: then `timed_out` is True).
    """

    def __init__(
        self,
        message: str,
        *,
        argv: tuple[str, ...] = (),
        returncode: int | None = None,
        stdout: str = "",
        stderr: str = "",
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out


class DeadlineExceeded(AtollError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class PermissionDenied(AtollError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(AtollError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(AtollError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Internal(AtollError):
    code = grpc.StatusCode.INTERNAL


class Unimplemented(AtollError):
    code = grpc.StatusCode.UNIMPLEMENTED


_BY_CODE: dict[grpc.StatusCode, type[AtollError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        Conflict,
        FailedPrecondition,
        Gone,
        Unavailable,
        DeadlineExceeded,
        PermissionDenied,
        Unauthenticated,
        ResourceExhausted,
        Internal,
        Unimplemented,
    )
}

# Trailing metadata key that carried AtollError.field across the wire before the standard
# details below; still sent beside them and read when they are missing (older coordinators).
# Binary metadata ("-bin"): field paths may hold any character a client sent (a label key, say).
FIELD_METADATA_KEY = "atoll-field-bin"
# The standard trailer every gRPC library reads a google.rpc.Status from (grpcio-status, Go's
# status.FromError, Java's StatusProto): a field's error carries a google.rpc.BadRequest there.
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def field_trailers(err: AtollError) -> tuple[tuple[str, bytes], ...]:
    """The trailing metadata naming err's field: a google.rpc.Status whose BadRequest has one
    field violation (its message is the status message, as grpcio-status checks), and the
    older atoll-field-bin. None when the error names no field."""
    if not err.field:
        return ()
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2
    from grpc_status import rpc_status

    violation = error_details_pb2.BadRequest.FieldViolation(field=err.field, description=err.message)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    status = status_pb2.Status(code=err.code.value[0], message=str(err), details=[detail])
    standard: tuple[tuple[str, bytes], ...] = rpc_status.to_status(status).trailing_metadata
    return (*standard, (FIELD_METADATA_KEY, err.field.encode("utf-8", "replace")))


def field_of_trailers(trailing: Iterable[tuple[str, str | bytes]]) -> str:
    """The field path an error's trailers name: the first field violation of the standard
    details, else the older atoll-field-bin; "" when neither is there or they do not parse."""
    from google.protobuf.message import DecodeError
    from google.rpc import error_details_pb2, status_pb2

    legacy = ""
    for key, value in trailing:
        raw = value if isinstance(value, bytes) else value.encode()
        if key == FIELD_METADATA_KEY:
            legacy = raw.decode("utf-8", "replace")
        elif key == STATUS_DETAILS_KEY:
            try:
                status = status_pb2.Status.FromString(raw)
            except DecodeError:
                continue
            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad) and bad.field_violations:
                    return str(bad.field_violations[0].field)
    return legacy


def from_status(code: grpc.StatusCode, details: str, field: str = "") -> AtollError:
    """Rebuild the error a server raised from its status."""
    cls = _BY_CODE.get(code, AtollError)
    prefix = f"{field}: "
    message = details[len(prefix) :] if field and details.startswith(prefix) else details
    err = cls(message or code.name, field=field)
    if cls is AtollError:
        err.code = code
    return err
