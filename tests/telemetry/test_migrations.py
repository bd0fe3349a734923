"""The telemetry migrations on plain PostgreSQL: the column contract, reversibility, and
TIMESCALE=required refusing to migrate or start without the extension."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from apps.telemetry.checks import verify_timescale
from tests.processes import BASE_DIR, database_url
from tests.telemetry.timeseries_data import RAW_COLUMNS, ROLLUP_COLUMNS, columns, index_names

RELATIONS = ("prompt_attempts", "run_events", "benchmarks", "prompt_attempts_hourly", "benchmarks_daily")


def existing(*names: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relname = ANY(%s) AND relnamespace = "
                       "current_schema()::regnamespace", [list(names)])
        return {name for (name,) in cursor.fetchall()}


@pytest.mark.django_db
@pytest.mark.parametrize("table", RAW_COLUMNS)
def test_raw_tables_have_the_contract_columns(table):
    assert columns(table) == RAW_COLUMNS[table]


@pytest.mark.django_db
@pytest.mark.parametrize("rollup", ROLLUP_COLUMNS)
def test_rollups_are_plain_tables_with_the_same_columns_as_the_continuous_aggregates(rollup):
    assert {name: type_ for name, (type_, _) in columns(rollup).items()} == ROLLUP_COLUMNS[rollup]


@pytest.mark.django_db
def test_indexes_for_time_project_agent_run_and_reservation_lookups():
    assert index_names("prompt_attempts") >= {"prompt_attempts_pkey", "prompt_attempts_time_idx",
                                              "prompt_attempts_project_time_idx", "prompt_attempts_agent_time_idx",
                                              "prompt_attempts_run_time_idx", "prompt_attempts_reservation_idx"}
    assert index_names("run_events") >= {"run_events_pkey", "run_events_run_time_idx", "run_events_time_idx"}
    assert "benchmarks_pkey" in index_names("benchmarks")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_indexdef('prompt_attempts_run_time_idx'::regclass)")
        assert cursor.fetchone()[0].endswith("WHERE (run_id IS NOT NULL)")
        cursor.execute("SELECT pg_get_indexdef('prompt_attempts_reservation_idx'::regclass)")
        assert cursor.fetchone()[0].endswith("WHERE (reservation_id IS NOT NULL)")


@pytest.mark.django_db(transaction=True)
def test_migrations_run_backward_to_zero_and_forward_again():
    try:
        call_command("migrate", "telemetry", "0001", verbosity=0)
        assert existing(*RELATIONS, "telemetry_rollup_watermark") == set()
        assert existing("telemetry_run") == {"telemetry_run"}

        call_command("migrate", "telemetry", "zero", verbosity=0)
        assert existing("telemetry_run", "telemetry_idempotencyrecord") == set()
    finally:
        call_command("migrate", verbosity=0)
    assert existing(*RELATIONS) == set(RELATIONS)
    assert columns("prompt_attempts") == RAW_COLUMNS["prompt_attempts"]


@pytest.mark.django_db(transaction=True)
def test_timescale_required_without_the_extension_refuses_to_migrate(monkeypatch):
    call_command("migrate", "telemetry", "0001", verbosity=0)
    monkeypatch.setenv("TIMESCALE", "required")
    try:
        with pytest.raises(ImproperlyConfigured, match="TIMESCALE=required, but the timescaledb extension is not"):
            call_command("migrate", "telemetry", verbosity=0)
        assert existing("prompt_attempts") == set()  # the failed migration left nothing behind
    finally:
        monkeypatch.setenv("TIMESCALE", "auto")
        call_command("migrate", verbosity=0)
    assert existing("prompt_attempts") == {"prompt_attempts"}


@pytest.mark.django_db(transaction=True)
def test_an_unknown_timescale_mode_is_refused(monkeypatch):
    call_command("migrate", "telemetry", "0001", verbosity=0)
    monkeypatch.setenv("TIMESCALE", "maybe")
    try:
        with pytest.raises(ImproperlyConfigured, match="TIMESCALE must be auto, required or off"):
            call_command("migrate", "telemetry", verbosity=0)
    finally:
        monkeypatch.delenv("TIMESCALE")
        call_command("migrate", verbosity=0)


@pytest.mark.django_db
def test_startup_check_refuses_required_without_the_extension(settings):
    verify_timescale()  # TIMESCALE=auto: nothing to check

    settings.TIMESCALE = "required"
    with pytest.raises(ImproperlyConfigured, match="timescaledb extension is not installed"):
        verify_timescale()
    errors = checks.run_checks(tags=[checks.Tags.database], databases=["default"])
    assert [error.id for error in errors] == ["telemetry.E001"]


@pytest.mark.django_db(transaction=True)
def test_wsgi_refuses_to_start_when_timescale_is_required_but_missing():
    def import_wsgi(mode: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "modeloman.settings.test",
               "TIMESCALE": mode}
        return subprocess.run([sys.executable, "-c", "import modeloman.wsgi"], cwd=BASE_DIR, env=env,
                              capture_output=True, text=True, timeout=60)

    refused = import_wsgi("required")
    assert refused.returncode != 0
    assert "ImproperlyConfigured: TIMESCALE=required, but the timescaledb extension is not installed" in refused.stderr
    assert import_wsgi("auto").returncode == 0
