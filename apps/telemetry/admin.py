from django.contrib import admin

from apps.telemetry.models import Benchmark, PromptAttempt, Run, RunEvent
from modeloman.admin_actions import ReadOnlyModelAdmin


@admin.register(Run)
class RunAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "agent", "task", "status", "started_at", "finished_at", "attempts", "cost_usd")
    list_filter = ("status", "project")
    list_select_related = ("agent__project",)
    search_fields = ("=id", "task")


@admin.register(PromptAttempt)
class PromptAttemptAdmin(ReadOnlyModelAdmin):
    list_display = ("time", "model", "prompt_name", "prompt_version", "success", "input_tokens", "output_tokens",
                    "latency_ms", "cost_usd", "reported_cost_usd")
    list_filter = ("success",)
    search_fields = ("=model", "=prompt_name")
    ordering = ("-time",)


@admin.register(RunEvent)
class RunEventAdmin(ReadOnlyModelAdmin):
    list_display = ("time", "run_id", "kind", "message")
    search_fields = ("=run_id", "=kind")
    ordering = ("-time",)


@admin.register(Benchmark)
class BenchmarkAdmin(ReadOnlyModelAdmin):
    list_display = ("time", "suite", "model", "prompt_name", "prompt_version", "score", "passed", "total")
    search_fields = ("=suite", "=model")
    ordering = ("-time",)
