"""The telemetry migrations forward and backward on the real TimescaleDB engine."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from apps.telemetry.checks import verify_timescale
from apps.telemetry.rollups import timescale_enabled

pytestmark = [pytest.mark.timescale, pytest.mark.django_db(transaction=True)]

OUR_RELATIONS = ["prompt_attempts", "run_events", "benchmarks", "prompt_attempts_hourly", "benchmarks_daily",
                 "leaderboard_attempts_daily"]


def timescale_objects() -> dict[str, list]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT hypertable_name FROM timescaledb_information.hypertables "
                       "WHERE hypertable_schema = current_schema() ORDER BY 1")
        hypertables = [name for (name,) in cursor.fetchall()]
        cursor.execute("SELECT view_name FROM timescaledb_information.continuous_aggregates "
                       "WHERE view_schema = current_schema() ORDER BY 1")
        aggregates = [name for (name,) in cursor.fetchall()]
        cursor.execute("SELECT proc_name, hypertable_name FROM timescaledb_information.jobs "
                       "WHERE hypertable_name = ANY(%s) ORDER BY 2, 1", [OUR_RELATIONS])
        jobs = cursor.fetchall()
    return {"hypertables": hypertables, "aggregates": aggregates, "jobs": jobs}


def test_migrations_run_backward_to_zero_and_forward_again():
    built = timescale_objects()
    assert built["hypertables"] == ["benchmarks", "prompt_attempts", "run_events"]
    assert built["aggregates"] == ["benchmarks_daily", "leaderboard_attempts_daily", "prompt_attempts_hourly"]
    assert len(built["jobs"]) == 9  # compression + retention x 3, refresh x 3 (one from apps/leaderboard)
    try:
        call_command("migrate", "telemetry", "0002", verbosity=0)
        assert timescale_objects()["aggregates"] == []
        call_command("migrate", "telemetry", "zero", verbosity=0)
        assert timescale_objects() == {"hypertables": [], "aggregates": [], "jobs": []}
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('telemetry_run')")
            assert cursor.fetchone() == (None,)
    finally:
        call_command("migrate", verbosity=0)
    rebuilt = timescale_objects()
    assert rebuilt == built


def test_timescale_off_builds_plain_tables_which_required_then_refuses(monkeypatch, settings):
    call_command("migrate", "telemetry", "0001", verbosity=0)
    try:
        monkeypatch.setenv("TIMESCALE", "off")
        call_command("migrate", "telemetry", verbosity=0)
        assert timescale_objects() == {"hypertables": [], "aggregates": [], "jobs": []}
        assert timescale_enabled() is False
        settings.TIMESCALE = "required"
        with pytest.raises(ImproperlyConfigured, match="prompt_attempts is a plain table"):
            verify_timescale()
    finally:
        call_command("migrate", "telemetry", "0001", verbosity=0)
        monkeypatch.setenv("TIMESCALE", "required")
        call_command("migrate", verbosity=0)
    assert timescale_objects()["hypertables"] == ["benchmarks", "prompt_attempts", "run_events"]
