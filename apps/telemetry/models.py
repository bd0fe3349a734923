"""Runs (a Django model). The time-series tables — prompt_attempts,
run_events, benchmarks and their rollups — are created by raw SQL migrations and mapped by
the unmanaged models in `timeseries.py`."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.keys.models import Agent, Project

BIGINT_MAX = 2**63 - 1
RUN_COST_MAX = Decimal("999999999999.999999")  # the largest numeric(18, 6): where Run.cost_usd saturates


class Run(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="runs")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="runs")
    task = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Totals saturate (at BIGINT_MAX, RUN_COST_MAX) rather than overflow: apps.telemetry.services.
    attempts = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    events = models.BigIntegerField(default=0, help_text="Run events recorded (bounded by MAX_EVENTS_PER_RUN).")
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["agent"], condition=Q(status="running"), name="run_running_by_agent"),
            models.Index(fields=["project", "-started_at"], name="run_project_started"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(attempts__gte=0) & Q(input_tokens__gte=0) & Q(output_tokens__gte=0),
                                   name="run_totals_non_negative"),
        ]

    def __str__(self) -> str:
        return f"run {self.id} ({self.status})"


from apps.telemetry.timeseries import Benchmark, PromptAttempt, RunEvent  # noqa: E402, F401  # unmanaged
