"""REST errors as RFC 9457 problem documents with a stable `code`.

Services raise `apps.gateway.errors.DomainError` subclasses; this module is the one place that
turns those (and DRF's and Django's own exceptions) into `application/problem+json` responses.
Clients branch on `code`, never on `detail` text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django_ratelimit.exceptions import Ratelimited
from rest_framework import exceptions as drf
from rest_framework.response import Response

from apps.gateway.errors import DomainError, RateLimited, problem_body
from modeloman.transactions import database_failure

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"


def validation_errors(error: DjangoValidationError) -> dict[str, list[str]]:
    if hasattr(error, "error_dict"):
        return {field: [m for e in errs for m in e.messages] for field, errs in error.error_dict.items()}
    return {"non_field_errors": error.messages}


_DRF_CODES: list[tuple[type[drf.APIException], str, str]] = [
    (drf.NotAuthenticated, "not_authenticated", "Authentication required"),
    (drf.AuthenticationFailed, "authentication_failed", "Authentication failed"),
    (drf.PermissionDenied, "permission_denied", "Permission denied"),
    (drf.NotFound, "not_found", "Not found"),
    (drf.MethodNotAllowed, "method_not_allowed", "Method not allowed"),
    (drf.NotAcceptable, "not_acceptable", "Not acceptable"),
    (drf.UnsupportedMediaType, "unsupported_media_type", "Unsupported media type"),
    (drf.ParseError, "malformed_request", "Malformed request body"),
    (drf.Throttled, "rate_limited", "Too many requests"),
]


def problem_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF `EXCEPTION_HANDLER`: every error leaves the API as problem+json."""
    headers: dict[str, str] = {}
    exc = operational_failure(exc) or exc
    if isinstance(exc, DomainError):
        status, code, title, detail, extra = exc.status, exc.code, exc.title, exc.detail, exc.extra
        headers.update(exc.headers)
    elif isinstance(exc, DjangoValidationError):
        status, code, title = 400, "validation_error", "Invalid input"
        detail, extra = "The request did not pass validation.", {"errors": validation_errors(exc)}
    elif isinstance(exc, drf.ValidationError):
        status, code, title = 400, "validation_error", "Invalid input"
        detail, extra = "The request did not pass validation.", {"errors": exc.detail}
    elif isinstance(exc, Http404):
        status, code, title, detail, extra = 404, "not_found", "Not found", "Not found.", {}
    elif isinstance(exc, RequestDataTooBig):
        status, code, title, extra = 413, "payload_too_large", "Payload too large", {}
        detail = f"The body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
    elif isinstance(exc, DjangoPermissionDenied):
        status, code, title, detail, extra = 403, "permission_denied", "Permission denied", "", {}
    elif isinstance(exc, drf.APIException):
        status, extra = exc.status_code, {}
        code, title = next(
            ((c, t) for cls, c, t in _DRF_CODES if isinstance(exc, cls)), ("error", "Error")
        )
        # Our authenticator and permission classes raise with a specific code.
        specific = exc.get_codes()
        if isinstance(specific, str) and specific not in {exc.default_code, "error"}:
            code = specific
        detail = str(exc.detail)
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            headers["WWW-Authenticate"] = auth_header
        wait = getattr(exc, "wait", None)
        if wait is not None:
            headers["Retry-After"] = str(int(wait) + 1)
    else:
        return None  # a bug: let Django log it and answer 500

    if status == 401 and "WWW-Authenticate" not in headers:
        headers["WWW-Authenticate"] = 'Bearer realm="modeloman"'
    body = problem_body(status=status, code=code, title=title, detail=detail, **extra)
    return Response(body, status=status, headers=headers, content_type=PROBLEM_CONTENT_TYPE)


def _wants_problem(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or "json" in request.headers.get("Accept", "")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _wants_problem(request):
        body = problem_body(status=404, code="not_found", title="Not found", detail="No such resource.")
        return JsonResponse(body, status=404, content_type=PROBLEM_CONTENT_TYPE)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _wants_problem(request):
        body = problem_body(
            status=500, code="internal_error", title="Internal error", detail="Something went wrong."
        )
        return JsonResponse(body, status=500, content_type=PROBLEM_CONTENT_TYPE)
    return defaults.server_error(request)


def problem_response(error: DomainError) -> JsonResponse:
    """A domain error as problem+json outside DRF (plain Django views, middleware)."""
    body = problem_body(status=error.status, code=error.code, title=error.title, detail=error.detail, **error.extra)
    return JsonResponse(body, status=error.status, headers=dict(error.headers), content_type=PROBLEM_CONTENT_TYPE)


def operational_failure(exc: Exception) -> DomainError | None:
    """Exceptions from below the services that still have a proper answer: a statement or lock
    timeout or a lost connection (503 database_timeout / database_unavailable), and
    django-ratelimit's own `Ratelimited` (a PermissionDenied, which would otherwise be a 403)
    should anything ever raise it."""
    if isinstance(exc, Ratelimited):
        return RateLimited("Too many requests; retry later.")
    return database_failure(exc)


class OperationalFailureMiddleware:
    """`operational_failure` for plain Django views (leaderboard pages, health), as the API's
    exception handler does for DRF views: a problem, not a 500 with a stack trace or a 403."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        failure = operational_failure(exception)
        return problem_response(failure) if failure is not None else None
