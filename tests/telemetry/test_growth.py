"""data_growth_check: a table per big table; exit status 1 when any is over a limit."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from tests.processes import BASE_DIR, database_url
from tests.telemetry.timeseries_data import attempt, insert_attempts, new_project_id

pytestmark = pytest.mark.django_db

TABLES = ("prompt_attempts", "run_events", "benchmarks", "audit_auditevent", "telemetry_idempotencyrecord",
          "policy_admissiondecision", "policy_reservation", "policy_usageledger", "telemetry_run")


def growth_check(*args: str) -> str:
    out = io.StringIO()
    call_command("data_growth_check", *args, stdout=out)
    return out.getvalue()


def test_under_the_limits_prints_every_table_and_passes():
    insert_attempts([attempt(timezone.now(), project_id=new_project_id()) for _ in range(3)])

    output = growth_check()

    lines = output.splitlines()
    assert [line.split()[0] for line in lines[1:]] == list(TABLES)
    assert lines[1].split()[1] == "3"  # small tables are counted exactly
    assert all(line.endswith("ok") for line in lines[1:])


def test_over_a_row_limit_fails_naming_the_table():
    insert_attempts([attempt(timezone.now(), project_id=new_project_id()) for _ in range(3)])

    with pytest.raises(CommandError, match=r"over the limit: prompt_attempts \(rows\)$"):
        growth_check("--max-rows", "prompt_attempts=2")
    growth_check("--max-rows", "prompt_attempts=3")  # at the limit is fine


def test_limits_come_from_the_environment_too(settings):
    settings.DATA_GROWTH_MAX_SIZE = "benchmarks=1kB"
    with pytest.raises(CommandError, match=r"benchmarks \(size\)"):
        growth_check()
    growth_check("--max-size", "benchmarks=1GB")  # an option overrides the environment


def test_bad_limits_are_refused():
    with pytest.raises(CommandError, match="not a size"):
        growth_check("--max-size", "lots")
    with pytest.raises(CommandError, match="unknown table"):
        growth_check("--max-rows", "nope=1")


@pytest.mark.django_db(transaction=True)
def test_the_command_exits_non_zero_when_over():
    def run(*args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "modeloman.settings.test"}
        return subprocess.run([sys.executable, "manage.py", "data_growth_check", *args], cwd=BASE_DIR, env=env,
                              capture_output=True, text=True, timeout=60)

    over = run("--max-size", "1kB")  # every table has at least one 8 kB page
    assert over.returncode == 1
    assert "over the limit: prompt_attempts (size)" in over.stderr
    assert run().returncode == 0
