"""Read-only admin for runs and telemetry.

The telemetry tables are the biggest in the database, so no page here runs a full COUNT(*)
or a DISTINCT over them: counts stop at a bound (then the planner's estimate is shown),
filters offer fixed choices or small lookup tables, and time is filtered by recent windows
instead of a date hierarchy (whose year/month links scan the whole table).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property

from apps.telemetry.rollups import latency_percentile
from apps.telemetry.timeseries import PromptAttempt, PromptAttemptHourly
from modeloman.admin_actions import ReadOnlyModelAdmin


class BoundedCountPaginator(Paginator):
    """Counts at most `count_limit` rows exactly; beyond that, uses the planner's estimate."""

    count_limit = 10_000

    @cached_property
    def count(self) -> int:
        if not isinstance(self.object_list, QuerySet):  # the admin pages querysets; anything else is counted
            return len(self.object_list)
        queryset = self.object_list.order_by()
        counted = queryset[: self.count_limit + 1].count()
        if counted <= self.count_limit:
            return counted
        plan = json.loads(queryset.explain(format="json"))
        return max(counted, int(plan[0]["Plan"]["Plan Rows"]))


class RecentFilter(admin.SimpleListFilter):
    """Rows newer than a fixed window: an index range scan, however big the table."""

    title = "time"
    parameter_name = "within"
    field = "time"
    WINDOWS = {"1h": dt.timedelta(hours=1), "24h": dt.timedelta(days=1), "7d": dt.timedelta(days=7),
               "30d": dt.timedelta(days=30)}

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(key, f"last {key}") for key in self.WINDOWS]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        window = self.WINDOWS.get(self.value() or "")
        if window is None:
            return queryset
        return queryset.filter(**{f"{self.field}__gte": timezone.now() - window})


class RecentStartFilter(RecentFilter):
    title = "started"
    field = "started_at"


class RecentBucketFilter(RecentFilter):
    title = "bucket"
    field = "bucket"


class RecentDayFilter(RecentFilter):
    title = "day"
    field = "day"


class ModelFilter(admin.SimpleListFilter):
    """Model names seen in the last 30 days, read from the hourly rollup (not the raw table)."""

    title = "model"
    parameter_name = "model"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        since = timezone.now() - dt.timedelta(days=30)
        names = (PromptAttemptHourly.objects.filter(bucket__gte=since).order_by("model")
                 .values_list("model", flat=True).distinct()[:200])
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(model=self.value()) if self.value() else queryset


class TelemetryAdmin(ReadOnlyModelAdmin):
    """Read-only, counted within bounds, searchable by pasting a UUID (row id or run id)."""

    paginator = BoundedCountPaginator
    uuid_search_fields: tuple[str, ...] = ("id",)
    search_help_text = "Paste an id (UUID)."

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            value = uuid.UUID(term)
        except ValueError:
            return queryset.none(), False
        matches = queryset.none()
        for field in self.uuid_search_fields:
            matches |= queryset.filter(**{field: value})
        return matches, False


class RunAdmin(TelemetryAdmin):
    list_display = ("id", "task", "agent", "project", "status", "started_at", "finished_at", "attempts",
                    "input_tokens", "output_tokens", "cost_usd")
    list_filter = ("status", RecentStartFilter, "project")
    list_select_related = ("agent", "project")
    search_fields = ("id",)
    ordering = ("-started_at",)


class PromptAttemptAdmin(TelemetryAdmin):
    list_display = ("time", "project", "agent", "model", "prompt_name", "prompt_version", "success", "error_code",
                    "input_tokens", "output_tokens", "latency_ms", "cost_usd", "reported_cost_usd", "priced_by")
    list_filter = (RecentFilter, "success", ModelFilter, "project")
    list_select_related = ("project", "agent")
    search_fields = ("id",)
    search_help_text = "Paste an attempt id or a run id (UUID)."
    uuid_search_fields = ("id", "run_id", "reservation_id")
    ordering = ("-time",)

    @admin.display(description="priced by")
    def priced_by(self, attempt: PromptAttempt) -> str:
        """Whose figure the caps were charged: ours (ModelPrice), or the agent's for an unpriced model."""
        if attempt.cost_usd is not None:
            return "server"
        return "agent (unpriced model)" if attempt.reported_cost_usd is not None else "unpriced, no cost"


class RunEventAdmin(TelemetryAdmin):
    list_display = ("time", "run_id", "kind", "message", "project", "agent")
    list_filter = (RecentFilter, "project")
    list_select_related = ("project", "agent")
    search_fields = ("id",)
    search_help_text = "Paste an event id or a run id (UUID)."
    uuid_search_fields = ("id", "run_id")
    ordering = ("-time",)


class BenchmarkAdmin(TelemetryAdmin):
    list_display = ("time", "suite", "model", "prompt_name", "prompt_version", "score", "passed", "total",
                    "project", "agent")
    list_filter = (RecentFilter, "project")
    list_select_related = ("project", "agent")
    search_fields = ("id",)
    ordering = ("-time",)


class PromptAttemptHourlyAdmin(TelemetryAdmin):
    list_display = ("bucket", "project", "model", "prompt_name", "prompt_version", "attempts", "successes",
                    "cost_usd", "p50_ms", "p95_ms")
    list_filter = (RecentBucketFilter, ModelFilter, "project")
    list_select_related = ("project",)
    search_fields = ("id",)
    ordering = ("-bucket",)

    @admin.display(description="p50 ms")
    def p50_ms(self, row: PromptAttemptHourly) -> str:
        value = latency_percentile(row, 0.5)
        return "-" if value is None else f"{value:.0f}"

    @admin.display(description="p95 ms")
    def p95_ms(self, row: PromptAttemptHourly) -> str:
        value = latency_percentile(row, 0.95)
        return "-" if value is None else f"{value:.0f}"


class BenchmarkDailyAdmin(TelemetryAdmin):
    list_display = ("day", "project", "suite", "model", "prompt_name", "prompt_version", "runs", "score_avg",
                    "score_min", "score_max", "passed", "total")
    list_filter = (RecentDayFilter, "project")
    list_select_related = ("project",)
    search_fields = ("id",)
    ordering = ("-day",)
