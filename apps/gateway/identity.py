"""The client's identity: who is asking, from where, under which request id — for audit rows,
rate limits and logs, on every transport.

Services record audit events without having the request passed down to them: the
middleware (and the gRPC interceptor) put the client IP and request id in context
variables for the duration of the call (`request_context`). `client_address()` is the one
rule for the client's address; `client_ip(request)` applies it to a Django request.

Forwarded headers (X-Forwarded-For, X-Forwarded-Proto, ...) are believed only from the peers in
FORWARDED_ALLOW_IPS, the reverse proxy; gunicorn applies the same list to the scheme it reports.
From anyone else the middleware removes them before any other code can read them, so neither
Django's SECURE_PROXY_SSL_HEADER nor a client address can be spoofed by a direct client.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{8,64}")  # fullmatch: `$` would let a final newline through

client_ip_var: ContextVar[str | None] = ContextVar("client_ip", default=None)
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def new_request_id(candidate: str | None = None) -> str:
    """Keep a well-formed inbound id (so logs join up across Caddy); mint one otherwise. An id that
    looks like an API key is refused: request ids are logged, echoed and stored in audit rows."""
    if candidate and _REQUEST_ID_RE.fullmatch(candidate) and not candidate.lower().startswith("mmk_"):
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


_FORWARDED_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
                      "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_PROTOCOL", "HTTP_X_FORWARDED_SSL", "HTTP_FORWARDED")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address


@lru_cache(maxsize=8)
def _trusted(allow: tuple[str, ...]) -> frozenset[IPAddress] | None:
    """The trusted proxy addresses; None means every peer ("*")."""
    return None if "*" in allow else frozenset(filter(None, map(_ip, allow)))


def trusted_proxy(peer: str) -> bool:
    """Whether `peer` (a direct peer's address, or a hop named by a trusted one) is a trusted proxy.
    An empty address is a Unix-socket peer, which only local processes can reach (gunicorn trusts
    it too)."""
    trusted = _trusted(tuple(settings.FORWARDED_ALLOW_IPS))
    if trusted is None or not peer:
        return True
    address = _ip(peer)
    return address is not None and address in trusted


def client_address(peer: str, forwarded_for: str = "") -> str | None:
    """The client's address: the direct `peer`, unless that is a trusted proxy, in which case the
    X-Forwarded-For chain (`forwarded_for`) is walked from the right (each proxy appended the
    address it saw) to the first hop that is not a trusted proxy. A malformed hop ends the walk.
    Transport-neutral: REST passes REMOTE_ADDR and the header, gRPC the peer's address and the
    `x-forwarded-for` metadata."""
    address = peer
    hops = forwarded_for.split(",") if forwarded_for else []
    while hops and trusted_proxy(address):
        hop = _ip(hops.pop())
        if hop is None:
            break
        address = str(hop)
    return address or None


def client_ip(request: HttpRequest) -> str | None:
    """`client_address` of a Django request."""
    return client_address(request.META.get("REMOTE_ADDR", ""), request.META.get("HTTP_X_FORWARDED_FOR", ""))


class RequestContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not trusted_proxy(request.META.get("REMOTE_ADDR", "")):
            for name in _FORWARDED_HEADERS:  # first in MIDDLEWARE: nothing has read them yet
                request.META.pop(name, None)
        request_id = new_request_id(request.headers.get("X-Request-ID"))
        request.request_id = request_id  # type: ignore[attr-defined]  # read by views/templates
        with request_context(client_ip=client_ip(request), request_id=request_id):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
