"""Statements of agents' writes over REST (issue 10). Transactional tests: the statements are the
production ones (no test-case savepoints). An idempotent write is one transaction; the services it
calls join it without savepoints of their own (`write_transaction`, modeloman/transactions.py), which
would each cost two round trips (SAVEPOINT, RELEASE) and a subtransaction."""

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.gateway.auth import authenticate_token
from apps.policy import ledger
from apps.policy.models import Reservation
from tests.factories import issue_key, make_cap, make_price

pytestmark = pytest.mark.django_db(transaction=True)


def attempt(**overrides):
    return {"model": "gpt-test", "prompt_name": "summarize", "prompt_version": "v3", "success": True,
            "input_tokens": 1000, "output_tokens": 500, "latency_ms": 820, **overrides}


def statements_of(send) -> tuple[Any, list[str]]:
    """`send()`'s answer and the first word of each statement it ran (COPY is not captured)."""
    with CaptureQueriesContext(connection) as captured:
        response = send()
    return response, [query["sql"].split(None, 1)[0] for query in captured.captured_queries]


def one_transaction_without_savepoints(statements: list[str]) -> bool:
    """(A cold process's cache lookups come before the BEGIN.)"""
    return statements.count("BEGIN") == statements.count("COMMIT") == 1 and statements[-1] == "COMMIT" \
        and not {"SAVEPOINT", "RELEASE", "ROLLBACK"} & set(statements)


@pytest.fixture
def token(api_client, bearer) -> str:
    """An agent key, after one attempt written with it: this process's first COPY has been made (it
    finds out in a savepoint whether the server takes COPY, once per process: apps/telemetry/bulk.py)."""
    token = issue_key(scopes=["telemetry:write", "tasks:write"]).token
    assert api_client.post("/api/v1/attempts", attempt(), format="json", **bearer(token)).status_code == 201
    return token


def test_a_batch_that_settles_a_reservation_is_one_transaction_without_savepoints(api_client, bearer, token):
    make_price("gpt-test")
    make_cap(limit="100")
    admission = ledger.admit(principal=authenticate_token(token), model="gpt-test", estimated_input_tokens=1000,
                             estimated_output_tokens=500)
    batch = {"attempts": [attempt(reservation_id=str(admission.reservation_id)), *[attempt() for _ in range(9)]]}

    response, statements = statements_of(lambda: api_client.post("/api/v1/attempts", batch, format="json",
                                                                 **bearer(token)))

    assert response.status_code == 201 and response.json()["accepted"] == 10
    assert Reservation.objects.get(id=str(admission.reservation_id)).state == "settled"
    assert one_transaction_without_savepoints(statements), statements


def test_a_runs_writes_are_one_transaction_each_without_savepoints(api_client, bearer, token):
    started, statements = statements_of(lambda: api_client.post("/api/v1/runs", {"task": "t"}, format="json",
                                                                **bearer(token)))
    assert started.status_code == 201 and one_transaction_without_savepoints(statements), statements
    run = started.json()["id"]
    writes = [(f"/api/v1/runs/{run}/events", {"events": [{"kind": "step"}, {"kind": "done"}]}),
              (f"/api/v1/runs/{run}/finish", {"status": "succeeded"}),
              ("/api/v1/benchmarks", {"suite": "s", "model": "gpt-test", "score": 0.5})]
    for url, body in writes:
        response, statements = statements_of(lambda url=url, body=body: api_client.post(url, body, format="json",
                                                                                         **bearer(token)))
        assert response.status_code in (200, 201), (url, response.json())
        assert one_transaction_without_savepoints(statements), (url, statements)
