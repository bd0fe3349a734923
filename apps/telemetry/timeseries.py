"""Unmanaged models over the raw-SQL telemetry relations (migrations 0002 and 0003).

The tables' real keys are (id, time) — a hypertable needs time in every unique index — and
the rollups' keys are their group columns. Django's admin cannot use composite keys, so each
model declares the single `id` column as its primary key: a random UUID for raw rows, a
deterministic UUID of the group key for rollup rows. Project and agent are foreign keys
without database constraints (hypertables and continuous aggregates have none), so the
admin can filter and show names; `DO_NOTHING` keeps deletes from scanning these tables.

Writes go through apps.telemetry.services (COPY / multi-row INSERT), never through save().
"""

from __future__ import annotations

from django.db import models

from apps.keys.models import Agent, Project


def _project() -> models.ForeignKey:
    return models.ForeignKey(Project, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")


def _agent() -> models.ForeignKey:
    return models.ForeignKey(Agent, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")


class PromptAttempt(models.Model):
    id = models.UUIDField(primary_key=True)
    time = models.DateTimeField()
    project = _project()
    agent = _agent()
    run_id = models.UUIDField(null=True, blank=True)
    reservation_id = models.UUIDField(null=True, blank=True)
    model = models.TextField()
    prompt_name = models.TextField(default="", blank=True)
    prompt_version = models.TextField(default="", blank=True)
    success = models.BooleanField()
    error_code = models.TextField(default="", blank=True)
    input_tokens = models.BigIntegerField()
    output_tokens = models.BigIntegerField()
    latency_ms = models.IntegerField()
    cost_usd = models.DecimalField(max_digits=18, decimal_places=6, null=True, blank=True)  # server-computed
    reported_cost_usd = models.DecimalField(max_digits=18, decimal_places=6, null=True, blank=True)  # agent's
    attributes = models.JSONField(default=dict, blank=True)

    class Meta:
        managed = False
        db_table = "prompt_attempts"

    def __str__(self) -> str:
        return f"{self.model} at {self.time:%Y-%m-%d %H:%M:%S}"


class RunEvent(models.Model):
    id = models.UUIDField(primary_key=True)
    time = models.DateTimeField()
    run_id = models.UUIDField()
    project = _project()
    agent = _agent()
    kind = models.TextField()
    message = models.TextField(default="", blank=True)
    attributes = models.JSONField(default=dict, blank=True)

    class Meta:
        managed = False
        db_table = "run_events"

    def __str__(self) -> str:
        return f"{self.kind} at {self.time:%Y-%m-%d %H:%M:%S}"


class Benchmark(models.Model):
    id = models.UUIDField(primary_key=True)
    time = models.DateTimeField()
    project = _project()
    agent = _agent()
    suite = models.TextField()
    model = models.TextField()
    prompt_name = models.TextField(default="", blank=True)
    prompt_version = models.TextField(default="", blank=True)
    score = models.FloatField()
    passed = models.IntegerField(null=True, blank=True)
    total = models.IntegerField(null=True, blank=True)
    attributes = models.JSONField(default=dict, blank=True)

    class Meta:
        managed = False
        db_table = "benchmarks"

    def __str__(self) -> str:
        return f"{self.suite} / {self.model}: {self.score}"


class PromptAttemptHourly(models.Model):
    """One hour × project × model × prompt: counts, sums and a cumulative latency histogram."""

    id = models.UUIDField(primary_key=True)
    bucket = models.DateTimeField()
    project = _project()
    model = models.TextField()
    prompt_name = models.TextField()
    prompt_version = models.TextField()
    attempts = models.BigIntegerField()
    successes = models.BigIntegerField()
    priced_attempts = models.BigIntegerField()  # attempts with a server-computed cost
    cost_usd = models.DecimalField(max_digits=24, decimal_places=6, null=True)  # NULL: none priced
    input_tokens = models.BigIntegerField()
    output_tokens = models.BigIntegerField()
    latency_ms_sum = models.BigIntegerField()
    # Cumulative latency histogram (apps/telemetry/rollups.py): attempts with latency_ms <= N.
    lat_le_50 = models.BigIntegerField()
    lat_le_100 = models.BigIntegerField()
    lat_le_200 = models.BigIntegerField()
    lat_le_400 = models.BigIntegerField()
    lat_le_800 = models.BigIntegerField()
    lat_le_1600 = models.BigIntegerField()
    lat_le_3200 = models.BigIntegerField()
    lat_le_6400 = models.BigIntegerField()
    lat_le_12800 = models.BigIntegerField()
    lat_le_25600 = models.BigIntegerField()
    lat_le_51200 = models.BigIntegerField()
    lat_gt_51200 = models.BigIntegerField()  # slower than the last bound

    class Meta:
        managed = False
        db_table = "prompt_attempts_hourly"
        verbose_name = verbose_name_plural = "prompt attempts (hourly)"

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%d %H:00} {self.model} {self.prompt_name}@{self.prompt_version}"


class BenchmarkDaily(models.Model):
    """One day × project × suite × model × prompt."""

    id = models.UUIDField(primary_key=True)
    day = models.DateTimeField()
    project = _project()
    suite = models.TextField()
    model = models.TextField()
    prompt_name = models.TextField()
    prompt_version = models.TextField()
    runs = models.BigIntegerField()
    score_sum = models.FloatField()
    score_avg = models.FloatField()
    score_min = models.FloatField()
    score_max = models.FloatField()
    passed = models.BigIntegerField(null=True)
    total = models.BigIntegerField(null=True)

    class Meta:
        managed = False
        db_table = "benchmarks_daily"
        verbose_name = verbose_name_plural = "benchmarks (daily)"

    def __str__(self) -> str:
        return f"{self.day:%Y-%m-%d} {self.suite} / {self.model}"
