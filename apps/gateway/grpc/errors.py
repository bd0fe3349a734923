"""Exceptions to gRPC status codes: the one place a failed call gets its status.

An error that names its gRPC code (`grpc_code = "FAILED_PRECONDITION"`, as the gateway's domain
errors do) gets that code; otherwise the code follows from its HTTP status, so REST and gRPC agree
on the outcome class. The stable `code` travels in the details ("<code>: <text>") and in the
trailing metadata `error-code`.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions as drf

from modeloman.problems import DomainError

_BY_HTTP_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    # 409 is "not in the state this needs" (run already finished, too many caps...), not a retry hint;
    # the idempotency claim still in flight is the exception (SPEC §5: ABORTED).
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.FAILED_PRECONDITION,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
_BY_CODE = {"idempotency_in_flight": grpc.StatusCode.ABORTED}


@dataclass(frozen=True)
class Failure:
    status: grpc.StatusCode
    code: str
    detail: str

    @property
    def details(self) -> str:
        return f"{self.code}: {self.detail}"


def _status(http_status: int, code: str, named: str | None = None) -> grpc.StatusCode:
    if named:
        return grpc.StatusCode[named]
    return _BY_CODE.get(code) or _BY_HTTP_STATUS.get(http_status, grpc.StatusCode.INTERNAL)


def failure_for(exc: Exception) -> Failure | None:
    """The status for a known error; None for anything else (a bug: INTERNAL, logged)."""
    if isinstance(exc, DomainError):
        return Failure(_status(exc.status, exc.code, getattr(exc, "grpc_code", None)), exc.code, exc.detail)
    if isinstance(exc, drf.ValidationError | DjangoValidationError):
        return Failure(grpc.StatusCode.INVALID_ARGUMENT, "validation_error", _first_message(exc))
    if isinstance(exc, drf.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        return Failure(_status(exc.status_code, code), code, str(exc.detail))
    return None


def _first_message(exc: Exception) -> str:
    """One line naming the first bad field: details are a single string."""
    detail = exc.detail if isinstance(exc, drf.ValidationError) else getattr(exc, "message_dict", None) or exc.messages
    path: list[str] = []
    while isinstance(detail, dict | list) and detail:
        if isinstance(detail, dict):
            key = next(iter(detail))
            path.append(str(key))
            detail = detail[key]
        else:
            detail = detail[0]
    where = f"field `{'.'.join(path)}`: " if path else ""
    return f"{where}{detail}"
