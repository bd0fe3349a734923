"""Operator writes for the leaderboard: hiding and unhiding entries, audited."""

from __future__ import annotations

from django.db import transaction

from apps.audit.services import Actor, audit_record, snapshot
from apps.leaderboard.models import HiddenEntry

HIDDEN_FIELDS = ("kind", "name", "reason")


@transaction.atomic
def hidden_entry_save(*, actor: Actor, entry: HiddenEntry) -> HiddenEntry:
    """Hide a model, prompt or suite (or change the reason). Pages show it within a minute
    (their cache lifetime)."""
    adding = entry._state.adding
    before = None if adding else snapshot(HiddenEntry.objects.select_for_update().get(pk=entry.pk), HIDDEN_FIELDS)
    entry.name = entry.name.strip()
    if adding:
        entry.created_by = actor.label[:200]
    entry.full_clean()
    entry.save()
    audit_record(actor=actor, action=f"leaderboard_hidden.{'create' if adding else 'update'}", target=entry,
                 before=before, after=snapshot(entry, HIDDEN_FIELDS), reason=entry.reason)
    return entry


@transaction.atomic
def hidden_entry_delete(*, actor: Actor, entry: HiddenEntry) -> None:
    """Show a hidden entry again."""
    entry = HiddenEntry.objects.select_for_update().get(pk=entry.pk)
    audit_record(actor=actor, action="leaderboard_hidden.delete", target=entry,
                 before=snapshot(entry, HIDDEN_FIELDS))
    entry.delete()
