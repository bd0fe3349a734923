"""Connection health checks (modeloman/db/base.py): a connection idle for longer than
DB_HEALTH_CHECK_IDLE_SECONDS is checked before a request uses it, one busy more recently is not;
a connection the server dropped is a 503 problem at worst, never a 500, and is replaced after.

Django's test client leaves out the request cycle's `close_old_connections` (its request_started and
request_finished handler); `as_request()` runs it where a server would, before and after each
request."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import grpc
import psycopg
import pytest
from django.db import close_old_connections, connection, connections

from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2 as pb
from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2_grpc as pb_grpc
from apps.telemetry.models import Run
from tests.factories import issue_key
from tests.gateway.test_grpc_server import channel, error_code
from tests.processes import database_url, grpcserve

RUNS = "/api/v1/runs"
T = TypeVar("T")


def as_request(call: Callable[[], T]) -> T:
    """`call()` with the request cycle's ends around it, as a server runs a request."""
    close_old_connections()
    try:
        return call()
    finally:
        close_old_connections()


def _drop_connection() -> None:
    """The server ends this thread's database session (as a restart or an idle timeout would)."""
    pid = connection.connection.info.backend_pid
    with psycopg.connect(database_url(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])


def _select_one() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone()[0]


def _query() -> int:
    """One request that runs one query."""
    return as_request(_select_one)


@pytest.fixture
def health_checks(monkeypatch):
    """The outcome of every health check the backend runs (a real `SELECT 1` each)."""
    calls: list[bool] = []
    wrapper_class = type(connections["default"])
    real = wrapper_class.is_usable

    def counted(self):
        usable = real(self)
        calls.append(usable)
        return usable

    monkeypatch.setattr(wrapper_class, "is_usable", counted)
    return calls


@pytest.mark.django_db(transaction=True)
def test_a_connection_busy_within_the_idle_window_is_not_checked(settings, health_checks):
    settings.DB_HEALTH_CHECK_IDLE_SECONDS = 60
    assert _query() == 1  # checked or not, depending on what ran before
    health_checks.clear()
    assert [_query() for _ in range(3)] == [1, 1, 1]
    assert health_checks == []


@pytest.mark.django_db(transaction=True)
def test_a_connection_idle_past_the_window_is_checked_and_replaced_when_dropped(settings, health_checks):
    settings.DB_HEALTH_CHECK_IDLE_SECONDS = 0.2
    assert _query() == 1
    health_checks.clear()
    old_pid = connection.connection.info.backend_pid
    _drop_connection()
    time.sleep(0.3)  # idle past the window

    assert _query() == 1  # checked, found dead, replaced before the query ran

    assert health_checks == [False]
    assert connection.connection.info.backend_pid != old_pid


@pytest.mark.django_db(transaction=True)
def test_a_connection_dropped_while_busy_fails_one_request_with_a_503_problem(client, settings):
    settings.DB_HEALTH_CHECK_IDLE_SECONDS = 60
    auth = {"HTTP_AUTHORIZATION": f"Bearer {issue_key(scopes=('tasks:write',)).token}"}
    run_id = as_request(lambda: client.post(RUNS, {"task": "t"}, content_type="application/json",
                                            HTTP_IDEMPOTENCY_KEY="start", **auth)).json()["id"]
    _drop_connection()

    failed = as_request(lambda: client.get(f"{RUNS}/{run_id}", **auth))

    assert failed.status_code == 503
    assert failed["Content-Type"] == "application/problem+json"
    assert failed["Retry-After"] == "1"
    assert failed.json()["code"] == "database_unavailable"
    assert "Traceback" not in failed.content.decode() and "terminat" not in failed.json()["detail"]
    # The failed request's end closed the connection; the next request opens a new one.
    assert client.get(f"{RUNS}/{run_id}", **auth).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_over_grpc_a_database_restart_costs_at_most_one_unavailable_call_per_thread():
    """Every session of a running `grpcserve` is ended, as a database restart would: each worker
    thread's next call is OK (a new connection) or UNAVAILABLE `database_unavailable` (its connection
    was busy less than DB_HEALTH_CHECK_IDLE_SECONDS ago, so not checked); never INTERNAL, and it heals."""
    workers = 4
    metadata = [("authorization", f"Bearer {issue_key(scopes=('tasks:write',)).token}")]
    with grpcserve(env={"GRPC_MAX_WORKERS": str(workers), "DB_HEALTH_CHECK_IDLE_SECONDS": "60"}) as (_, address), \
            channel(address) as ch:
        stub = pb_grpc.ControlPlaneStub(ch)
        run_id = stub.StartRun(pb.StartRunRequest(task="t"), metadata=[*metadata, ("idempotency-key", "start")]).id

        def get_run() -> str:
            try:
                stub.GetRun(pb.GetRunRequest(run_id=run_id), metadata=metadata, timeout=5)
            except grpc.RpcError as error:
                return f"{error.code().name} {error_code(error)}"
            return "OK"

        assert [get_run() for _ in range(workers)] == ["OK"] * workers
        with psycopg.connect(database_url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        connection.close()  # this test's own session was among them

        outcomes = [get_run() for _ in range(3 * workers)]

    assert set(outcomes) <= {"OK", "UNAVAILABLE database_unavailable"}, outcomes
    assert outcomes.count("UNAVAILABLE database_unavailable") <= workers
    assert outcomes[-workers:] == ["OK"] * workers


@pytest.mark.django_db(transaction=True)
def test_a_write_on_a_dropped_connection_is_a_503_and_its_retry_writes_once(client, settings):
    settings.DB_HEALTH_CHECK_IDLE_SECONDS = 60
    auth = {"HTTP_AUTHORIZATION": f"Bearer {issue_key(scopes=('tasks:write',)).token}"}

    def start_run():
        return as_request(lambda: client.post(RUNS, {"task": "t"}, content_type="application/json",
                                              HTTP_IDEMPOTENCY_KEY="once", **auth))

    assert _query() == 1
    runs_before = Run.objects.count()
    _drop_connection()

    failed = start_run()
    retried = start_run()

    assert (failed.status_code, failed.json()["code"]) == (503, "database_unavailable")
    assert retried.status_code == 201 and "Idempotent-Replayed" not in retried  # nothing of the first was kept
    assert Run.objects.count() == runs_before + 1
    assert start_run()["Idempotent-Replayed"] == "true"
