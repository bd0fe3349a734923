"""A read-only browser over the audit trail.

The table only grows, so no page counts all of it or lists its distinct values: counts stop
at a bound (the planner's estimate beyond), the actor / action / target filters offer the
values seen in the last 30 days (an index range on created_at, then any value by URL), and
time is filtered by ranges on the indexed created_at instead of a date hierarchy.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from apps.audit.models import AuditEvent
from apps.telemetry.admin import BoundedCountPaginator
from modeloman.admin_actions import ReadOnlyModelAdmin


class RecentValuesFilter(admin.SimpleListFilter):
    """Offers the values of `field` seen in the last 30 days; filters on any value given."""

    field = ""
    recent = dt.timedelta(days=30)

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        values = (AuditEvent.objects.filter(created_at__gte=timezone.now() - self.recent).order_by(self.field)
                  .values_list(self.field, flat=True).distinct()[:200])
        return [(value, value) for value in values]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(**{self.field: self.value()}) if self.value() else queryset


class ActorFilter(RecentValuesFilter):
    title = "actor"
    parameter_name = "actor"
    field = "actor_label"


class ActionFilter(RecentValuesFilter):
    title = "action"
    parameter_name = "action"
    field = "action"


class TargetTypeFilter(RecentValuesFilter):
    title = "target type"
    parameter_name = "target_type"
    field = "target_type"


def _shown(value: Any) -> str:
    return "—" if value is _MISSING else json.dumps(value, ensure_ascii=False, sort_keys=True)


_MISSING = object()


class AuditEventAdmin(ReadOnlyModelAdmin):
    """The audit trail is written by services, in the transaction of each change."""

    paginator = BoundedCountPaginator
    list_display = ("created_at", "chain_seq", "actor_label", "action", "target_type", "target_repr", "client_ip",
                    "request_id")
    list_filter = (("created_at", admin.DateFieldListFilter), "actor_type", ActorFilter, ActionFilter,
                   TargetTypeFilter)
    search_fields = ("actor_label", "target_repr", "target_id", "request_id", "actor_key_id")
    ordering = ("-chain_seq",)
    fieldsets = (
        (None, {"fields": ("created_at", "actor_type", "actor_label", "actor_user_id", "actor_key_id", "action",
                           "target_type", "target_id", "target_repr", "reason", "client_ip", "request_id")}),
        ("Change", {"fields": ("change_diff",)}),
        ("Hash chain", {"fields": ("chain_seq", "prev_hash", "hash")}),
    )
    readonly_fields = ("change_diff",)

    @admin.display(description="before → after")
    def change_diff(self, event: AuditEvent) -> str:
        """One line per field, changed fields marked; a create has no before, a delete no after."""
        before = event.before if isinstance(event.before, dict) else {}
        after = event.after if isinstance(event.after, dict) else {}
        if not before and not after:
            return "—"
        rows = []
        for key in sorted(before.keys() | after.keys()):
            old, new = before.get(key, _MISSING), after.get(key, _MISSING)
            if old == new:
                rows.append(format_html("<tr><td></td><th>{}</th><td>{}</td><td>{}</td></tr>", key, _shown(old),
                                        _shown(new)))
            else:
                rows.append(format_html('<tr class="changed"><td>changed</td><th>{}</th><td><del>{}</del></td>'
                                        "<td><ins>{}</ins></td></tr>", key, _shown(old), _shown(new)))
        body = format_html_join("", "{}", ((row,) for row in rows))
        return format_html('<table class="audit-diff"><thead><tr><th></th><th>field</th><th>before</th>'
                           "<th>after</th></tr></thead><tbody>{}</tbody></table>", body)
