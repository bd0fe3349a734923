"""Audit trail writes. Every change to keys, agents, projects and policy calls
`audit_record` inside the transaction that makes the change.

Each row is chained to the one before it (apps/audit/chain.py) under the locked chain head,
which stays locked until the change's transaction ends: audited changes commit one at a
time. Keep the work after `audit_record` short, and call it after the change's own row locks
(a transaction that holds the head while waiting for another row lock can deadlock with one
that holds that row and waits for the head; PostgreSQL then aborts one of them).
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import connection, models
from django.utils import timezone

from apps.audit.chain import CHAINED_FIELDS, GENESIS_HASH, row_hash
from apps.audit.models import AuditChainHead, AuditEvent
from apps.gateway.identity import client_ip_var, request_id_var

if TYPE_CHECKING:
    from apps.gateway.auth import Principal


@dataclass(frozen=True)
class Actor:
    """Who made a change: a staff user, an API key, or the system (commands, jobs)."""

    type: str
    label: str
    user_id: int | None = None
    key_id: str = ""

    @classmethod
    def for_user(cls, user: Any) -> Actor:
        return cls(type=AuditEvent.ActorType.USER, label=f"user:{user.get_username()}", user_id=user.pk)

    @classmethod
    def for_principal(cls, principal: Principal) -> Actor:
        return cls(type=AuditEvent.ActorType.KEY, label=f"key:{principal.key_id}", key_id=principal.key_id)

    @classmethod
    def system(cls, label: str) -> Actor:
        return cls(type=AuditEvent.ActorType.SYSTEM, label=f"system:{label}")


def _json_safe(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return value


def snapshot(instance: models.Model, fields: Iterable[str]) -> dict[str, Any]:
    """The named fields of `instance`, JSON-ready, for an audit row's before/after."""
    out = {}
    for name in fields:
        field = instance._meta.get_field(name)
        if not isinstance(field, models.Field):  # a reverse relation or generic key has no column of its own
            raise TypeError(f"{name} is not a concrete field of {type(instance).__name__}")
        out[name] = _json_safe(getattr(instance, field.attname))
    return out


def audit_record(
    *,
    actor: Actor,
    action: str,
    target: models.Model,
    before: dict | None = None,
    after: dict | None = None,
    reason: str = "",
) -> AuditEvent:
    """Write one audit row, chained to the last. Must run inside the transaction that makes the change."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit_record must be called inside the change's transaction")
    from apps.keys.models import ApiKey

    head = _lock_chain_head()
    event = AuditEvent(
        chain_seq=head.seq + 1,
        prev_hash=head.hash,
        created_at=timezone.now(),
        actor_type=actor.type,
        actor_label=actor.label[:200],
        actor_user_id=actor.user_id,
        actor_key_id=actor.key_id,
        action=action,
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        target_repr=str(target)[:200],
        api_key=target if isinstance(target, ApiKey) else None,
        before=_json_safe(before) if before is not None else None,
        after=_json_safe(after) if after is not None else None,
        reason=reason,
        client_ip=client_ip_var.get(),
        request_id=request_id_var.get() or "",
    )
    event.hash = row_hash({name: getattr(event, name) for name in CHAINED_FIELDS})
    event.save(force_insert=True)
    AuditChainHead.objects.filter(pk=head.pk).update(seq=event.chain_seq, hash=event.hash)
    return event


def _lock_chain_head() -> AuditChainHead:
    """The head row, locked until this transaction ends. Created (at the genesis) only when
    missing, as after the test suite truncates the tables; if audit rows exist without a head,
    the insert that follows fails on the unique `chain_seq` instead of forking the chain."""
    head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        AuditChainHead.objects.bulk_create([AuditChainHead(pk=1, seq=0, hash=GENESIS_HASH)], ignore_conflicts=True)
        head = AuditChainHead.objects.select_for_update().get(pk=1)
    return head
