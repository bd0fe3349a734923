"""Rate limits for every transport, in django-ratelimit's windows and keys, counted in the shared
cache in one round trip per call (modeloman.cache) (SPEC §9).

Both adapters call the same two functions, after the request context (client address) is set:

- `authenticate(token)`: `authenticate_token` behind a limit on failed authentications per client
  address (RATE_LIMIT_AUTH_FAILURES). For an address that has failed before, the count is checked
  before the key is looked up, so an address that keeps sending bad tokens is refused without
  costing a database query.
- `check(operation, principal)`: counts the call against its rate class from the access table
  (RATE_LIMIT_GET for reads, RATE_LIMIT_MUTATION for writes, or the key's own override), keyed by
  key id when authenticated and by client address otherwise. Over the limit: `RateLimitExceeded`
  (429 / RESOURCE_EXHAUSTED) with Retry-After and RateLimit-* headers.

When the cache cannot count, writes fail closed (`RateLimitUnavailable`, 503, before anything is
written) and reads fail open (public pages and health stay up). Each outcome is counted (`counts()`,
and the metrics module's counters) and logged at most once per
LOG_INTERVAL_SECONDS, not once per request.

Windows are django-ratelimit's: fixed, `period` seconds long, with a per-key offset so that all
keys do not reset at the same instant. Pure Python: no DRF, no grpc.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django_ratelimit import ALL

# django-ratelimit 4.1's own window, key and rate helpers (pinned in requirements.txt): the counts are
# its windows and keys, so a change of the library shows in tests/gateway/test_rate_limits.py.
from django_ratelimit.core import EXPIRATION_FUDGE, _get_window, _make_cache_key, _split_rate

from apps.gateway import metrics
from apps.gateway.access import Operation, RateClass
from apps.gateway.auth import Principal, authenticate_token
from apps.gateway.errors import AuthenticationFailed, RateLimited, Unavailable
from apps.gateway.identity import client_ip_var
from modeloman import cache

logger = logging.getLogger(__name__)

# Outcomes, as counted and as sent with `rate_limit_event`.
REJECTED = "rejected"  # over the limit: 429 / RESOURCE_EXHAUSTED
FAIL_OPEN = "fail_open"  # the cache could not count; the read was served anyway
FAIL_CLOSED = "fail_closed"  # the cache could not count; the write was refused (503)

AUTH_FAILURES = "auth_failures"  # the group of the failed-authentication limit
LOG_INTERVAL_SECONDS = 60.0

_counts: Counter[tuple[str, str]] = Counter()
_last_logged: dict[str, float] = {}
_unlogged: Counter[str] = Counter()
_lock = threading.Lock()


class RateLimitExceeded(RateLimited):
    """Over the limit. Retry-After is the number of seconds until the window frees up."""

    def __init__(self, detail: str, *, usage: Usage, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.usage = usage
        self.headers = {"Retry-After": str(usage.reset), **usage.headers()}


class RateLimitUnavailable(Unavailable):
    code = "rate_limit_unavailable"
    title = "Rate limiting unavailable"


@dataclass(frozen=True, slots=True)
class Usage:
    limit: int
    count: int
    reset: int  # seconds until the window ends (at least 1)

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit

    def headers(self) -> dict[str, str]:
        """The RateLimit-* fields (IETF draft-ietf-httpapi-ratelimit-headers)."""
        return {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(max(0, self.limit - self.count)),
                "RateLimit-Reset": str(self.reset)}


def counts() -> dict[tuple[str, str], int]:
    """(outcome, limit) → events in this process since it started."""
    with _lock:
        return dict(_counts)


def _record(outcome: str, limit: str, *, operation: str = "", key_id: str | None = None) -> None:
    """Count one outcome here (`counts()`) and in the metrics (/metrics, the console's list of
    rate-limited keys); a cache failure is logged at most once per LOG_INTERVAL_SECONDS."""
    with _lock:
        _counts[outcome, limit] += 1
        log_now = False
        if outcome != REJECTED:
            now = time.monotonic()
            if now - _last_logged.get(outcome, -LOG_INTERVAL_SECONDS) >= LOG_INTERVAL_SECONDS:
                _last_logged[outcome] = now
                log_now, unlogged = True, _unlogged.pop(outcome, 0)
            else:
                _unlogged[outcome] += 1
    if log_now:
        logger.warning("rate limits: the cache cannot count; %s (%s) — %d more since the last message",
                       "writes refused" if outcome == FAIL_CLOSED else "reads served unlimited", limit, unlogged)
    if outcome == REJECTED:
        metrics.rate_limit_rejected(operation or limit, key_id=key_id)
    elif outcome == FAIL_OPEN:
        metrics.rate_limit_fail_open()
    else:
        metrics.rate_limit_fail_closed()


def client_bucket(address: str | None) -> str:
    """An anonymous caller's bucket: its address, or its /64 for IPv6 (one host owns a /64)."""
    if not address:
        return "ip:unknown"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return "ip:unknown"
    if parsed.version == 6:
        return f"ip:{ipaddress.ip_network(f'{parsed}/64', strict=False).network_address}/64"
    return f"ip:{parsed}"


def _usage(group: str, rate: str, bucket: str, *, increment: bool) -> Usage | None:
    """The count in `bucket`'s current window (after counting this call when `increment`);
    None when the cache could not count. django-ratelimit's windows, keys and rates (its
    `get_usage`, less the request), counted in one cache round trip instead of its two."""
    limit, period = _split_rate(rate)
    window = _get_window(bucket, period)
    key = _make_cache_key(group, window, rate, bucket, ALL)
    try:
        count = cache.count(caches[settings.RATELIMIT_USE_CACHE], key, period + EXPIRATION_FUDGE, increment=increment)
    except Exception:  # noqa: BLE001  # any cache failure (connection refused, timeout): decided by the caller
        return None
    if count is None:
        return None
    return Usage(limit=limit, count=count, reset=max(1, window - int(time.time())))


def rate_for(rate_class: RateClass, principal: Principal | None) -> str:
    if rate_class is RateClass.MUTATION:
        return (principal and principal.rate_limit_mutation) or settings.RATE_LIMIT_MUTATION
    return (principal and principal.rate_limit_get) or settings.RATE_LIMIT_GET


def check(operation: Operation, principal: Principal | None) -> Usage | None:
    """Count one call of `operation`. Raises RateLimitExceeded over the limit, RateLimitUnavailable
    for a write the cache cannot count; returns the usage (None when not counted)."""
    if not settings.RATE_LIMITS_ENABLED:
        return None
    rate_class = operation.rate or RateClass.GET
    bucket = f"key:{principal.key_id}" if principal is not None else client_bucket(client_ip_var.get())
    usage = _usage(f"gateway:{rate_class}", rate_for(rate_class, principal), bucket, increment=True)
    if usage is None:
        if rate_class is RateClass.MUTATION:
            _record(FAIL_CLOSED, rate_class, operation=operation.name)
            raise RateLimitUnavailable("Rate limits cannot be checked right now, so writes are refused; retry shortly.")
        _record(FAIL_OPEN, rate_class, operation=operation.name)
        return None
    if usage.exceeded:
        _record(REJECTED, rate_class, operation=operation.name, key_id=principal.key_id if principal else None)
        raise RateLimitExceeded(f"Rate limit of {usage.limit} {rate_class} calls per window reached; retry in "
                                f"{usage.reset} s.", usage=usage)
    return usage


# Addresses this process has seen fail authentication within the last SUSPECT_SECONDS. Only these
# are checked against the shared failure count before their key is looked up, which keeps two cache
# round trips off every healthy call; an address failing in several processes is refused by each one
# after its first failure there (at most one extra failure per process).
SUSPECT_SECONDS = 3600.0
MAX_SUSPECTS = 10_000
_suspects: dict[str, float] = {}


def _suspect(bucket: str) -> bool:
    seen = _suspects.get(bucket)
    return seen is not None and time.monotonic() - seen < SUSPECT_SECONDS


def _remember_suspect(bucket: str) -> None:
    with _lock:
        if len(_suspects) >= MAX_SUSPECTS:
            for old in list(_suspects)[: MAX_SUSPECTS // 10]:  # the oldest tenth (dicts keep insertion order)
                del _suspects[old]
        _suspects.pop(bucket, None)
        _suspects[bucket] = time.monotonic()


def authenticate(token: str) -> Principal:
    """`authenticate_token`, refused up front for an address with too many recent failures."""
    if not settings.RATE_LIMITS_ENABLED:
        return authenticate_token(token)
    bucket = client_bucket(client_ip_var.get())
    rate = settings.RATE_LIMIT_AUTH_FAILURES
    if _suspect(bucket):
        usage = _usage(AUTH_FAILURES, rate, bucket, increment=False)
        if usage is None:
            _record(FAIL_OPEN, AUTH_FAILURES)  # the key check itself still stands; writes fail closed below
        elif usage.count >= usage.limit:
            _record(REJECTED, AUTH_FAILURES)
            raise RateLimitExceeded("Too many failed authentications from this address; retry later.",
                                    usage=Usage(limit=usage.limit, count=usage.count + 1, reset=usage.reset),
                                    code="authentication_rate_limited")
    try:
        return authenticate_token(token)
    except AuthenticationFailed:
        _remember_suspect(bucket)
        if _usage(AUTH_FAILURES, rate, bucket, increment=True) is None:
            _record(FAIL_OPEN, AUTH_FAILURES)  # this failure goes uncounted: said, not silent
        raise
