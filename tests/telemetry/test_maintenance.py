"""telemetry_maintenance on plain PostgreSQL: rollups, retention, reaping, concurrency."""

from __future__ import annotations

import datetime as dt
import io
import threading
import uuid

import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.utils import timezone

from apps.gateway.auth import authenticate_token
from apps.gateway.models import IdempotencyRecord
from apps.policy import ledger
from apps.policy.models import Reservation
from apps.telemetry.rollups import latency_percentile, timescale_enabled
from apps.telemetry.timeseries import BenchmarkDaily, PromptAttemptHourly
from tests.factories import issue_key, make_cap, make_price
from tests.telemetry.timeseries_data import (
    actual_hourly,
    attempt,
    benchmark,
    count,
    event,
    expected_hourly,
    insert_attempts,
    insert_benchmarks,
    insert_events,
    new_project_id,
    rollup_rows,
)

pytestmark = pytest.mark.django_db


def maintenance(*args: str) -> str:
    out = io.StringIO()
    call_command("telemetry_maintenance", *args, stdout=out)
    return out.getvalue()


def hour(hours_ago: int, minute: int = 0) -> dt.datetime:
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    return now - dt.timedelta(hours=hours_ago) + dt.timedelta(minutes=minute)


def test_this_database_is_plain_postgresql():
    assert timescale_enabled() is False


def test_refresh_rolls_up_attempts_per_hour_model_and_prompt():
    project = new_project_id()
    rows = [
        attempt(hour(2, 5), project_id=project, latency_ms=40),
        attempt(hour(2, 10), project_id=project, latency_ms=150, success=False, cost_usd=None),
        attempt(hour(2, 59), project_id=project, latency_ms=70_000),
        attempt(hour(2, 30), project_id=project, model="model-b", latency_ms=900),
        attempt(hour(2, 31), project_id=project, prompt_version="v2", latency_ms=900, cost_usd="0.250000"),
        attempt(hour(1, 0), project_id=project, latency_ms=3000, input_tokens=1000, output_tokens=2000),
    ]
    insert_attempts(rows)

    maintenance()

    assert actual_hourly(project) == expected_hourly(rows)
    first = PromptAttemptHourly.objects.get(project_id=project, bucket=hour(2), model="model-a", prompt_version="v1")
    assert (first.attempts, first.successes, first.priced_attempts) == (3, 2, 2)
    assert (first.lat_le_50, first.lat_le_200, first.lat_le_51200, first.lat_gt_51200) == (1, 2, 2, 1)
    assert latency_percentile(first, 0.5) == pytest.approx(150)  # rank 1.5: halfway through (100, 200]
    assert latency_percentile(first, 0.95) == 51200  # in the open bucket: "at least 51.2 s"


def test_refresh_rolls_up_benchmarks_per_day():
    project = new_project_id()
    day = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    insert_benchmarks([
        benchmark(day + dt.timedelta(minutes=1), project_id=project, score=0.5, passed=5, total=10),
        benchmark(day + dt.timedelta(minutes=2), project_id=project, score=0.9, passed=9, total=10),
        benchmark(day - dt.timedelta(hours=1), project_id=project, score=0.1, passed=None, total=None),
    ])

    maintenance()

    rows = rollup_rows("benchmarks_daily", project)
    assert [(row["day"], row["runs"], row["score_min"], row["score_max"], row["passed"], row["total"])
            for row in rows] == [(day - dt.timedelta(days=1), 1, 0.1, 0.1, None, None),
                                 (day, 2, 0.5, 0.9, 14, 20)]
    assert rows[1]["score_avg"] == pytest.approx(0.7)
    assert rows[1]["score_sum"] == pytest.approx(1.4)
    assert BenchmarkDaily.objects.filter(project_id=project).count() == 2


def test_running_twice_changes_nothing_and_late_rows_are_picked_up():
    project = new_project_id()
    insert_attempts([attempt(hour(3, minute), project_id=project, latency_ms=10 * minute) for minute in range(10)])
    maintenance()
    first = rollup_rows("prompt_attempts_hourly", project)

    maintenance()
    assert rollup_rows("prompt_attempts_hourly", project) == first

    late = [attempt(hour(3, 30), project_id=project, latency_ms=5)]  # within the lookback (6 h)
    insert_attempts(late)
    maintenance()
    assert rollup_rows("prompt_attempts_hourly", project)[0]["attempts"] == 11


def test_rows_later_than_the_lookback_need_a_full_refresh():
    project = new_project_id()
    insert_attempts([attempt(hour(30), project_id=project)])
    maintenance()
    insert_attempts([attempt(hour(30, 1), project_id=project)])  # 30 h late: outside the 6 h lookback

    maintenance()
    assert rollup_rows("prompt_attempts_hourly", project)[0]["attempts"] == 1

    maintenance("--full")
    assert rollup_rows("prompt_attempts_hourly", project)[0]["attempts"] == 2


def test_retention_deletes_only_rows_older_than_the_horizon_and_keeps_their_rollups(settings):
    settings.TELEMETRY_RETENTION_DAYS = 30
    project = new_project_id()
    now = timezone.now()
    run_id = uuid.uuid4()
    old = [now - dt.timedelta(days=40, minutes=minute) for minute in range(5)]
    recent = [now - dt.timedelta(days=29), now - dt.timedelta(hours=1)]
    insert_attempts([attempt(moment, project_id=project) for moment in old + recent])
    insert_events([event(moment, project_id=project, run_id=run_id) for moment in old + recent])
    insert_benchmarks([benchmark(moment, project_id=project) for moment in old + recent])

    output = maintenance("--batch-size", "2")  # several batches per table

    assert "deleted prompt_attempts 5, run_events 5, benchmarks 5" in output
    for table in ("prompt_attempts", "run_events", "benchmarks"):
        assert count(table, project) == 2
    hourly = rollup_rows("prompt_attempts_hourly", project)
    assert sum(row["attempts"] for row in hourly) == 7  # rolled up before the raw rows went
    maintenance("--full")  # a full rebuild recomputes only what still has raw rows
    assert rollup_rows("prompt_attempts_hourly", project) == hourly
    assert sum(row["runs"] for row in rollup_rows("benchmarks_daily", project)) == 7


def test_expired_idempotency_records_are_reaped_in_batches():
    now = timezone.now()
    for index in range(5):
        IdempotencyRecord.objects.create(principal="agent:1", key=f"old-{index}", operation="op", fingerprint="f",
                                         expires_at=now - dt.timedelta(minutes=1 + index))
    kept = IdempotencyRecord.objects.create(principal="agent:1", key="fresh", operation="op", fingerprint="f",
                                            expires_at=now + dt.timedelta(hours=1))

    output = maintenance("--batch-size", "2")

    assert "idempotency records: deleted 5 expired" in output
    assert list(IdempotencyRecord.objects.all()) == [kept]


def test_expired_reservations_are_released():
    issued = issue_key()
    make_price("gpt-test")
    make_cap(subject=issued.api_key.agent, limit="10")
    admission = ledger.admit(principal=authenticate_token(issued.token), model="gpt-test",
                                      estimated_input_tokens=1000, estimated_output_tokens=0)
    assert admission.reservation_id is not None
    Reservation.objects.filter(pk=admission.reservation_id).update(expires_at=timezone.now() - dt.timedelta(seconds=1))

    output = maintenance()

    assert "reservations: released 1 expired" in output
    assert Reservation.objects.get(pk=admission.reservation_id).state == Reservation.State.RELEASED


@pytest.mark.django_db(transaction=True)
def test_a_second_concurrent_run_skips():
    barrier = threading.Barrier(2)
    outputs: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            outputs.append(maintenance())
        except BaseException as error:  # noqa: BLE001  # reported by the assertions below
            errors.append(error)
        finally:
            connections.close_all()

    project = new_project_id()
    insert_attempts([attempt(hour(1), project_id=project)])  # something to refresh (committed)
    # Hold a lock the refresh needs, so whichever run gets the advisory lock first is still
    # running when the other one tries.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE prompt_attempts_hourly IN ACCESS EXCLUSIVE MODE")
        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = timezone.now() + dt.timedelta(seconds=20)
        while not outputs and not errors and timezone.now() < deadline:
            threading.Event().wait(0.05)
    for thread in threads:
        thread.join(timeout=30)

    assert not errors
    assert sorted("skipped" in output for output in outputs) == [False, True]
    assert "rollup prompt_attempts_hourly: recomputed" in next(out for out in outputs if "skipped" not in out)
    assert count("prompt_attempts_hourly", project) == 1
    with connection.cursor() as cursor:  # transactional test: nothing rolls these rows back
        cursor.execute("DELETE FROM prompt_attempts WHERE project_id = %s", [project])
        cursor.execute("DELETE FROM prompt_attempts_hourly WHERE project_id = %s", [project])
        cursor.execute("DELETE FROM telemetry_rollup_watermark")
