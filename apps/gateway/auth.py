"""The one authentication function every transport uses: token in, principal out.

The REST adapter reads `Authorization: Bearer`, the gRPC one the `authorization` metadata; both
call `authenticate_token` and get a `Principal` or an `AuthenticationFailed` (401 /
UNAUTHENTICATED) whose `code` says why.

`authenticate_token` rejects malformed tokens before any I/O, serves verified keys from a
process cache guarded by the invalidation listener (see `modeloman.invalidation`), and
writes `last_used_at` at most once a minute per key.
"""

from __future__ import annotations

import datetime as dt
import hmac
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from apps.gateway import metrics
from apps.gateway.errors import AuthenticationFailed
from apps.keys import tokens
from apps.keys.models import Agent, ApiKey
from modeloman.invalidation import ProcessCache

LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated API key and what it may act as."""

    key_pk: int
    key_id: str
    agent_id: int | None
    agent_name: str | None
    project_id: int | None
    project_slug: str | None
    scopes: frozenset[str]
    expires_at: dt.datetime | None
    agent_status: str | None = None  # a quarantined agent may only read and report telemetry
    # The operator's per-key overrides of RATE_LIMIT_GET / RATE_LIMIT_MUTATION ("" = the default).
    rate_limit_get: str = ""
    rate_limit_mutation: str = ""

    is_authenticated = True  # lets DRF and Django treat it as request.user

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def _refused(code: str, detail: str) -> AuthenticationFailed:
    metrics.auth_failed(code)
    return AuthenticationFailed(detail, code=code)


_INVALID = ("token_invalid", "The API key is not valid.")


@dataclass(frozen=True, slots=True)
class _KeyRecord:
    principal: Principal
    api_key: ApiKey  # its status is ApiKey.status_at(now): the one rule, also used by the admin
    agent_status: str | None


_verified_keys = ProcessCache("api-keys")
_last_touch: dict[int, float] = {}
_touch_lock = threading.Lock()


def _load_record(key_id: str) -> _KeyRecord | None:
    api_key = (
        ApiKey.objects.select_related("agent__project").filter(key_id=key_id).first()
    )
    if api_key is None:
        return None
    agent = api_key.agent
    principal = Principal(
        key_pk=api_key.pk,
        key_id=api_key.key_id,
        agent_id=agent.pk if agent else None,
        agent_name=agent.name if agent else None,
        project_id=agent.project_id if agent else None,
        project_slug=agent.project.slug if agent else None,
        scopes=frozenset(api_key.scopes),
        expires_at=api_key.effective_expiry,
        agent_status=agent.status if agent else None,
        rate_limit_get=api_key.rate_limit_get,
        rate_limit_mutation=api_key.rate_limit_mutation,
    )
    return _KeyRecord(principal=principal, api_key=api_key, agent_status=agent.status if agent else None)


def _digest_matches(record: _KeyRecord, parsed: tokens.ParsedToken) -> bool:
    current = tokens.digest(parsed.key_id, parsed.secret, settings.KEY_PEPPER)
    if hmac.compare_digest(current, record.api_key.digest):
        return True
    previous_pepper = settings.KEY_PEPPER_PREVIOUS
    if previous_pepper and hmac.compare_digest(
        tokens.digest(parsed.key_id, parsed.secret, previous_pepper), record.api_key.digest
    ):
        # Pepper rotation in progress: upgrade this key's digest to the current pepper.
        ApiKey.objects.filter(pk=record.principal.key_pk, digest=record.api_key.digest).update(digest=current)
        _verified_keys.clear()
        return True
    return False


def _touch_last_used(key_pk: int, now: dt.datetime) -> None:
    """At most one UPDATE per key per minute per process, and the WHERE clause makes it
    at most one effective write per key per minute across processes."""
    tick = time.monotonic()
    with _touch_lock:
        last = _last_touch.get(key_pk)
        if last is not None and tick - last < LAST_USED_RESOLUTION.total_seconds():
            return
        _last_touch[key_pk] = tick
    ApiKey.objects.filter(pk=key_pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now)


def authenticate_token(token: str, *, now: dt.datetime | None = None) -> Principal:
    """Verify a bearer token. Returns the principal or raises `AuthenticationFailed`."""
    parsed = tokens.parse(token)
    if parsed is None:
        raise _refused("token_malformed", "The API key is malformed or mistyped.")

    record = _verified_keys.get(parsed.key_id)
    if record is None:
        generation = _verified_keys.generation()
        record = _load_record(parsed.key_id)
        if record is None:
            raise _refused(*_INVALID)  # same answer as a wrong secret: no key-id oracle
        _verified_keys.put(parsed.key_id, record, generation)

    if not _digest_matches(record, parsed):
        raise _refused(*_INVALID)
    now = now or timezone.now()
    status = record.api_key.status_at(now)
    if status == ApiKey.Status.REVOKED:
        raise _refused("key_revoked", "The API key has been revoked.")
    if record.agent_status == Agent.Status.DISABLED:
        raise _refused("agent_disabled", "The agent this key belongs to is disabled.")
    if status == ApiKey.Status.EXPIRED:
        if record.api_key.grace_until is not None:
            raise _refused("key_rotated", "The API key was rotated and its grace period ended.")
        raise _refused("key_expired", "The API key has expired.")

    _touch_last_used(record.principal.key_pk, now)
    return record.principal
