"""Idempotency keys for every write (SPEC §5), for any transport: claim → run → store or replay.

`idempotent()` is the core; the REST adapter (`apps.gateway.rest`) feeds it the
`Idempotency-Key` header and the request bytes, the gRPC one the `idempotency-key` metadata and
the serialized request. Every `write` operation of the access table goes through it.

The claim of (principal, key), the write itself and the stored response commit in ONE
transaction (one commit, one WAL flush per write; issue 10):

- A concurrent duplicate's claim `INSERT ... ON CONFLICT DO NOTHING` waits on the uncommitted
  unique-index entry of the first request (up to `DB_LOCK_TIMEOUT_MS`, then 503
  `database_timeout`). When the first commits, the duplicate replays its stored response; when
  it rolls back (its write failed), the duplicate claims the key and runs itself. So duplicates
  wait and replay rather than get 409.
- A write that fails rolls back with its claim: nothing of it is left, and the key is free.
- 409 `idempotency_in_flight` remains for a committed `in_flight` record, which only a writer of
  the former two-transaction scheme (a rolling deploy) leaves behind; such a claim abandoned by a
  crashed process is taken over after a lease, and an expired record at any time.

The claim rules live in one SQL function, `idempotency_claim` (gateway migration 0003), so that a
write done in one statement (`in_one_statement`: admission, apps.policy.ledger) claims exactly as
the full path does.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.gateway import metrics
from apps.gateway.errors import Conflict, InvalidInput, PreconditionFailed
from apps.gateway.models import IdempotencyRecord
from modeloman.transactions import atomic_with_retry

KEY_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
IN_FLIGHT_LEASE = timedelta(seconds=60)
_SECRET_NAME_RE = re.compile(r"(^|[_-])(token|secret|password|authorization|api[_-]?key|digest)$", re.IGNORECASE)
_TOKEN_RE = re.compile(r"mmk_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}")
# The names _SECRET_NAME_RE looks for, each spelling: found anywhere in a text, some key may be one.
_SECRET_WORDS = ("token", "secret", "password", "authorization", "apikey", "api_key", "api-key", "digest")


class KeyReused(PreconditionFailed):
    code = "idempotency_key_reused"
    title = "Idempotency key reused with a different request"


class KeyOwner(Protocol):
    @property
    def agent_id(self) -> int | None: ...
    @property
    def key_pk(self) -> int: ...


def retention() -> timedelta:
    return timedelta(hours=settings.IDEMPOTENCY_RETENTION_HOURS)


def principal_scope(principal: KeyOwner) -> str:
    """Keys are scoped per agent (so a rotated key still replays), else per key."""
    if principal.agent_id is not None:
        return f"agent:{principal.agent_id}"
    return f"key:{principal.key_pk}"


def storable_json(body: Any) -> str:
    """`json.dumps(sanitize(body))`, without walking `body` when its JSON text shows there is nothing
    to sanitize: all of it ASCII (nothing escaped as `\\u`, so no NUL, and no character that
    matches a secret's name only when case is folded), no `mmk_`, and no secret's name anywhere.
    That is nearly every response, and the walk was 3% of an admission's instructions
    (docs/benchmarks.md, "Seventh session"); tests/gateway/test_storable_json.py holds the two equal."""
    try:
        text = json.dumps(body)
    except TypeError:  # a key json cannot write (sanitize writes it with str())
        return json.dumps(sanitize(body))
    if "\\u" not in text and "mmk_" not in text:
        folded = text.lower()  # all ASCII here, where lower() is exactly what the regex's IGNORECASE matches
        if not any(word in folded for word in _SECRET_WORDS):  # (substring tests: the regex cost more than the walk)
            return text
    return json.dumps(sanitize(body))


def sanitize(value: Any) -> Any:
    """Stored responses never keep anything that looks like a credential, nor a NUL character
    (jsonb cannot store it; it is kept as the six characters `\\u0000`)."""
    if isinstance(value, str):
        return _storable_text(value)
    if isinstance(value, dict):
        return {key: "[redacted]" if secret else sanitize(v)
                for (key, secret), v in zip(map(_storable_key, value), value.values(), strict=True)}
    if isinstance(value, list):
        return [sanitize(v) for v in value]
    return value


def _storable_text(text: str) -> str:
    # The substring tests first: most text holds neither, and they cost far less than the regex.
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    return _TOKEN_RE.sub("[redacted]", text) if "mmk_" in text else text


@functools.lru_cache(maxsize=4096, typed=True)  # response keys repeat (field names); a bounded cache for the rest
def _storable_key(key: Any) -> tuple[str, bool]:
    """A key as stored (spelled as JSON spells it, where JSON can), and whether its value is to be redacted."""
    text = key if isinstance(key, str) else json.dumps(key) if key is None or isinstance(key, int | float) else str(key)
    return text.replace("\x00", "\\u0000"), bool(_SECRET_NAME_RE.search(text))


_CLAIM = "SELECT * FROM idempotency_claim(%s, %s, %s, %s, %s, %s, %s)"  # gateway migration 0003
_STORE = """
    UPDATE telemetry_idempotencyrecord SET state = 'completed', response_status = %s, response_body = %s::jsonb
    WHERE id = %s
"""


@dataclass(frozen=True)
class Outcome:
    """What a write answered: `status` (an HTTP status; gRPC stores 200 for OK) and the body,
    as it ran now or, `replayed`, as stored by the first request with the same key."""

    status: int
    body: Any
    replayed: bool = False
    answer: Any = None  # a write done in one statement: its result as the transport answers it, if it has one


@dataclass(frozen=True)
class Claim:
    """A write's claim on its key: who, which key, for which operation and request."""

    principal: str
    key: str
    operation: str
    fingerprint: str

    def params(self, now: datetime | None = None) -> list[Any]:
        """The first seven arguments of `idempotency_claim` (and of the one-statement writes that
        call it): principal, key, operation, fingerprint, now, the record's expiry, the lease cutoff."""
        now = now or timezone.now()
        return [self.principal, self.key, self.operation, self.fingerprint, now, now + retention(),
                now - IN_FLIGHT_LEASE]

    def settle(self, row: tuple) -> int | Outcome:
        """`idempotency_claim`'s row: the new claim's id, or the completed record to replay.
        Raises 422 when the key was used for another request, 409 while it is in flight."""
        claim_id, state, fingerprint, status, body = row
        if claim_id is not None:
            return claim_id
        if fingerprint != self.fingerprint:
            raise KeyReused("This Idempotency-Key was used for a different request.")
        if state == IdempotencyRecord.State.IN_FLIGHT:
            raise Conflict("A request with this Idempotency-Key is still in progress.", code="idempotency_in_flight")
        return Outcome(status, stored_body(body), replayed=True)


def stored_body(body: str | Any) -> Any:
    """A stored response body as a raw query returns it: Django has psycopg hand jsonb over as text."""
    return json.loads(body) if isinstance(body, str) else body


def _fingerprint(operation: str, request: bytes) -> str:
    """The request as sent: a retry repeats the same bytes, so comparing bytes is exact and
    cheap (no re-serialising a 1,000-item batch)."""
    digest = hashlib.sha256(f"{operation}\n".encode())
    digest.update(request)
    return digest.hexdigest()


class _Refused(Exception):  # noqa: N818  # a wrapper, not an error of its own
    def __init__(self, error: Conflict | KeyReused) -> None:
        self.error = error


def check_key(key: str | None) -> str:
    """The key, or the 400 / INVALID_ARGUMENT every transport gives for a missing or malformed one."""
    if key is None:
        raise InvalidInput("Writes need an idempotency key (REST header Idempotency-Key, gRPC metadata "
                           "idempotency-key).", code="idempotency_key_missing")
    if not KEY_RE.fullmatch(key):
        raise InvalidInput("An idempotency key is 1-128 characters of A-Z a-z 0-9 _ . : -",
                           code="idempotency_key_malformed")
    return key


# A write that can run as one statement (claim, write and stored response in one round trip): given
# the claim, its Outcome, or None when this request needs the full path (`run` under `idempotent`).
OneStatementWrite = Callable[[Claim], Outcome | None]


def idempotent(*, principal: KeyOwner, key: str | None, operation: str, request: bytes,
               run: Callable[[], tuple[int, Any]], in_one_statement: OneStatementWrite | None = None) -> Outcome:
    """Run a write once per (principal, key). `request` identifies the request (its bytes, with
    whatever else of it the transport considers part of it); `run` performs the write and returns
    (status, body). A domain error from `run` stores nothing and frees the key for a retry.
    `in_one_statement`, where a write has one (admission), is tried first: it claims, writes and
    stores in one statement, or hands the request back (None) to the full path.

    Raises 400 for a missing or malformed key, 422 when the key was used for another request,
    409 for a committed in-flight claim (former scheme). A duplicate of a request still running
    waits for it (module docstring)."""
    claim = Claim(principal_scope(principal), check_key(key), operation, _fingerprint(operation, request))

    def claim_write_and_store() -> Outcome:
        with connection.cursor() as cursor:  # inside the write's transaction
            cursor.execute(_CLAIM, claim.params())
            row = cursor.fetchone()
        try:
            claim_id = claim.settle(row)
        except (Conflict, KeyReused) as error:  # told apart from a Conflict raised by `run`
            raise _Refused(error) from None
        if isinstance(claim_id, Outcome):
            return claim_id
        status, body = run()
        with connection.cursor() as cursor:  # raw SQL: the ORM's update was ~9% of an admission's Python
            cursor.execute(_STORE, [status, storable_json(body), claim_id])
        return Outcome(status, body)

    try:
        outcome = None
        if in_one_statement is not None:
            try:
                outcome = in_one_statement(claim)
            except (Conflict, KeyReused) as error:  # only the claim refuses in there
                raise _Refused(error) from None
        if outcome is None:
            # One transaction: an error (a domain error of `run`, a refusal) rolls the claim back with
            # the write. A deadlock or serialization failure runs it all again (or ends as 503), never a 500.
            outcome = atomic_with_retry(claim_write_and_store)
    except _Refused as refused:
        metrics.idempotency_conflict(operation, refused.error.code)
        raise refused.error from None
    if outcome.replayed:
        metrics.idempotency_replayed(operation)
    return outcome
