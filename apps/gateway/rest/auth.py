"""DRF authentication and permission from the gateway: `Authorization: Bearer` → Principal, and
the access table (scope, then the request signature of a `signed` write) on every DRF view. Kept
apart from `views` because DRF imports its default authentication and permission classes while
`rest_framework.views` is still loading.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from rest_framework import authentication, exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from apps.gateway import metrics, ratelimits
from apps.gateway.access import require_access
from apps.gateway.auth import Principal
from apps.gateway.errors import AuthenticationFailed
from apps.gateway.signing import check_signed_write


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <token>` → (principal, principal)."""

    def authenticate(self, request: Request) -> tuple[Principal, Principal] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            metrics.auth_failed("token_malformed")
            raise exceptions.AuthenticationFailed(
                "Send the key as `Authorization: Bearer <token>`.", code="token_malformed"
            )
        try:
            principal = ratelimits.authenticate(token.strip())
        except AuthenticationFailed as failure:
            # DRF's own exception, so that DRF marks the request unauthenticated and sends
            # WWW-Authenticate; the problem handler keeps the specific code.
            raise exceptions.AuthenticationFailed(failure.detail, code=failure.code) from None
        return principal, principal

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="modeloman"'


def operation_of(view: Any, method: str) -> str:
    """The operation a view serves for an HTTP method ("" when it names none: denied)."""
    return getattr(view, "operations", {}).get(method) or getattr(view, "operation", "") or ""


def signed_path(request: Request) -> str:
    """The path a REST signature covers: the path, and `?query` when there is one (as sent)."""
    query = request.META.get("QUERY_STRING", "")
    return f"{request.path}?{query}" if query else request.path


class OperationPermission(BasePermission):
    """The access table, for every DRF view: the view's operation for this method is looked up,
    a `write` is only served by a view that runs writes under an idempotency key, the call is
    counted against its rate limit (429 / 503 for a write the limit cannot be checked for), and a
    `signed` write needs a valid request signature (checked before the idempotency claim, so a
    retry needs a fresh nonce too)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        # ApiKeyAuthentication is the only authenticator: `request.auth` is a Principal or None.
        principal = request.auth if isinstance(request.auth, Principal) else None
        operation = require_access(operation_of(view, request.method or ""), principal)
        if operation.is_write and not getattr(view, "writes_are_idempotent", False):
            raise ImproperlyConfigured(f"{type(view).__name__} serves the write {operation.name} but is not a "
                                       "GatewayApi: it would run without an idempotency key.")
        ratelimits.check(operation, principal)
        if principal is not None:  # require_access let no key through to a write, signed or not
            check_signed_write(operation=operation, principal=principal, method=request.method or "",
                               path=signed_path(request), body=lambda: request.body, header=request.headers.get)
        return True


