"""Telemetry storage on the real TimescaleDB engine (tools/timescale).

    TIMESCALE_TESTS=1 TIMESCALE=required AUTH_CACHE_ENABLED=false \
        DATABASE_URL=postgres://postgres:postgres@127.0.0.1:<port>/postgres pytest -m timescale -p no:randomly

The engine's background scheduler never runs, so these tests run the policies' jobs
themselves (CALL run_job) — exactly what the scheduler would do.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import checks
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection
from django.urls import reverse
from django.utils import timezone

from apps.telemetry.checks import verify_timescale
from apps.telemetry.rollups import LATENCY_SUMS_SQL, latency_percentile
from apps.telemetry.timescale import timescale_enabled
from apps.telemetry.timeseries import PromptAttemptHourly
from tests.telemetry.timeseries_data import (
    RAW_COLUMNS,
    ROLLUP_COLUMNS,
    actual_hourly,
    attempt,
    benchmark,
    columns,
    count,
    expected_hourly,
    insert_attempts,
    insert_benchmarks,
    new_project_id,
    rollup_rows,
)

pytestmark = [pytest.mark.timescale, pytest.mark.django_db(transaction=True)]


def fetch(sql: str, params: list[Any] | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall()


def job(proc_name: str, relation: str) -> tuple[int, dict]:
    ((job_id, config),) = fetch("SELECT job_id, config FROM timescaledb_information.jobs "
                                "WHERE proc_name = %s AND hypertable_name = %s", [proc_name, relation])
    return job_id, json.loads(config)  # Django leaves jsonb as text


def maintenance(*args: str) -> str:
    out = io.StringIO()
    call_command("telemetry_maintenance", *args, stdout=out)
    return out.getvalue()


def test_the_engine_is_timescaledb_and_required_is_satisfied(settings):
    assert fetch("SELECT extname FROM pg_extension WHERE extname = 'timescaledb'") == [("timescaledb",)]
    assert timescale_enabled() is True
    settings.TIMESCALE = "required"
    verify_timescale()
    assert checks.run_checks(tags=[checks.Tags.database], databases=["default"]) == []


def test_raw_tables_are_compressed_hypertables_with_retention_policies(settings):
    assert fetch("SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables "
                 "WHERE hypertable_schema = current_schema() ORDER BY 1") == [
        ("benchmarks", True), ("prompt_attempts", True), ("run_events", True)]
    assert fetch("SELECT hypertable_name, column_name, time_interval FROM timescaledb_information.dimensions "
                 "WHERE hypertable_name IN ('prompt_attempts', 'run_events', 'benchmarks') ORDER BY 1") == [
        ("benchmarks", "time", dt.timedelta(days=7)), ("prompt_attempts", "time", dt.timedelta(days=1)),
        ("run_events", "time", dt.timedelta(days=1))]
    settings_rows = fetch(
        "SELECT hypertable_name, attname, segmentby_column_index, orderby_column_index, orderby_asc "
        "FROM timescaledb_information.compression_settings WHERE hypertable_schema = current_schema() "
        "ORDER BY 1, 3 NULLS LAST, 4")
    assert settings_rows == [
        ("benchmarks", "project_id", 1, None, None), ("benchmarks", "time", None, 1, False),
        ("benchmarks", "id", None, 2, True),
        ("prompt_attempts", "project_id", 1, None, None), ("prompt_attempts", "agent_id", 2, None, None),
        ("prompt_attempts", "time", None, 1, False), ("prompt_attempts", "id", None, 2, True),
        ("run_events", "run_id", 1, None, None), ("run_events", "time", None, 1, False),
        ("run_events", "id", None, 2, True)]
    for table in ("prompt_attempts", "run_events", "benchmarks"):
        assert job("policy_compression", table)[1]["compress_after"] == \
            f"{settings.TELEMETRY_COMPRESS_AFTER_DAYS} days"
        assert job("policy_retention", table)[1]["drop_after"] == f"{settings.TELEMETRY_RETENTION_DAYS} days"
        assert {name: value for name, value in columns(table).items()} == RAW_COLUMNS[table]


def test_rollups_are_continuous_aggregates_refreshed_inside_the_retained_range():
    assert fetch("SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates "
                 "WHERE view_schema = current_schema() ORDER BY 1") == [
        ("benchmarks_daily", False), ("leaderboard_attempts_daily", False), ("prompt_attempts_hourly", False)]
    for rollup, source in (("prompt_attempts_hourly", "prompt_attempts"), ("benchmarks_daily", "benchmarks"),
                           ("leaderboard_attempts_daily", "prompt_attempts")):
        assert {name: type_ for name, (type_, _) in columns(rollup).items()} == ROLLUP_COLUMNS[rollup]
        _, refresh = job("policy_refresh_continuous_aggregate", rollup)
        _, retention = job("policy_retention", source)
        ((inside,),) = fetch("SELECT %s::interval < %s::interval", [refresh["start_offset"], retention["drop_after"]])
        assert inside, (refresh, retention)


def test_multi_row_insert_and_rollup_queries():
    project = new_project_id()
    base = timezone.now().replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=3)
    rows = [attempt(base + dt.timedelta(minutes=7 * i), project_id=project, model=f"model-{i % 2}",
                    latency_ms=25 * (i + 1), success=i % 5 != 0, cost_usd=None if i == 3 else "0.001000")
            for i in range(40)]
    insert_attempts(rows)

    # Not materialized yet: real-time aggregation reads the raw rows.
    assert actual_hourly(project) == expected_hourly(rows)
    output = maintenance()
    assert "rollup prompt_attempts_hourly: refreshed from" in output
    assert actual_hourly(project) == expected_hourly(rows)
    ((schema, table),) = fetch("SELECT materialization_hypertable_schema, materialization_hypertable_name "
                               "FROM timescaledb_information.continuous_aggregates "
                               "WHERE view_name = 'prompt_attempts_hourly'")
    materialized = fetch(f'SELECT count(*) FROM "{schema}"."{table}" WHERE project_id = %s', [project])  # noqa: S608
    assert materialized == [(len(expected_hourly(rows)),)]

    # The leaderboard's shape of query: several hours summed per model, percentiles from the sums.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT model, sum(attempts)::bigint AS attempts, {LATENCY_SUMS_SQL} "  # noqa: S608
                       "FROM prompt_attempts_hourly WHERE project_id = %s GROUP BY model ORDER BY model", [project])
        names = [column.name for column in cursor.description]
        per_model = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    assert [(row["model"], row["attempts"]) for row in per_model] == [("model-0", 20), ("model-1", 20)]
    latencies = sorted(row["latency_ms"] for row in rows if row["model"] == "model-0")
    estimate = latency_percentile(per_model[0], 0.5)
    assert latencies[9] / 2 <= estimate <= latencies[10] * 2  # within a bucket of the true median
    assert sum(row.attempts for row in PromptAttemptHourly.objects.filter(project_id=project)) == 40


def test_a_late_row_into_a_compressed_chunk_is_accepted_and_rolled_up():
    project = new_project_id()
    old = timezone.now() - dt.timedelta(days=10)
    rows = [attempt(old + dt.timedelta(minutes=i), project_id=project) for i in range(5)]
    insert_attempts(rows)
    compression_job, _ = job("policy_compression", "prompt_attempts")
    with connection.cursor() as cursor:
        cursor.execute("CALL run_job(%s)", [compression_job])
    assert fetch("SELECT is_compressed FROM timescaledb_information.chunks WHERE hypertable_name = "
                 "'prompt_attempts' AND range_start <= %s AND %s < range_end", [old, old]) == [(True,)]

    late = attempt(old + dt.timedelta(minutes=30), project_id=project)
    insert_attempts([late])
    assert count("prompt_attempts", project) == 6
    with pytest.raises(IntegrityError):  # (id, time) is still unique inside the compressed chunk
        insert_attempts([{**late, "latency_ms": 1}])

    maintenance("--lookback-hours", str(11 * 24))
    assert sum(row["attempts"] for row in rollup_rows("prompt_attempts_hourly", project)) == 6


def test_aggregates_survive_retention_when_the_refresh_window_stays_inside_the_retained_range():
    project = new_project_id()
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    expired = now - dt.timedelta(days=100)  # older than the 90-day retention
    retained = now - dt.timedelta(days=50)
    insert_attempts([attempt(expired + dt.timedelta(minutes=i), project_id=project) for i in range(3)]
                    + [attempt(retained, project_id=project)])
    insert_benchmarks([benchmark(expired, project_id=project), benchmark(retained, project_id=project)])
    # The expired rows were rolled up back when they were recent...
    for rollup in ("prompt_attempts_hourly", "benchmarks_daily"):
        with connection.cursor() as cursor:
            cursor.execute("CALL refresh_continuous_aggregate(%s, %s, %s)",
                           [rollup, expired - dt.timedelta(days=2), expired + dt.timedelta(days=2)])
    # ...and the refresh policies run as the scheduler would run them.
    for rollup in ("prompt_attempts_hourly", "benchmarks_daily"):
        with connection.cursor() as cursor:
            cursor.execute("CALL run_job(%s)", [job("policy_refresh_continuous_aggregate", rollup)[0]])

    output = maintenance("--apply-retention")

    assert "retention policies run: dropped chunks" in output
    assert fetch("SELECT time FROM prompt_attempts WHERE project_id = %s", [project]) == [(retained,)]
    assert count("benchmarks", project) == 1
    for _ in range(2):  # the policies' and maintenance's refreshes never reach the dropped range
        for rollup in ("prompt_attempts_hourly", "benchmarks_daily"):
            with connection.cursor() as cursor:
                cursor.execute("CALL run_job(%s)", [job("policy_refresh_continuous_aggregate", rollup)[0]])
        maintenance("--full")
        assert [row["attempts"] for row in rollup_rows("prompt_attempts_hourly", project)] == [3, 1]
        assert [row["runs"] for row in rollup_rows("benchmarks_daily", project)] == [1, 1]

    # Why the window must stay inside: a refresh that reaches the dropped range empties it.
    with connection.cursor() as cursor:
        cursor.execute("CALL refresh_continuous_aggregate('prompt_attempts_hourly', %s, %s)",
                       [expired - dt.timedelta(days=1), expired + dt.timedelta(days=1)])
    assert [row["attempts"] for row in rollup_rows("prompt_attempts_hourly", project)] == [1]


def test_data_growth_check_measures_hypertables():
    insert_attempts([attempt(timezone.now(), project_id=new_project_id())])
    out = io.StringIO()
    call_command("data_growth_check", stdout=out)
    (line,) = [line for line in out.getvalue().splitlines() if line.startswith("prompt_attempts ")]
    assert line.endswith("ok")
    with pytest.raises(CommandError, match=r"prompt_attempts \(size\)"):
        call_command("data_growth_check", "--max-size", "prompt_attempts=1kB", stdout=io.StringIO())


def test_admin_pages_read_hypertables_and_continuous_aggregates(client):
    project = new_project_id()
    insert_attempts([attempt(timezone.now() - dt.timedelta(hours=2), project_id=project)])
    maintenance()
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "correct horse battery"))
    for model_name in ("promptattempt", "runevent", "benchmark", "promptattempthourly", "benchmarkdaily"):
        response = client.get(reverse(f"admin:telemetry_{model_name}_changelist"), {"within": "7d"})
        assert response.status_code == 200, model_name
    row = PromptAttemptHourly.objects.filter(project_id=project).get()
    assert client.get(reverse("admin:telemetry_promptattempthourly_change", args=[row.pk])).status_code == 200


def test_ingest_through_the_api_writes_hypertables_and_late_rows_land_in_compressed_chunks(api_client):
    """The real endpoints on the engine: it refuses COPY FROM STDIN, so ingest falls back to
    multi-row INSERT; late attempts and events into already compressed chunks are accepted."""
    from apps.gateway.auth import authenticate_token
    from apps.telemetry import bulk
    from tests.factories import issue_key, make_price

    make_price("gpt-test", input_per_mtok="1", output_per_mtok="2")
    token = issue_key(scopes=["telemetry:write", "tasks:write"]).token
    principal = authenticate_token(token)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    old = timezone.now() - dt.timedelta(days=10)
    assert principal.project_id is not None
    insert_attempts([attempt(old + dt.timedelta(minutes=i), project_id=principal.project_id) for i in range(3)])
    compression_job, _ = job("policy_compression", "prompt_attempts")
    with connection.cursor() as cursor:
        cursor.execute("CALL run_job(%s)", [compression_job])

    batch = {"attempts": [{"model": "gpt-test", "success": True, "input_tokens": 1000, "output_tokens": 500,
                           "latency_ms": 100 + i, "time": (old + dt.timedelta(minutes=30 + i)).isoformat()}
                          for i in range(5)] + [{"model": "gpt-test", "success": False, "input_tokens": 1,
                                                 "output_tokens": 0, "latency_ms": 5, "attributes": {"a": "b"}}]}
    response = api_client.post("/api/v1/attempts", batch, format="json", HTTP_IDEMPOTENCY_KEY="ts-1", **headers)
    assert response.status_code == 201, response.content
    assert bulk._copy_supported is False
    assert count("prompt_attempts", principal.project_id) == 9
    assert fetch("SELECT is_compressed FROM timescaledb_information.chunks WHERE hypertable_name = "
                 "'prompt_attempts' AND range_start <= %s AND %s < range_end", [old, old]) == [(True,)]
    since = old + dt.timedelta(minutes=20)  # the API's rows, not the three inserted above
    assert fetch("SELECT sum(cost_usd), count(*) FILTER (WHERE attributes = '{\"a\": \"b\"}') FROM prompt_attempts "
                 "WHERE project_id = %s AND time > %s", [principal.project_id, since]) == [
        (Decimal("0.010001"), 1)]  # 5 x $0.002 + $0.000001

    run = api_client.post("/api/v1/runs", {"task": "t"}, format="json", HTTP_IDEMPOTENCY_KEY="ts-2", **headers)
    events_url = f"/api/v1/runs/{run.json()['id']}/events"
    old_events = {"events": [{"kind": "step", "time": (old + dt.timedelta(minutes=i)).isoformat()} for i in range(3)]}
    first = api_client.post(events_url, old_events, format="json", HTTP_IDEMPOTENCY_KEY="ts-3", **headers)
    events_compression_job, _ = job("policy_compression", "run_events")
    with connection.cursor() as cursor:
        cursor.execute("CALL run_job(%s)", [events_compression_job])
    assert fetch("SELECT is_compressed FROM timescaledb_information.chunks WHERE hypertable_name = "
                 "'run_events' AND range_start <= %s AND %s < range_end", [old, old]) == [(True,)]
    late_event = {"kind": "late", "time": (old + dt.timedelta(minutes=45)).isoformat()}
    late = api_client.post(events_url, late_event, format="json", HTTP_IDEMPOTENCY_KEY="ts-4", **headers)
    bench = api_client.post("/api/v1/benchmarks", {"suite": "s", "model": "gpt-test", "score": 0.5}, format="json",
                            HTTP_IDEMPOTENCY_KEY="ts-5", **headers)
    assert (run.status_code, first.status_code, late.status_code, bench.status_code) == (201, 201, 201, 201)
    assert fetch("SELECT (SELECT count(*) FROM run_events WHERE run_id = %s), "
                 "(SELECT count(*) FROM benchmarks WHERE agent_id = %s AND suite = 's' AND score = 0.5)",
                 [run.json()["id"], principal.agent_id]) == [(4, 1)]


def test_the_reservation_index_builds_beside_compressed_chunks():
    insert_attempts([attempt(timezone.now() - dt.timedelta(days=10), project_id=new_project_id())])
    compression_job, _ = job("policy_compression", "prompt_attempts")
    with connection.cursor() as cursor:
        cursor.execute("CALL run_job(%s)", [compression_job])
    assert fetch("SELECT count(*) > 0 FROM timescaledb_information.chunks "
                 "WHERE hypertable_name = 'prompt_attempts' AND is_compressed") == [(True,)]
    try:
        call_command("migrate", "telemetry", "0003", verbosity=0)
        assert fetch("SELECT to_regclass('prompt_attempts_reservation_idx')") == [(None,)]
    finally:
        call_command("migrate", "telemetry", verbosity=0)
    index = "prompt_attempts_reservation_idx"
    assert fetch("SELECT to_regclass(%s)::text", [index]) == [(index,)]
