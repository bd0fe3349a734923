"""Signed high-risk writes: the server's check, for every transport (docs/architecture.md, "Signed writes").

Operations marked `signed` in the access table (policy and cap writes) carry X-MM-Timestamp,
X-MM-Nonce and X-MM-Signature (gRPC: the same names as lower-case metadata) over the canonical
request of `apps.gateway.signature`. The REST adapter calls `check_signed_write` from the access
permission, the gRPC one from its per-call guard; both after authentication and scope, before the
idempotency claim and the write.

The per-key signing secret is derived, not stored: HMAC-SHA256(REQUEST_SIGNING_KEY, key_id). The
server never keeps the token's secret (only its digest), so it could not recompute anything from
that; from the key id it can, on every request, with no database column to leak. A database dump
alone therefore yields no signing secret; the environment's REQUEST_SIGNING_KEY does (for every
key), so it is kept like KEY_PEPPER. The secret is shown once, with the token, and is otherwise
never displayed. Consequences: a key's signing secret lives and dies with the key (rotate or revoke
the key to replace it), and changing REQUEST_SIGNING_KEY changes every key's secret; the previous
value stays accepted while REQUEST_SIGNING_KEY_PREVIOUS is set (docs/runbooks.md).

Nonces live in PostgreSQL (`SignedWriteNonce`, unique per key), not in Redis: a nonce store that
forgets is a replay window, and Redis forgets on restart without persistence and under eviction,
silently. PostgreSQL is the store the write itself needs, so when it is down the write could not
happen anyway; any failure to record a nonce is 503 `nonce_store_unavailable`, never an accept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Callable
from typing import Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from apps.gateway.access import Operation
from apps.gateway.errors import AuthenticationFailed, Unavailable
from apps.gateway.signature import (
    NONCE_HEADER,
    NONCE_RE,
    SIGNATURE_HEADER,
    SIGNATURE_RE,
    TIMESTAMP_HEADER,
    TIMESTAMP_RE,
    signature_for,
)

MAX_SKEW_SECONDS = 300
SIGNING_SECRET_PREFIX = "mms_"  # noqa: S105  # a label, not a secret
_DERIVATION_LABEL = "modeloman-request-signing-v1:"


class SignedKey(Protocol):
    @property
    def key_id(self) -> str: ...


def signing_secret_for(key_id: str, *, server_key: str | None = None) -> str:
    """The key's signing secret: `mms_` + hex HMAC-SHA256(REQUEST_SIGNING_KEY, label + key id)."""
    server_key = settings.REQUEST_SIGNING_KEY if server_key is None else server_key
    if not server_key:
        raise ImproperlyConfigured("REQUEST_SIGNING_KEY is not set.")
    digest = hmac.new(server_key.encode("utf-8"), f"{_DERIVATION_LABEL}{key_id}".encode("ascii"), hashlib.sha256)
    return SIGNING_SECRET_PREFIX + digest.hexdigest()


def _candidate_secrets(key_id: str) -> list[str]:
    secrets = [signing_secret_for(key_id)]
    if settings.REQUEST_SIGNING_KEY_PREVIOUS:  # a REQUEST_SIGNING_KEY rotation is under way
        secrets.append(signing_secret_for(key_id, server_key=settings.REQUEST_SIGNING_KEY_PREVIOUS))
    return secrets


def _refused(code: str, detail: str) -> AuthenticationFailed:
    return AuthenticationFailed(detail, code=code)


def verify_signature(*, principal: SignedKey, method: str, path: str, body: bytes, timestamp: str,
                     nonce: str, signature: str, now: dt.datetime | None = None) -> None:
    """Accept a signed request once, or raise 401 with a stable code: `signature_malformed`,
    `signature_expired` (timestamp more than MAX_SKEW_SECONDS away), `signature_invalid`,
    `nonce_reused`; or 503 `nonce_store_unavailable`. Only a valid signature consumes its nonce."""
    if not (TIMESTAMP_RE.fullmatch(timestamp) and NONCE_RE.fullmatch(nonce) and SIGNATURE_RE.fullmatch(signature)):
        raise _refused("signature_malformed", f"{TIMESTAMP_HEADER} is whole Unix seconds, {NONCE_HEADER} 16-128 of "
                       f"A-Z a-z 0-9 _ -, {SIGNATURE_HEADER} 64 lowercase hex digits.")
    now = now or timezone.now()
    stamp = int(timestamp)
    if abs(now.timestamp() - stamp) > MAX_SKEW_SECONDS:
        raise _refused("signature_expired", f"{TIMESTAMP_HEADER} is more than {MAX_SKEW_SECONDS} s from the "
                       "server's clock: sign again with the current time (and check the clock).")
    expected = [signature_for(signing_secret=secret, method=method, path=path, timestamp=timestamp, nonce=nonce,
                              body=body) for secret in _candidate_secrets(principal.key_id)]
    # Every candidate is compared (no early exit), each in constant time.
    if not any([hmac.compare_digest(candidate, signature) for candidate in expected]):  # noqa: C419
        raise _refused("signature_invalid", "The request signature does not match (see the signing algorithm "
                       "in the README: method, path, timestamp, nonce and the body's SHA-256).")
    # Remembered until the timestamp itself leaves the window: after that the clock check refuses it.
    expires_at = dt.datetime.fromtimestamp(stamp + MAX_SKEW_SECONDS, tz=dt.UTC)
    if not _nonce_consume(key_id=principal.key_id, nonce=nonce, expires_at=expires_at, now=now):
        raise _refused("nonce_reused", "This nonce was already used: every request, retries included, needs a "
                       "fresh nonce and signature.")


_PURGE = "DELETE FROM gateway_signedwritenonce WHERE key_id = %s AND expires_at < %s"
_CONSUME = """
    INSERT INTO gateway_signedwritenonce (key_id, nonce, expires_at) VALUES (%s, %s, %s)
    ON CONFLICT (key_id, nonce) DO NOTHING
    RETURNING 1
"""


def _nonce_consume(*, key_id: str, nonce: str, expires_at: dt.datetime, now: dt.datetime) -> bool:
    """Record the nonce; False if this key already used it. Committed before the write runs (in its
    own transaction when there is no outer one), so a failed write does not free its nonce.
    The key's expired nonces go in the same transaction: the table holds minutes of writes."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_PURGE, [key_id, now])
            cursor.execute(_CONSUME, [key_id, nonce, expires_at])
            return cursor.fetchone() is not None
    except DatabaseError as error:
        raise Unavailable("The nonce store is unavailable: signed writes are refused until it is back.",
                          code="nonce_store_unavailable") from error


def check_signed_write(*, operation: Operation, principal: SignedKey, method: str, path: str,
                       body: Callable[[], bytes], header: Callable[[str], str | None]) -> None:
    """The transports' one call: nothing for an operation that is not `signed`; else verify the
    request's signature (`header` looks a header / metadata name up, `body` gives the bytes).
    Unsigned: 401 `signature_required` when REQUIRE_SIGNED_WRITES is on, else let through. A request
    that sends any of the headers is always verified, required or not."""
    if not operation.signed:
        return
    timestamp, nonce, signature = header(TIMESTAMP_HEADER), header(NONCE_HEADER), header(SIGNATURE_HEADER)
    if timestamp is None and nonce is None and signature is None:
        if settings.REQUIRE_SIGNED_WRITES:
            raise _refused("signature_required", f"{operation.name} must be signed: send {TIMESTAMP_HEADER}, "
                           f"{NONCE_HEADER} and {SIGNATURE_HEADER} (see the README, Signed writes).")
        return
    verify_signature(principal=principal, method=method, path=path, body=body(), timestamp=timestamp or "",
                     nonce=nonce or "", signature=signature or "")
