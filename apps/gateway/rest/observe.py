"""HTTP observation: the request middleware (metrics + log line) and the `/metrics` endpoint."""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Callable

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse

from apps.gateway import metrics
from apps.gateway.auth import Principal
from apps.gateway.identity import client_ip
from apps.gateway.observe import request_finished, request_started
from apps.gateway.rest.auth import operation_of

TRANSPORT = "rest"


def _operation(request: HttpRequest) -> str:
    """The access table's operation for API views; the URL's name for pages, admin and health
    (a bounded set either way); `unmatched` for a path no route serves."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    view_class = getattr(match.func, "cls", None) or getattr(match.func, "view_class", None)
    operation = operation_of(view_class, request.method or "") if view_class is not None else ""
    return str(operation) if operation else (match.view_name or "unnamed")


def _key_id(request: HttpRequest) -> str | None:
    # DRF sets request.user to the Principal when a key authenticated; read the instance dict so
    # that pages never load a session user just for the log line.
    user = request.__dict__.get("user")
    return user.key_id if isinstance(user, Principal) else None


class RequestObservationMiddleware:
    """Right after RequestContextMiddleware: the request id and client address are set, and the
    time measured covers every other middleware and the view."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        request_started(TRANSPORT)
        status = 500  # an exception that escapes every handler
        try:
            response = self.get_response(request)
            status = response.status_code
            return response
        finally:
            request_finished(transport=TRANSPORT, operation=_operation(request), status=status,
                             seconds=time.perf_counter() - started, request_id=getattr(request, "request_id", ""),
                             key_id=_key_id(request), client=client_ip(request), method=request.method or "",
                             path=request.path)


def _loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _has_metrics_token(request: HttpRequest) -> bool:
    expected = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                               expected.encode())


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, for loopback clients (the client address as the proxy saw it, so a
    public request relayed by Caddy is not loopback) or with the metrics token. Anyone else: 404,
    as if there were nothing here."""
    if not settings.METRICS_ENABLED or request.method not in ("GET", "HEAD"):
        raise Http404
    if not (_loopback(client_ip(request)) or _has_metrics_token(request)):
        raise Http404
    response = HttpResponse(metrics.exposition(), content_type=metrics.CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response
