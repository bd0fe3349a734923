"""Who is asking, from where, under which request id — for audit rows and logs.

Services record audit events without having the request passed down to them: the
middleware (and the gRPC interceptor, later) put the client IP and request id in context
variables for the duration of the call.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.http import HttpRequest, HttpResponse

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

client_ip_var: ContextVar[str | None] = ContextVar("client_ip", default=None)
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def new_request_id(candidate: str | None = None) -> str:
    """Keep a well-formed inbound id (so logs join up across Caddy); mint one otherwise."""
    if candidate and _REQUEST_ID_RE.match(candidate):
        return candidate
    return uuid.uuid4().hex


@contextmanager
def request_context(*, client_ip: str | None, request_id: str) -> Iterator[None]:
    ip_token = client_ip_var.set(client_ip)
    id_token = request_id_var.set(request_id)
    try:
        yield
    finally:
        client_ip_var.reset(ip_token)
        request_id_var.reset(id_token)


class RequestContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = new_request_id(request.headers.get("X-Request-ID"))
        request.request_id = request_id  # type: ignore[attr-defined]  # read by views/templates
        # REMOTE_ADDR is the direct peer; behind Caddy the proxy sets it via trusted headers
        # in the gunicorn config (forwarded_allow_ips), never from a client-supplied header.
        with request_context(client_ip=request.META.get("REMOTE_ADDR"), request_id=request_id):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
