"""Idempotency-Key for every write (SPEC §5).

A write first claims (principal, key) in its own short transaction, so concurrent retries
see it at once and get 409. The write itself and the stored response then commit together:
a retry after success replays the stored response, and a write that failed leaves no claim
behind. A claim abandoned by a crashed process can be taken over after a lease.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from apps.telemetry.models import IdempotencyRecord
from modeloman.problems import Conflict, DomainError, InvalidInput
from modeloman.transactions import atomic_with_retry

HEADER = "Idempotency-Key"
KEY_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
IN_FLIGHT_LEASE = timedelta(seconds=60)
# Each pass either claims, replays, refuses, or saw a failed holder vanish; the last keeps repeating
# only while other requests keep failing with the same key, and then the answer is 409.
_CLAIM_ATTEMPTS = 3
_SECRET_NAME_RE = re.compile(r"(^|[_-])(token|secret|password|authorization|api[_-]?key|digest)$", re.IGNORECASE)
_TOKEN_RE = re.compile(r"mmk_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}")


class KeyReused(DomainError):
    status = 422
    code = "idempotency_key_reused"
    title = "Idempotency key reused with a different request"


def retention() -> timedelta:
    return timedelta(hours=settings.IDEMPOTENCY_RETENTION_HOURS)


def principal_scope(principal: Any) -> str:
    """Keys are scoped per agent (so a rotated key still replays), else per key."""
    if principal.agent_id is not None:
        return f"agent:{principal.agent_id}"
    return f"key:{principal.key_pk}"


def sanitize(value: Any) -> Any:
    """Stored responses never keep anything that looks like a credential, nor a NUL character
    (jsonb cannot store it; it is kept as the six characters `\\u0000`)."""
    if isinstance(value, dict):
        return {_storable(str(k)): "[redacted]" if _SECRET_NAME_RE.search(str(k)) else sanitize(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [sanitize(v) for v in value]
    if isinstance(value, str):
        return _TOKEN_RE.sub("[redacted]", _storable(value))
    return value


def _storable(text: str) -> str:
    return text.replace("\x00", "\\u0000")


def _fingerprint(request: Request, operation: str) -> str:
    """The request as sent: a retry repeats the same bytes, so comparing bytes is exact and
    cheap (no re-serialising a 1,000-item batch)."""
    digest = hashlib.sha256(f"{operation}\n{request.method}\n{request.path}\n".encode())
    digest.update(request.body)
    return digest.hexdigest()


_CLAIM = """
    INSERT INTO telemetry_idempotencyrecord
        (principal, key, operation, fingerprint, state, created_at, expires_at)
    VALUES (%s, %s, %s, %s, 'in_flight', %s, %s)
    ON CONFLICT (principal, key) DO NOTHING
    RETURNING id
"""
_TAKE_OVER = """
    UPDATE telemetry_idempotencyrecord
    SET operation = %s, fingerprint = %s, state = 'in_flight', created_at = %s, expires_at = %s,
        response_status = NULL, response_body = NULL
    WHERE id = %s AND (expires_at <= %s OR (state = 'in_flight' AND created_at <= %s))
    RETURNING id
"""


def _claim(principal: str, key: str, operation: str, fingerprint: str) -> int | IdempotencyRecord:
    """A new claim's id, or the completed record to replay. Raises 409/422."""
    for _ in range(_CLAIM_ATTEMPTS):
        now = timezone.now()
        expires = now + retention()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_CLAIM, [principal, key, operation, fingerprint, now, expires])
            row = cursor.fetchone()
            if row:
                return row[0]
            record = IdempotencyRecord.objects.filter(principal=principal, key=key).first()
            if record is None:
                # The holder failed and deleted its claim between our INSERT and this read: claim again.
                continue
            cursor.execute(_TAKE_OVER, [operation, fingerprint, now, expires, record.pk, now, now - IN_FLIGHT_LEASE])
            row = cursor.fetchone()
            if row:  # the old record expired, or its writer died mid-flight
                return row[0]
        if record.fingerprint != fingerprint:
            raise KeyReused("This Idempotency-Key was used for a different request.")
        if record.state == IdempotencyRecord.State.IN_FLIGHT:
            break
        return record
    raise Conflict("A request with this Idempotency-Key is still in progress.", code="idempotency_in_flight")


def run_idempotent(request: Request, *, operation: str, handler: Callable[[], Response]) -> Response:
    key = request.headers.get(HEADER)
    if key is None:
        raise InvalidInput(f"Writes need an {HEADER} header.", code="idempotency_key_missing")
    if not KEY_RE.fullmatch(key):
        raise InvalidInput(f"{HEADER} must be 1-128 characters of A-Z a-z 0-9 _ . : -",
                           code="idempotency_key_malformed")
    scope = principal_scope(request.auth)
    claim = _claim(scope, key, operation, _fingerprint(request, operation))
    if isinstance(claim, IdempotencyRecord):
        return Response(claim.response_body, status=claim.response_status, headers={"Idempotent-Replayed": "true"})

    def write_and_store() -> Response:
        response = handler()
        IdempotencyRecord.objects.filter(pk=claim).update(
            state=IdempotencyRecord.State.COMPLETED, response_status=response.status_code,
            response_body=sanitize(response.data))
        return response

    try:
        # A deadlock or serialization failure runs the write again (or ends as 503), never a 500.
        response = atomic_with_retry(write_and_store)
    except BaseException:
        IdempotencyRecord.objects.filter(pk=claim, state=IdempotencyRecord.State.IN_FLIGHT).delete()
        raise
    return response


def idempotent_write(method: Callable) -> Callable:
    """Decorate a DRF view's write method: it runs under the request's Idempotency-Key."""

    @functools.wraps(method)
    def wrapper(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        operation = getattr(self, "operations", {}).get(request.method) or self.operation
        return run_idempotent(request, operation=operation, handler=lambda: method(self, request, *args, **kwargs))

    return wrapper

