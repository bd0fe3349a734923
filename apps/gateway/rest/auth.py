"""DRF authentication and permission from the gateway: `Authorization: Bearer` → Principal, and
the access table on every DRF view. Kept apart from `views` because DRF imports its default
authentication and permission classes while `rest_framework.views` is still loading.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from rest_framework import authentication, exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from apps.gateway import metrics
from apps.gateway.access import require_access
from apps.gateway.auth import Principal, authenticate_token
from apps.gateway.errors import AuthenticationFailed


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
            principal = authenticate_token(token.strip())
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


class OperationPermission(BasePermission):
    """The access table, for every DRF view: the view's operation for this method is looked up,
    and a `write` is only served by a view that runs writes under an idempotency key."""

    def has_permission(self, request: Request, view: Any) -> bool:
        operation = require_access(operation_of(view, request.method or ""), request.auth)
        if operation.is_write and not getattr(view, "writes_are_idempotent", False):
            raise ImproperlyConfigured(f"{type(view).__name__} serves the write {operation.name} but is not a "
                                       "GatewayApi: it would run without an idempotency key.")
        return True


