"""Database timeouts (issue 13): a request whose statement runs past the statement timeout, or whose
lock is not granted within the lock timeout, is a 503 problem, not a 500; the connection is fine after."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest
from django.db import connection

from apps.telemetry.models import Run
from tests.factories import issue_key
from tests.processes import BASE_DIR, database_url

RUNS = "/api/v1/runs"


@pytest.fixture
def session_timeouts():
    """Set this connection's timeouts for one test (the request runs on it), then restore the
    connection's own (RESET goes back to the startup options)."""

    def set_timeouts(*, statement: str, lock: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false)",
                           [statement, lock])

    yield set_timeouts
    with connection.cursor() as cursor:
        cursor.execute("RESET statement_timeout; RESET lock_timeout")


# Which timeout fires: lock_timeout (LockNotAvailable) or statement_timeout (QueryCanceled).
@pytest.mark.parametrize(("statement", "lock"), [("0", "300ms"), ("300ms", "0")], ids=["lock", "statement"])
@pytest.mark.django_db(transaction=True)
def test_a_write_stuck_behind_a_lock_past_the_timeout_is_a_503_problem(client, session_timeouts, statement, lock):
    token = issue_key(scopes=("tasks:write",)).token
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    run_id = client.post(RUNS, {"task": "t"}, content_type="application/json", HTTP_IDEMPOTENCY_KEY="start",
                         **auth).json()["id"]
    finish = f"{RUNS}/{run_id}/finish"

    with psycopg.connect(database_url()) as holder:  # another session holds the run's row lock
        holder.execute("SELECT 1 FROM telemetry_run WHERE id = %s FOR UPDATE", [run_id])
        session_timeouts(statement=statement, lock=lock)
        response = client.post(finish, {"status": "succeeded"}, content_type="application/json",
                               HTTP_IDEMPOTENCY_KEY="finish", **auth)
        holder.rollback()

    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "database_timeout"
    assert "Traceback" not in response.content.decode() and "canceling" not in body["detail"]
    assert Run.objects.get(pk=run_id).status == "running"  # nothing written
    # The connection is usable afterwards, and the same request (same Idempotency-Key) now succeeds.
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    retried = client.post(finish, {"status": "succeeded"}, content_type="application/json",
                          HTTP_IDEMPOTENCY_KEY="finish", **auth)
    assert (retried.status_code, retried.json()["status"]) == (200, "succeeded")


def _timeouts_in(settings_module: str, command: str) -> list[str]:
    """The timeouts a fresh connection gets, in a process started as `manage.py <command>` would be."""
    code = (
        f"import sys; sys.argv = ['manage.py', {command!r}]\n"
        "import django; django.setup()\n"
        "from django.db import connection\n"
        "with connection.cursor() as c:\n"
        "    c.execute('SHOW statement_timeout'); print(c.fetchone()[0])\n"
        "    c.execute('SHOW lock_timeout'); print(c.fetchone()[0])\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings_module, "DATABASE_URL": database_url(),
           "KEY_PEPPER": "x" * 48}
    for name in ("DB_STATEMENT_TIMEOUT_MS", "DB_LOCK_TIMEOUT_MS", "DB_MAINTENANCE_STATEMENT_TIMEOUT_MS"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True,
                            timeout=60, check=True)
    return result.stdout.split()


@pytest.mark.django_db
def test_the_application_role_gets_short_timeouts_and_maintenance_commands_a_longer_statement_timeout(settings):
    assert _timeouts_in("modeloman.settings.local", "runserver") == ["5s", "2s"]
    assert _timeouts_in("modeloman.settings.local", "telemetry_maintenance") == ["30min", "2s"]
    assert {"telemetry_maintenance", "data_growth_check", "verify_audit", "seed_demo", "migrate"} <= set(
        settings.MAINTENANCE_COMMANDS)
