"""Statements and round trips per admission over REST (issue 10; docs/benchmarks.md, "Where an
admission's time goes"). Transactional tests: the counts are the production ones (BEGIN and COMMIT
included, no test-case savepoints), and libpq's own trace confirms each is one round trip."""

import tempfile

import pytest
from django.db import close_old_connections, connection
from psycopg import pq

from apps.policy.models import Reservation
from modeloman.invalidation import listener
from tests.factories import AgentFactory, issue_key, make_cap, make_price

pytestmark = pytest.mark.django_db(transaction=True)
ADMISSIONS = "/api/v1/admissions"
BODY = {"model": "gpt-test", "estimated_input_tokens": 100, "estimated_output_tokens": 50}


@pytest.fixture
def agent_token():
    """An agent key with one reserved cost cap and one request cap, as bench/http_admission.py."""
    assert listener.wait_until_healthy(), "the process caches serve only while the listener is connected"
    make_price("gpt-test")
    agent = AgentFactory.create()
    token = issue_key(agent=agent, scopes=["tasks:write"]).token
    make_cap(limit="1000000")
    make_cap(subject=agent, metric="requests", window="minute", limit="1000000")
    settle_invalidations()
    return token


def settle_invalidations() -> None:
    """Reconnect this process's listener: a notification committed before its LISTEN never reaches
    it, so none sent by the set-up can empty the caches between the warm-up and the counted request."""
    listener.stop()
    assert listener.wait_until_healthy()


def admit_traced(api_client, bearer, token, body=BODY) -> tuple[int, list[str]]:
    """One admission; its status and the types of the messages this connection sent (libpq's trace)."""
    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    with tempfile.TemporaryFile("w+") as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            status = api_client.post(ADMISSIONS, body, format="json", **bearer(token)).status_code
        finally:
            pgconn.untrace()
        trace.seek(0)
        # Frontend messages: "F <length> <type> ...". Django sends each statement as one simple Query;
        # a prepared one is Bind, Describe, Execute and Sync, also one round trip.
        sent = [line.split("\t")[2] for line in trace.read().splitlines() if line.startswith("F\t")]
    return status, sent


def test_a_warm_admission_is_one_statement_and_one_round_trip(api_client, bearer, agent_token,
                                                               django_assert_num_queries):
    assert api_client.post(ADMISSIONS, BODY, format="json", **bearer(agent_token)).status_code == 200  # fills caches
    # The request cycle's end, which Django's test client leaves out: a server runs it after every
    # request, and before the next request's first query the backend decides on a health check.
    close_old_connections()
    with django_assert_num_queries(1) as captured:
        status, sent = admit_traced(api_client, bearer, agent_token)
    assert status == 200
    # Claim, reservation and stored response in one statement, so in autocommit one transaction with
    # no BEGIN or COMMIT of its own (issue 10; policy migration 0009).
    assert "policy_admit_once(" in captured.captured_queries[0]["sql"]
    # One round trip (one Sync) and no Parse: the first admission prepared the statement on this
    # connection (`prepared_cursor()`, modeloman/db/base.py); and no health check `SELECT 1` before it
    # (this connection was busy less than a second ago).
    assert sent == ["Bind", "Describe", "Execute", "Sync"]


def test_an_admission_for_a_run_is_one_statement_too(api_client, bearer, agent_token, django_assert_num_queries):
    """The run is checked (the agent's own) and recorded inside the same statement (policy migration 0012)."""
    run = api_client.post("/api/v1/runs", {"task": "t"}, format="json", **bearer(agent_token)).json()["id"]
    body = {**BODY, "run_id": run}
    assert api_client.post(ADMISSIONS, body, format="json", **bearer(agent_token)).status_code == 200
    close_old_connections()
    with django_assert_num_queries(1):
        status, sent = admit_traced(api_client, bearer, agent_token, body)
    assert status == 200
    assert sent == ["Bind", "Describe", "Execute", "Sync"]
    assert Reservation.objects.filter(run_id=run).count() == 2


def test_without_prepared_statements_the_admission_is_one_simple_query(api_client, bearer, agent_token, settings):
    # DB_PREPARED_STATEMENTS=false, for a pooler that cannot keep prepared statements.
    settings.DB_PREPARED_STATEMENTS = False
    assert api_client.post(ADMISSIONS, BODY, format="json", **bearer(agent_token)).status_code == 200
    close_old_connections()
    status, sent = admit_traced(api_client, bearer, agent_token)
    assert status == 200
    assert sent == ["Query"]


def test_a_cold_admission_adds_the_lookups_the_process_caches_answer(api_client, bearer, agent_token,
                                                                     django_assert_num_queries):
    # First request of a process (or after a NOTIFY): the key (and its coalesced last_used_at),
    # agent, policies, caps and price are read once, then served from the caches.
    with django_assert_num_queries(7) as captured:
        status, _ = admit_traced(api_client, bearer, agent_token)
    assert status == 200
    tables = " ".join(query["sql"] for query in captured.captured_queries)
    for table in ("keys_apikey", "keys_agent", "policy_policy", "policy_policycap", "policy_modelprice"):
        assert f'FROM "{table}"' in tables
