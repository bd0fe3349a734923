"""Exceptions to gRPC status codes: the one place a failed call gets its status.

A gateway domain error carries its gRPC code name (`DomainError.grpc_code`); any other known error
gets the code of its HTTP status from the same table (`apps.gateway.errors`), so REST and gRPC agree
on the outcome class. The stable `code` travels in the details ("<code>: <text>") and in the
trailing metadata `error-code`.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions as drf

from apps.gateway.errors import DomainError, grpc_code_for
from modeloman.transactions import database_failure


@dataclass(frozen=True)
class Failure:
    status: grpc.StatusCode
    code: str
    detail: str

    @property
    def details(self) -> str:
        return f"{self.code}: {self.detail}"


def _status(http_status: int) -> grpc.StatusCode:
    return grpc.StatusCode[grpc_code_for(http_status)]


def failure_for(exc: Exception) -> Failure | None:
    """The status for a known error; None for anything else (a bug: INTERNAL, logged)."""
    exc = database_failure(exc) or exc  # a timeout or a lost connection: UNAVAILABLE
    if isinstance(exc, DomainError):
        return Failure(grpc.StatusCode[exc.grpc_code], exc.code, exc.detail)
    if isinstance(exc, drf.ValidationError | DjangoValidationError):
        return Failure(grpc.StatusCode.INVALID_ARGUMENT, "validation_error", _first_message(exc))
    if isinstance(exc, drf.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        return Failure(_status(exc.status_code), code, str(exc.detail))
    return None


def _first_message(exc: drf.ValidationError | DjangoValidationError) -> str:
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
