"""Domain errors: what the caller did wrong, with a stable `code`, for every transport.

Services raise these. Each carries its HTTP status and, derived from it in one table, the gRPC
status code name (a plain string: the gateway imports no grpc). The REST adapter renders them
as problem+json (`apps.gateway.rest`); the gRPC adapter aborts with `grpc_code`. Clients branch
on `code`, never on `detail` text.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from apps.gateway.identity import request_id_var


class GrpcCode(StrEnum):
    """Names of grpc.StatusCode members."""

    OK = "OK"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    ABORTED = "ABORTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


# SPEC §5. 413: RESOURCE_EXHAUSTED, what grpcio itself answers for a message over the receive limit,
# so an oversized request means the same thing whichever layer refuses it.
GRPC_CODE_FOR_STATUS: dict[int, GrpcCode] = {
    400: GrpcCode.INVALID_ARGUMENT,
    401: GrpcCode.UNAUTHENTICATED,
    403: GrpcCode.PERMISSION_DENIED,
    404: GrpcCode.NOT_FOUND,
    405: GrpcCode.UNIMPLEMENTED,
    409: GrpcCode.ABORTED,
    413: GrpcCode.RESOURCE_EXHAUSTED,
    415: GrpcCode.INVALID_ARGUMENT,
    422: GrpcCode.FAILED_PRECONDITION,
    429: GrpcCode.RESOURCE_EXHAUSTED,
    503: GrpcCode.UNAVAILABLE,
}


def grpc_code_for(status: int) -> GrpcCode:
    return GRPC_CODE_FOR_STATUS.get(status, GrpcCode.INTERNAL)


class DomainError(Exception):
    """A rule the caller broke. Carries the HTTP status, the gRPC code and the stable code."""

    status = 400
    code = "bad_request"
    title = "Bad request"
    # Extra REST response headers: subclasses (or an instance, e.g. RateLimitExceeded) replace it, never mutate it.
    headers: dict[str, str] = {}

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        self.extra = extra

    @property
    def grpc_code(self) -> GrpcCode:
        return grpc_code_for(self.status)


class InvalidInput(DomainError):
    status = 400
    code = "invalid_input"
    title = "Invalid input"


class NotAuthenticated(DomainError):
    status = 401
    code = "not_authenticated"
    title = "Authentication required"


class AuthenticationFailed(DomainError):
    """A token was sent and refused. `code` says why (token_malformed, key_revoked, ...)."""

    status = 401
    code = "authentication_failed"
    title = "Authentication failed"


class Forbidden(DomainError):
    status = 403
    code = "permission_denied"
    title = "Permission denied"


class MissingScope(Forbidden):
    code = "missing_scope"


class NotFound(DomainError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(DomainError):
    status = 409
    code = "conflict"
    title = "Conflict"


class PreconditionFailed(DomainError):
    status = 422
    code = "precondition_failed"
    title = "Precondition failed"


class PayloadTooLarge(DomainError):
    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class RateLimited(DomainError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"


class Unavailable(DomainError):
    status = 503
    code = "unavailable"
    title = "Unavailable"
    headers = {"Retry-After": "1"}


def problem_body(*, status: int, code: str, title: str, detail: str, **extra: Any) -> dict:
    """RFC 9457 problem document (REST body; the gRPC adapter can send it as error details)."""
    body = {
        "type": f"urn:modeloman:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    request_id = request_id_var.get()
    if request_id:
        body["request_id"] = request_id
    return body
