import datetime as dt
import uuid
from decimal import Decimal

import pytest
from django.db import connection

from apps.keys.authentication import authenticate_token
from apps.policy import services as policy_services
from apps.policy.models import Reservation, UsageLedger
from apps.telemetry import services
from apps.telemetry.models import Run
from apps.telemetry.validation import RunEventIn
from tests.factories import AgentFactory, issue_key, make_cap, make_price

pytestmark = pytest.mark.django_db
ATTEMPTS = "/api/v1/attempts"


def attempt(**overrides):
    return {"model": "gpt-test", "prompt_name": "summarize", "prompt_version": "v3", "success": True,
            "input_tokens": 1000, "output_tokens": 500, "latency_ms": 820, **overrides}


def count(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608  # fixed test table names
        return cursor.fetchone()[0]


def rows(table: str, columns: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns} FROM {table} ORDER BY time")  # noqa: S608  # fixed test strings
        return cursor.fetchall()


@pytest.fixture
def agent_token():
    return issue_key(scopes=["telemetry:write", "tasks:write"]).token


def test_single_attempt_is_stored_with_server_cost_beside_the_reported_one(api_client, bearer, agent_token):
    make_price("gpt-test", input_per_mtok="3", output_per_mtok="15")
    response = api_client.post(ATTEMPTS, attempt(reported_cost_usd="0.5", attributes={"region": "eu"}),
                               format="json", **bearer(agent_token))
    assert response.status_code == 201 and response.json()["accepted"] == 1
    stored = rows("prompt_attempts", "model, prompt_name, prompt_version, success, cost_usd, reported_cost_usd, "
                                     "attributes->>'region', latency_ms")
    assert stored == [("gpt-test", "summarize", "v3", True, Decimal("0.0105"), Decimal("0.5"), "eu", 820)]


def test_a_batch_goes_in_with_copy(api_client, bearer, agent_token):
    make_price("gpt-test")
    batch = {"attempts": [attempt(success=i % 2 == 0) for i in range(250)]}
    response = api_client.post(ATTEMPTS, batch, format="json", **bearer(agent_token))
    assert response.status_code == 201 and response.json()["accepted"] == 250
    assert count("prompt_attempts") == 250
    assert services._copy_supported is True


def test_a_bad_item_fails_the_whole_batch_and_names_its_index_and_field(api_client, bearer, agent_token):
    make_price("gpt-test")
    make_cap(limit="100")
    batch = {"attempts": [attempt(), attempt(), attempt(input_tokens=-5), attempt()]}
    response = api_client.post(ATTEMPTS, batch, format="json", **bearer(agent_token))
    body = response.json()
    assert (response.status_code, body["code"], body["index"], body["field"]) == (400, "invalid_item", 2,
                                                                                  "input_tokens")
    assert "item 2" in body["detail"]
    assert count("prompt_attempts") == 0 and not UsageLedger.objects.exists()


NOW = dt.datetime.now(dt.UTC)


@pytest.mark.parametrize("overrides, field", [
    ({"input_tokens": -1}, "input_tokens"),
    ({"output_tokens": 10**12}, "output_tokens"),
    ({"input_tokens": "10"}, "input_tokens"),
    ({"input_tokens": True}, "input_tokens"),
    ({"latency_ms": 3_600_001}, "latency_ms"),
    ({"success": "yes"}, "success"),
    ({"model": "bad model name"}, "model"),
    ({"model": "x" * 129}, "model"),
    ({"prompt_name": "<script>"}, "prompt_name"),
    ({"error_code": "Bad Code!"}, "error_code"),
    ({"attributes": {f"k{i}": "v" for i in range(33)}}, "attributes"),
    ({"attributes": {"blob": "x" * 5000}}, "attributes"),
    ({"attributes": {"nested": {"a": 1}}}, "attributes"),
    ({"attributes": {"bad key!": "v"}}, "attributes"),
    ({"attributes": ["a"]}, "attributes"),
    ({"time": (NOW + dt.timedelta(hours=1)).isoformat()}, "time"),
    ({"time": (NOW - dt.timedelta(days=400)).isoformat()}, "time"),
    ({"time": "2026-01-01T00:00:00"}, "time"),
    ({"time": "yesterday"}, "time"),
    ({"reported_cost_usd": -1}, "reported_cost_usd"),
    ({"reported_cost_usd": "NaN"}, "reported_cost_usd"),
    ({"run_id": "not-a-uuid"}, "run_id"),
    ({"run_id": str(uuid.uuid4())}, "run_id"),
    ({"reservation_id": str(uuid.uuid4())}, "reservation_id"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_attempt_fields_are_400_with_a_stable_code_and_nothing_written(api_client, bearer, agent_token,
                                                                         overrides, field):
    make_price("gpt-test")
    response = api_client.post(ATTEMPTS, attempt(**overrides), format="json", **bearer(agent_token))
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert (response.json()["code"], response.json()["field"]) == ("invalid_item", field)
    assert count("prompt_attempts") == 0


@pytest.mark.parametrize("body", [{"attempts": []}, {"attempts": [attempt()] * 1001}, {"attempts": "x"},
                                  {"attempts": [attempt()], "extra": 1}, [attempt()], "text"])
def test_malformed_batches_are_400(api_client, bearer, agent_token, body):
    response = api_client.post(ATTEMPTS, body, format="json", **bearer(agent_token))
    assert response.status_code == 400
    assert response.json()["code"] in {"invalid_batch", "invalid_item"}
    assert count("prompt_attempts") == 0


def test_an_attempt_settles_its_reservation_and_unreserved_attempts_still_count(api_client, bearer, agent_token):
    make_price("gpt-test", input_per_mtok="10")
    cap = make_cap(limit="100")
    principal = authenticate_token(agent_token)
    admission = policy_services.admit(principal=principal, model="gpt-test", estimated_input_tokens=1_000_000,
                                      estimated_output_tokens=0)
    settled = attempt(input_tokens=500_000, output_tokens=0, reservation_id=str(admission.reservation_id))
    unreserved = attempt(input_tokens=200_000, output_tokens=0)
    response = api_client.post(ATTEMPTS, {"attempts": [settled, unreserved]}, format="json", **bearer(agent_token))
    assert response.status_code == 201
    assert Reservation.objects.get(id=admission.reservation_id).state == "settled"
    ledger = UsageLedger.objects.get(cap=cap)
    assert (ledger.used, ledger.reserved) == (Decimal(7), Decimal(0))  # $5 settled + $2 unreserved

    replayed_reservation = api_client.post(ATTEMPTS, settled, format="json", **bearer(agent_token))
    assert replayed_reservation.status_code == 400
    assert replayed_reservation.json()["field"] == "reservation_id"


def test_attempts_roll_up_into_their_run_and_foreign_runs_are_refused(api_client, bearer, agent_token):
    make_price("gpt-test", input_per_mtok="1", output_per_mtok="1")
    principal = authenticate_token(agent_token)
    run = services.run_start(principal=principal, task="t", metadata={})
    foreign = services.run_start(principal=authenticate_token(issue_key(AgentFactory()).token), task="t",
                                 metadata={})
    items = [attempt(run_id=str(run.pk), input_tokens=1_000_000, output_tokens=0)] * 3
    assert api_client.post(ATTEMPTS, {"attempts": items}, format="json", **bearer(agent_token)).status_code == 201
    run.refresh_from_db()
    assert (run.attempts, run.input_tokens, run.cost_usd) == (3, 3_000_000, Decimal(3))
    refused = api_client.post(ATTEMPTS, attempt(run_id=str(foreign.pk)), format="json", **bearer(agent_token))
    assert (refused.status_code, refused.json()["field"]) == (400, "run_id")
    assert Run.objects.get(pk=foreign.pk).attempts == 0


def test_run_events_single_and_batch(api_client, bearer, agent_token):
    principal = authenticate_token(agent_token)
    run = services.run_start(principal=principal, task="t", metadata={})
    url = f"/api/v1/runs/{run.pk}/events"
    one = api_client.post(url, {"kind": "tool_call", "message": "search", "attributes": {"tool": "web"}},
                          format="json", **bearer(agent_token))
    many = api_client.post(url, {"events": [{"kind": "step"}] * 10}, format="json", **bearer(agent_token))
    assert (one.status_code, many.status_code) == (201, 201)
    assert count("run_events") == 11
    bad = api_client.post(url, {"events": [{"kind": "step"}, {"kind": ""}]}, format="json", **bearer(agent_token))
    assert (bad.status_code, bad.json()["index"], bad.json()["field"]) == (400, 1, "kind")
    other = issue_key(AgentFactory(), scopes=["telemetry:write"]).token
    assert api_client.post(url, {"kind": "x"}, format="json", **bearer(other)).status_code == 404
    assert count("run_events") == 11


def test_recording_an_event_takes_the_same_queries_with_1_or_1000_runs(agent_token, django_assert_num_queries):
    principal = authenticate_token(agent_token)
    runs = [services.run_start(principal=principal, task="t", metadata={}) for _ in range(3)]

    def record_event(run: Run) -> None:
        services.run_events_record(principal=principal, run_id=run.pk, items=[RunEventIn(kind="step")], batch=False)

    record_event(runs[0])  # warm the process caches
    # SAVEPOINT, the run by primary key, SAVEPOINT and RELEASE around the COPY (not counted), RELEASE
    with django_assert_num_queries(5):
        record_event(runs[1])
    Run.objects.bulk_create([Run(agent_id=principal.agent_id, project_id=principal.project_id, task="x")
                             for _ in range(1000)])
    with django_assert_num_queries(5):
        record_event(runs[2])
    assert count("run_events") == 3


def test_benchmarks_are_recorded_and_validated(api_client, bearer, agent_token):
    good = {"suite": "mmlu-mini", "model": "gpt-test", "score": 0.82, "passed": 82, "total": 100}
    assert api_client.post("/api/v1/benchmarks", good, format="json", **bearer(agent_token)).status_code == 201
    assert rows("benchmarks", "suite, score, passed, total") == [("mmlu-mini", 0.82, 82, 100)]
    for bad in ({**good, "score": "high"}, {**good, "passed": 101}, {**good, "suite": ""}, {**good, "x": 1}):
        response = api_client.post("/api/v1/benchmarks", bad, format="json", **bearer(agent_token))
        assert (response.status_code, response.json()["code"]) == (400, "invalid_item")
    assert count("benchmarks") == 1


def test_telemetry_writes_need_the_telemetry_scope(api_client, bearer):
    token = issue_key(scopes=["tasks:write"]).token
    response = api_client.post(ATTEMPTS, attempt(), format="json", **bearer(token))
    assert (response.status_code, response.json()["code"]) == (403, "missing_scope")


def test_export_streams_state_without_digests(client):
    import json

    from apps.keys.models import ApiKey

    issued = issue_key(scopes=["admin:read"])
    make_cap(limit="5")
    response = client.get("/api/v1/export", HTTP_AUTHORIZATION=f"Bearer {issued.token}")
    assert response.status_code == 200 and response.streaming
    body = b"".join(response.streaming_content).decode()
    data = json.loads(body)
    assert [k["key_id"] for k in data["api_keys"]] == [issued.api_key.key_id]
    assert ApiKey.objects.get().digest not in body and "digest" not in data["api_keys"][0]
    assert len(data["caps"]) == 1 and set(data) >= {"projects", "agents", "policies", "runs"}
    denied = client.get("/api/v1/export", HTTP_AUTHORIZATION=f"Bearer {issue_key(scopes=['tasks:write']).token}")
    assert denied.status_code == 403
