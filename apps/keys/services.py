"""Writes for projects, agents and API keys. Each one audits in its own transaction, and
each change that affects authentication broadcasts a cache invalidation."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.services import Actor, audit_record, snapshot
from apps.gateway.errors import Conflict, InvalidInput
from apps.gateway.signing import signing_secret_for
from apps.keys import tokens
from apps.keys.models import Agent, ApiKey, Project
from modeloman.invalidation import broadcast

PROJECT_FIELDS = ("slug", "name", "public_name", "leaderboard_opt_in")
AGENT_FIELDS = ("project", "name", "status")
KEY_FIELDS = ("key_id", "name", "agent", "scopes", "expires_at", "revoked_at", "grace_until", "rate_limit_get",
              "rate_limit_mutation")
MAX_GRACE = dt.timedelta(days=30)


@dataclass(frozen=True)
class IssuedKey:
    """A newly created key, its plaintext token and its request-signing secret — shown once,
    never stored (the signing secret is derived from the key id: apps.gateway.signing)."""

    api_key: ApiKey
    token: str
    signing_secret: str


def _save_audited(*, actor: Actor, instance, fields: tuple[str, ...], kind: str) -> tuple[dict | None, dict]:
    """full_clean + save + one audit row ("<kind>.create" or "<kind>.update")."""
    adding = instance._state.adding
    before = None
    if not adding:
        stored = type(instance).objects.select_for_update().get(pk=instance.pk)
        before = snapshot(stored, fields)
    instance.full_clean()
    instance.save()
    after = snapshot(instance, fields)
    audit_record(actor=actor, action=f"{kind}.{'create' if adding else 'update'}", target=instance,
                 before=before, after=after)
    return before, after


@transaction.atomic
def project_save(*, actor: Actor, project: Project) -> Project:
    """Create or update a project (validated, audited). A new slug reaches every process within a second."""
    before, after = _save_audited(actor=actor, instance=project, fields=PROJECT_FIELDS, kind="project")
    if before is not None and before["slug"] != after["slug"]:
        broadcast("project")  # cached principals carry the slug
    return project


@transaction.atomic
def agent_save(*, actor: Actor, agent: Agent) -> Agent:
    """Create or update an agent. Any change reaches every process within a second."""
    before, after = _save_audited(actor=actor, instance=agent, fields=AGENT_FIELDS, kind="agent")
    if before is not None and before != after:
        # Every agent field is cached: status decides authentication (disabled) and access
        # (quarantined), project decides which project policy and caps apply, and the name
        # and project are part of the principal.
        broadcast("agent")
    return agent


def _new_key(*, actor: Actor, agent: Agent | None, scopes: list[str], expires_at: dt.datetime | None,
             name: str, rotated_from: ApiKey | None = None) -> IssuedKey:
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput("expires_at must be in the future.", code="invalid_expiry")
    key_id, secret, token = tokens.generate()
    api_key = ApiKey(
        agent=agent, name=name, key_id=key_id, scopes=sorted(set(scopes)),
        digest=tokens.digest(key_id, secret, settings.KEY_PEPPER),
        expires_at=expires_at, rotated_from=rotated_from, created_by=actor.label[:200],
    )
    api_key.full_clean()
    api_key.save()
    audit_record(actor=actor, action="api_key.create", target=api_key,
                 after=snapshot(api_key, KEY_FIELDS))
    return IssuedKey(api_key=api_key, token=token, signing_secret=signing_secret_for(key_id))


@transaction.atomic
def api_key_create(*, actor: Actor, agent: Agent | None, scopes: list[str],
                   expires_at: dt.datetime | None = None, name: str = "") -> IssuedKey:
    """Issue a key. The returned token is the only copy of the secret."""
    return _new_key(actor=actor, agent=agent, scopes=scopes, expires_at=expires_at, name=name)


def _locked(api_key: ApiKey) -> ApiKey:
    return ApiKey.objects.select_for_update().get(pk=api_key.pk)


@transaction.atomic
def api_key_revoke(*, actor: Actor, api_key: ApiKey, reason: str) -> ApiKey:
    """Revoke for good. Takes effect in every process within a second of commit."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput("A revocation needs a reason.", code="reason_required")
    key = _locked(api_key)
    if key.revoked_at is not None:
        raise Conflict(f"Key {key.key_id} is already revoked.", code="already_revoked")
    before = snapshot(key, KEY_FIELDS)
    key.revoked_at = timezone.now()
    key.revoked_reason = reason
    key.save(update_fields=["revoked_at", "revoked_reason"])
    audit_record(actor=actor, action="api_key.revoke", target=key, before=before,
                 after=snapshot(key, KEY_FIELDS), reason=reason)
    broadcast("api_key")
    return key


@transaction.atomic
def api_key_rotate(*, actor: Actor, api_key: ApiKey, grace: dt.timedelta) -> IssuedKey:
    """Issue a successor with the same agent and scopes; the old key works until grace ends."""
    if grace < dt.timedelta(0) or grace > MAX_GRACE:
        raise InvalidInput(f"Grace must be between 0 and {MAX_GRACE.days} days.", code="invalid_grace")
    key = _locked(api_key)
    now = timezone.now()
    if key.status_at(now) in (ApiKey.Status.REVOKED, ApiKey.Status.EXPIRED):
        raise Conflict(f"Key {key.key_id} is {key.status_at(now)}; issue a new key.", code="key_not_active")
    if hasattr(key, "rotated_to"):
        raise Conflict(f"Key {key.key_id} was already rotated.", code="already_rotated")
    before = snapshot(key, KEY_FIELDS)
    key.grace_until = now + grace
    key.save(update_fields=["grace_until"])
    audit_record(actor=actor, action="api_key.rotate", target=key, before=before,
                 after=snapshot(key, KEY_FIELDS))
    issued = _new_key(actor=actor, agent=key.agent, scopes=key.scopes, expires_at=key.expires_at,
                      name=key.name, rotated_from=key)
    broadcast("api_key")
    return issued


@transaction.atomic
def api_key_set_expiry(*, actor: Actor, api_key: ApiKey, expires_at: dt.datetime | None) -> ApiKey:
    key = _locked(api_key)
    if key.revoked_at is not None:
        raise Conflict(f"Key {key.key_id} is revoked.", code="already_revoked")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput("expires_at must be in the future.", code="invalid_expiry")
    before = snapshot(key, KEY_FIELDS)
    key.expires_at = expires_at
    key.save(update_fields=["expires_at"])
    audit_record(actor=actor, action="api_key.set_expiry", target=key, before=before,
                 after=snapshot(key, KEY_FIELDS))
    broadcast("api_key")
    return key


@transaction.atomic
def api_key_set_rate_limits(*, actor: Actor, api_key: ApiKey, rate_limit_get: str, rate_limit_mutation: str) -> ApiKey:
    """Override this key's read and write rate limits ("" = RATE_LIMIT_GET / RATE_LIMIT_MUTATION),
    e.g. for a bulk-ingest agent. Audited; every process applies it within a second."""
    key = _locked(api_key)
    if key.revoked_at is not None:
        raise Conflict(f"Key {key.key_id} is revoked.", code="already_revoked")
    before = snapshot(key, KEY_FIELDS)
    key.rate_limit_get = rate_limit_get.strip()
    key.rate_limit_mutation = rate_limit_mutation.strip()
    key.full_clean()
    key.save(update_fields=["rate_limit_get", "rate_limit_mutation"])
    audit_record(actor=actor, action="api_key.set_rate_limits", target=key, before=before,
                 after=snapshot(key, KEY_FIELDS))
    broadcast("api_key")  # cached principals carry the limits
    return key
