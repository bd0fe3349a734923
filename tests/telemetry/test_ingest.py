import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.gateway.auth import authenticate_token
from apps.policy import ledger as policy_ledger
from apps.policy import services as policy_services
from apps.policy.models import Reservation, UsageLedger
from apps.telemetry import bulk, services
from apps.telemetry.models import Run
from apps.telemetry.validation import RunEventIn
from tests.factories import TEST_ACTOR, AgentFactory, issue_key, make_cap, make_price

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
    assert bulk._copy_supported is True


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
    ({"reported_cost_usd": 0.5}, "reported_cost_usd"),  # amounts are decimal strings
    ({"reported_cost_usd": "0.5000001"}, "reported_cost_usd"),
    ({"latency_ms": 1.5}, "latency_ms"),
    ({"attributes": {"note": "a\u0000b"}}, "attributes"),
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


def test_an_attempt_naming_an_unknown_run_is_404_and_writes_nothing(api_client, bearer, agent_token):
    response = api_client.post(ATTEMPTS, {"attempts": [attempt(), attempt(run_id=str(uuid.uuid4()))]}, format="json",
                               **bearer(agent_token))
    body = response.json()
    assert (response.status_code, body["code"], body["index"], body["field"]) == (404, "run_not_found", 1, "run_id")
    assert count("prompt_attempts") == 0


def test_whole_numbers_written_with_a_fraction_are_integers(api_client, bearer, agent_token):
    # JSON Schema's `integer` includes 5.0 and 1e3; a generated client may send them.
    response = api_client.post(ATTEMPTS, {"attempts": [attempt(input_tokens=5.0, output_tokens=1e3, latency_ms=7)]},
                               format="json", **bearer(agent_token))
    assert response.status_code == 201, response.json()
    assert rows("prompt_attempts", "input_tokens, output_tokens, latency_ms") == [(5, 1000, 7)]


@pytest.mark.parametrize("body", [{"attempts": []}, {"attempts": [attempt()] * 1001}, {"attempts": "x"},
                                  {"attempts": [attempt()], "extra": 1}, [attempt()], "text"])
def test_malformed_batches_are_400(api_client, bearer, agent_token, body):
    response = api_client.post(ATTEMPTS, body, format="json", **bearer(agent_token))
    assert response.status_code == 400
    assert response.json()["code"] in {"invalid_batch", "invalid_item"}
    assert count("prompt_attempts") == 0


@pytest.mark.parametrize("overrides, field", [
    ({"model": "gpt-test\n"}, "model"),  # `$` would match before a final newline; the patterns use \Z
    ({"prompt_version": "v1\n"}, "prompt_version"),
    ({"attributes": {"note": "a\x00b"}}, "attributes"),  # jsonb refuses NUL
    ({"x" * 10_000: 1}, "x" * 64),  # an unknown field's name, cut to 64 characters
])
def test_edge_case_fields_are_refused_and_the_detail_stays_bounded(api_client, bearer, agent_token, overrides,
                                                                   field):
    response = api_client.post(ATTEMPTS, attempt(**overrides), format="json", **bearer(agent_token))
    body = response.json()
    assert (response.status_code, body["code"], body["field"]) == (400, "invalid_item", field)
    assert len(body["detail"]) < 300
    assert count("prompt_attempts") == 0


@pytest.mark.parametrize("raw", [b"", b'{"model": "gpt-test"', b"\xff\xfe", b'{"model": "\\ud800"}', b"{} trailing",
                                 b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # deeper than any decoder goes
                                 b'{"attempts": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"],
                         ids=["empty", "truncated", "not-utf8", "lone-surrogate", "trailing", "deep", "deep-in-batch"])
def test_bodies_that_are_not_json_are_400_malformed_request(api_client, bearer, agent_token, raw):
    response = api_client.post(ATTEMPTS, raw, content_type="application/json", **bearer(agent_token))
    assert (response.status_code, response.json()["code"]) == (400, "malformed_request")
    assert count("prompt_attempts") == 0


@pytest.mark.parametrize("url", ["/api/v1/attempts", "/api/v1/benchmarks", "/api/v1/runs/{run}/events"])
def test_an_empty_body_is_400_on_every_telemetry_endpoint(api_client, bearer, agent_token, url):
    run = services.run_start(principal=authenticate_token(agent_token), task="t", metadata={})
    response = api_client.post(url.format(run=run.pk), b"", content_type="application/json", **bearer(agent_token))
    assert (response.status_code, response.json()["code"]) == (400, "malformed_request")


def test_telemetry_must_be_sent_as_json(api_client, bearer, agent_token):
    response = api_client.post(ATTEMPTS, "model=gpt-test", content_type="application/x-www-form-urlencoded",
                               **bearer(agent_token))
    assert (response.status_code, response.json()["code"]) == (415, "unsupported_media_type")
    assert count("prompt_attempts") == 0


def test_a_bad_last_item_aborts_the_streamed_copy_and_the_connection_stays_usable(api_client, bearer,
                                                                                    agent_token):
    make_price("gpt-test")
    items = [attempt(latency_ms=i) for i in range(999)] + [attempt(success="maybe")]
    response = api_client.post(ATTEMPTS, {"attempts": items}, format="json", **bearer(agent_token))
    assert (response.status_code, response.json()["index"], response.json()["field"]) == (400, 999, "success")
    assert count("prompt_attempts") == 0
    retried = api_client.post(ATTEMPTS, {"attempts": items[:999]}, format="json", **bearer(agent_token))
    assert retried.status_code == 201 and count("prompt_attempts") == 999


def test_insert_fallback_stores_the_same_rows_as_copy(api_client, bearer, agent_token, monkeypatch):
    make_price("gpt-test", input_per_mtok="3", output_per_mtok="15")
    run = services.run_start(principal=authenticate_token(agent_token), task="t", metadata={})
    items = [attempt(time=(NOW - dt.timedelta(seconds=i)).isoformat(), run_id=str(run.pk), error_code="rate_limit",
                     reported_cost_usd="0.25", attributes={"i": i, "ok": True, "tag": "é"}) for i in range(3)]
    columns = ("time, project_id, agent_id, run_id, model, prompt_name, prompt_version, success, error_code, "
               "input_tokens, output_tokens, latency_ms, cost_usd, reported_cost_usd, attributes")

    copied = api_client.post(ATTEMPTS, {"attempts": items}, format="json", **bearer(agent_token))
    assert copied.status_code == 201 and bulk._copy_supported is True
    by_copy = rows("prompt_attempts", columns)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM prompt_attempts")
    monkeypatch.setattr(bulk, "_copy_supported", False)
    inserted = api_client.post(ATTEMPTS, {"attempts": items}, format="json", **bearer(agent_token))
    assert inserted.status_code == 201
    assert rows("prompt_attempts", columns) == by_copy
    assert json.loads(by_copy[0][-1]) == {"i": 2, "ok": True, "tag": "é"} and by_copy[0][12] == Decimal("0.0105")


def test_the_largest_valid_batch_fits_and_a_larger_body_is_413(api_client, bearer, agent_token):
    make_price("gpt-test")
    fat = attempt(prompt_name="p" * 128, prompt_version="v" * 128,
                  attributes={f"key{k:02d}": "x" * 110 for k in range(32)})  # just under 4 KB of attributes
    largest = {"attempts": [fat] * 1000}
    response = api_client.post(ATTEMPTS, largest, format="json", **bearer(agent_token))
    assert response.status_code == 201 and count("prompt_attempts") == 1000
    too_big = api_client.post(ATTEMPTS, b"[" + b" " * 9 * 1024 * 1024 + b"]", content_type="application/json",
                              **bearer(agent_token))
    assert (too_big.status_code, too_big["Content-Type"], too_big.json()["code"]) == (
        413, "application/problem+json", "payload_too_large")


def test_attempt_ids_are_uuid7_in_item_order(api_client, bearer, agent_token):
    make_price("gpt-test")
    batch = {"attempts": [attempt(latency_ms=i) for i in range(50)]}
    response = api_client.post(ATTEMPTS, batch, format="json", **bearer(agent_token))
    assert response.json() == {"accepted": 50}
    stored = rows("prompt_attempts", "id, latency_ms")
    assert {row[0].version for row in stored} == {7} and len({row[0] for row in stored}) == 50
    assert [latency for _, latency in sorted(stored)] == list(range(50))  # id order is item order


def test_a_requests_cap_counts_every_attempt_of_a_batch(api_client, bearer, agent_token):
    make_price("gpt-test")
    cap = make_cap(metric="requests", window="day", limit="1000")
    response = api_client.post(ATTEMPTS, {"attempts": [attempt()] * 25}, format="json", **bearer(agent_token))
    assert response.status_code == 201
    assert UsageLedger.objects.get(cap=cap).used == Decimal(25)


def test_an_attempt_settles_its_reservation_and_unreserved_attempts_still_count(api_client, bearer, agent_token):
    make_price("gpt-test", input_per_mtok="10")
    cap = make_cap(limit="100")
    principal = authenticate_token(agent_token)
    admission = policy_ledger.admit(principal=principal, model="gpt-test", estimated_input_tokens=1_000_000,
                                      estimated_output_tokens=0)
    settled = attempt(input_tokens=500_000, output_tokens=0, reservation_id=str(admission.reservation_id))
    unreserved = attempt(input_tokens=200_000, output_tokens=0)
    response = api_client.post(ATTEMPTS, {"attempts": [settled, unreserved]}, format="json", **bearer(agent_token))
    assert response.status_code == 201
    assert admission.reservation_id is not None
    assert Reservation.objects.get(id=admission.reservation_id).state == "settled"
    ledger = UsageLedger.objects.get(cap=cap)
    assert (ledger.used, ledger.reserved) == (Decimal(7), Decimal(0))  # $5 settled + $2 unreserved

    replayed_reservation = api_client.post(ATTEMPTS, settled, format="json", **bearer(agent_token))
    assert replayed_reservation.status_code == 409
    assert replayed_reservation.json()["field"] == "reservation_id"


def test_attempts_roll_up_into_their_run_and_foreign_runs_are_refused(api_client, bearer, agent_token):
    make_price("gpt-test", input_per_mtok="1", output_per_mtok="1")
    principal = authenticate_token(agent_token)
    run = services.run_start(principal=principal, task="t", metadata={})
    foreign = services.run_start(principal=authenticate_token(issue_key(AgentFactory.create()).token), task="t",
                                 metadata={})
    items = [attempt(run_id=str(run.pk), input_tokens=1_000_000, output_tokens=0)] * 3
    assert api_client.post(ATTEMPTS, {"attempts": items}, format="json", **bearer(agent_token)).status_code == 201
    run.refresh_from_db()
    assert (run.attempts, run.input_tokens, run.cost_usd) == (3, 3_000_000, Decimal(3))
    refused = api_client.post(ATTEMPTS, attempt(run_id=str(foreign.pk)), format="json", **bearer(agent_token))
    assert (refused.status_code, refused.json()["field"]) == (404, "run_id")  # another agent's: not found
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
    other = issue_key(AgentFactory.create(), scopes=["telemetry:write"]).token
    assert api_client.post(url, {"kind": "x"}, format="json", **bearer(other)).status_code == 404
    assert count("run_events") == 11


def test_recording_an_event_takes_the_same_queries_with_1_or_1000_runs(agent_token, django_assert_num_queries):
    principal = authenticate_token(agent_token)
    runs = [services.run_start(principal=principal, task="t", metadata={}) for _ in range(3)]

    def record_event(run: Run) -> None:
        services.run_events_record(principal=principal, run_id=run.pk, items=[RunEventIn(kind="step")], batch=False)

    record_event(runs[0])  # warm the process caches
    # The run by primary key (and the COPY, which is not counted). Inside the test's transaction, as
    # inside an idempotent write's, the service joins it: no SAVEPOINT, no RELEASE.
    with django_assert_num_queries(1):
        record_event(runs[1])
    assert principal.agent_id is not None and principal.project_id is not None
    Run.objects.bulk_create([Run(agent_id=principal.agent_id, project_id=principal.project_id, task="x")
                             for _ in range(1000)])
    with django_assert_num_queries(1):
        record_event(runs[2])
    assert count("run_events") == 3


@pytest.mark.parametrize("event, field", [({"kind": "step", "message": "a\x00b"}, "message"),
                                          ({"kind": "step", "message": "m" * 4001}, "message"),
                                          ({"kind": "Step"}, "kind"), ({"kind": "step", "run_id": "x"}, "run_id")])
def test_bad_events_are_400_and_write_nothing(api_client, bearer, agent_token, event, field):
    run = services.run_start(principal=authenticate_token(agent_token), task="t", metadata={})
    response = api_client.post(f"/api/v1/runs/{run.pk}/events", {"events": [{"kind": "ok"}, event]}, format="json",
                               **bearer(agent_token))
    assert (response.status_code, response.json()["index"], response.json()["field"]) == (400, 1, field)
    assert count("run_events") == 0


@pytest.mark.parametrize("raw, field", [(b'{"suite": "s", "model": "m", "score": 1e999}', "score"),
                                        (b'{"suite": "s", "model": "m", "score": 1, "total": -1}', "total"),
                                        (b'{"benchmarks": [{"suite": "s", "model": "m", "score": 1}]}', "benchmarks")])
def test_bad_benchmarks_are_400_and_write_nothing(api_client, bearer, agent_token, raw, field):
    response = api_client.post("/api/v1/benchmarks", raw, content_type="application/json", **bearer(agent_token))
    assert (response.status_code, response.json()["code"], response.json()["field"]) == (400, "invalid_item", field)
    assert count("benchmarks") == 0


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


# --- issue 8: unpriced models, overflow, model mismatch -------------------------------------------


def ledger_state(cap):
    row = UsageLedger.objects.filter(cap=cap).first()
    return None if row is None else (row.used, row.reserved, row.overrun)


def test_an_unpriced_model_under_a_cost_cap_is_charged_the_agents_cost_and_never_silently_0(
        api_client, bearer, agent_token):
    policy_services.policy_set(actor=TEST_ACTOR, subject_type="global", allow_unpriced_models=True)
    cap = make_cap(limit="100", window="total")
    huge = attempt(model="mystery-model", input_tokens=10**9, output_tokens=10**9)

    refused = api_client.post(ATTEMPTS, {"attempts": [attempt(model="mystery-model", reported_cost_usd="1"), huge]},
                              format="json", **bearer(agent_token))
    body = refused.json()
    assert (refused.status_code, body["code"], body["index"], body["field"]) == (
        400, "cost_required_for_unpriced_model", 1, "reported_cost_usd")
    assert count("prompt_attempts") == 0 and ledger_state(cap) is None

    principal = authenticate_token(agent_token)
    admission = policy_ledger.admit(principal=principal, model="mystery-model", estimated_input_tokens=10**9,
                                      estimated_output_tokens=10**9, estimated_cost_usd=Decimal("5"))
    assert ledger_state(cap) == (Decimal(0), Decimal(5), Decimal(0))
    unreported = api_client.post(ATTEMPTS, {**huge, "reservation_id": str(admission.reservation_id)},
                                 format="json", **bearer(agent_token))
    assert (unreported.status_code, unreported.json()["code"]) == (400, "cost_required_for_unpriced_model")
    assert admission.reservation_id is not None
    assert Reservation.objects.get(id=admission.reservation_id).state == "held"

    settled = {**huge, "reservation_id": str(admission.reservation_id), "reported_cost_usd": "4"}
    unreserved = {**huge, "reported_cost_usd": "7"}
    accepted = api_client.post(ATTEMPTS, {"attempts": [settled, unreserved]}, format="json", **bearer(agent_token))
    assert accepted.status_code == 201
    assert ledger_state(cap) == (Decimal(11), Decimal(0), Decimal(0))  # the agent's $4 + $7
    assert rows("prompt_attempts", "cost_usd, reported_cost_usd") == [(None, Decimal(4)), (None, Decimal(7))]


def test_without_an_enforced_cost_cap_an_unpriced_attempt_needs_no_cost(api_client, bearer, agent_token):
    tokens = make_cap(metric="tokens", limit="10000", window="total")
    make_cap(limit="100", window="total", mode="dry_run")  # dry-run never blocks
    response = api_client.post(ATTEMPTS, attempt(model="mystery-model"), format="json", **bearer(agent_token))
    assert response.status_code == 201 and UsageLedger.objects.get(cap=tokens).used == 1500


def test_an_attempt_of_another_model_than_its_reservation_is_refused_and_writes_nothing(
        api_client, bearer, agent_token):
    make_price("model-a", input_per_mtok="1")
    make_price("model-b", input_per_mtok="1")
    cap_a = make_cap(metric="tokens", limit="10000000", window="total", model="model-a")
    cap_b = make_cap(metric="tokens", limit="10000000", window="total", model="model-b")
    principal = authenticate_token(agent_token)
    admission = policy_ledger.admit(principal=principal, model="model-a", estimated_input_tokens=1_000_000,
                                      estimated_output_tokens=0)
    before = (ledger_state(cap_a), ledger_state(cap_b))

    mismatched = attempt(model="model-b", input_tokens=5_000_000, reservation_id=str(admission.reservation_id))
    response = api_client.post(ATTEMPTS, {"attempts": [attempt(model="model-a"), mismatched]}, format="json",
                               **bearer(agent_token))
    body = response.json()
    assert (response.status_code, body["code"], body["index"], body["field"]) == (
        400, "reservation_model_mismatch", 1, "model")
    assert (ledger_state(cap_a), ledger_state(cap_b)) == before
    assert count("prompt_attempts") == 0
    assert admission.reservation_id is not None
    assert Reservation.objects.get(id=admission.reservation_id).state == "held"

    unknown = api_client.post(ATTEMPTS, attempt(model="model-a", reservation_id=str(uuid.uuid4())), format="json",
                              **bearer(agent_token))
    assert (unknown.status_code, unknown.json()["code"], unknown.json()["field"]) == (
        404, "reservation_not_found", "reservation_id")
    assert count("prompt_attempts") == 0

    matching = attempt(model="model-a", input_tokens=600_000, output_tokens=0,
                       reservation_id=str(admission.reservation_id))
    assert api_client.post(ATTEMPTS, matching, format="json", **bearer(agent_token)).status_code == 201
    assert ledger_state(cap_a) == (Decimal(600_000), Decimal(0), Decimal(0))


def test_an_attempt_of_another_run_than_its_reservation_is_refused_and_writes_nothing(
        api_client, bearer, agent_token):
    make_price("gpt-test", input_per_mtok="1")
    cap = make_cap(metric="tokens", limit="10000000", window="total")
    principal = authenticate_token(agent_token)
    admitted_for, other = (services.run_start(principal=principal, task="t", metadata={}) for _ in range(2))
    admission = policy_ledger.admit(principal=principal, model="gpt-test", estimated_input_tokens=1_000_000,
                                    estimated_output_tokens=0, run_id=admitted_for.pk)
    assert admission.reservation_id is not None
    before = ledger_state(cap)

    mismatched = attempt(run_id=str(other.pk), reservation_id=str(admission.reservation_id))
    response = api_client.post(ATTEMPTS, {"attempts": [attempt(), mismatched]}, format="json", **bearer(agent_token))
    body = response.json()
    assert (response.status_code, body["code"], body["index"], body["field"]) == (
        400, "reservation_run_mismatch", 1, "run_id")
    assert ledger_state(cap) == before
    assert count("prompt_attempts") == 0
    assert Run.objects.get(pk=other.pk).attempts == 0
    assert Reservation.objects.get(id=admission.reservation_id).state == "held"

    # Naming no run, or the admitted one, settles it.
    unnamed = attempt(input_tokens=600_000, output_tokens=0, reservation_id=str(admission.reservation_id))
    assert api_client.post(ATTEMPTS, unnamed, format="json", **bearer(agent_token)).status_code == 201
    assert ledger_state(cap) == (Decimal(600_000), Decimal(0), Decimal(0))
    second = policy_ledger.admit(principal=principal, model="gpt-test", estimated_input_tokens=1_000_000,
                                 estimated_output_tokens=0, run_id=admitted_for.pk)
    named = attempt(run_id=str(admitted_for.pk), reservation_id=str(second.reservation_id))
    assert api_client.post(ATTEMPTS, named, format="json", **bearer(agent_token)).status_code == 201
    assert Run.objects.get(pk=admitted_for.pk).attempts == 1


def test_no_sequence_of_maximal_batches_overflows_a_ledger_or_run_total(api_client, bearer, agent_token):
    """The largest values the validators admit: 1,000 attempts of 1e9 + 1e9 tokens at the highest
    price a model may have. Each batch adds 2e12 tokens of overrun to a tokens cap (numeric(20, 6)
    holds < 1e14) and 2e11 USD to its run (numeric(18, 6) holds < 1e12)."""
    from apps.policy.models import LEDGER_MAX
    from apps.telemetry.models import BIGINT_MAX, RUN_COST_MAX

    make_price("gpt-test", input_per_mtok="100000", output_per_mtok="100000")
    tokens_cap = make_cap(metric="tokens", limit="1", window="total")
    principal = authenticate_token(agent_token)
    run = services.run_start(principal=principal, task="t", metadata={})
    biggest = attempt(input_tokens=10**9, output_tokens=10**9, reported_cost_usd="1000000")
    for _ in range(51):
        response = api_client.post(ATTEMPTS, {"attempts": [biggest] * 1000}, format="json", **bearer(agent_token))
        assert response.status_code == 201, response.json()
    assert ledger_state(tokens_cap) == (Decimal(1), Decimal(0), LEDGER_MAX)

    biggest["run_id"] = str(run.pk)
    for _ in range(6):
        response = api_client.post(ATTEMPTS, {"attempts": [biggest] * 1000}, format="json", **bearer(agent_token))
        assert response.status_code == 201, response.json()
    run.refresh_from_db()
    assert (run.attempts, run.input_tokens, run.cost_usd) == (6000, 6 * 10**12, RUN_COST_MAX)

    # Totals kept in bigint saturate too (reaching them takes millions of batches: start close).
    Run.objects.filter(pk=run.pk).update(attempts=BIGINT_MAX - 10, input_tokens=BIGINT_MAX - 10)
    response = api_client.post(ATTEMPTS, {"attempts": [biggest] * 1000}, format="json", **bearer(agent_token))
    assert response.status_code == 201
    run.refresh_from_db()
    assert (run.attempts, run.input_tokens, run.output_tokens) == (BIGINT_MAX, BIGINT_MAX, 7 * 10**12)


# --- statements of agents' writes over REST (issue 10) -------------------------------------------
# Transactional tests: the statements are the production ones (no test-case savepoints). An
# idempotent write is one transaction; the services it calls join it without savepoints of their own
# (`write_transaction`, modeloman/transactions.py), which would each cost two round trips (SAVEPOINT,
# RELEASE) and a subtransaction.


def statements_of(send) -> tuple[Any, list[str]]:
    """`send()`'s answer and the first word of each statement it ran (COPY is not captured)."""
    with CaptureQueriesContext(connection) as captured:
        response = send()
    return response, [query["sql"].split(None, 1)[0] for query in captured.captured_queries]


def one_transaction_without_savepoints(statements: list[str]) -> bool:
    """(A cold process's cache lookups come before the BEGIN.)"""
    return statements.count("BEGIN") == statements.count("COMMIT") == 1 and statements[-1] == "COMMIT" \
        and not {"SAVEPOINT", "RELEASE", "ROLLBACK"} & set(statements)


def copy_probed(api_client, bearer, token: str) -> None:
    """One attempt written: this process's first COPY is made (it finds out in a savepoint whether the
    server takes COPY, once per process: apps/telemetry/bulk.py)."""
    assert api_client.post(ATTEMPTS, attempt(), format="json", **bearer(token)).status_code == 201


@pytest.mark.django_db(transaction=True)
def test_a_batch_that_settles_a_reservation_is_one_transaction_without_savepoints(api_client, bearer, agent_token):
    copy_probed(api_client, bearer, agent_token)
    make_price("gpt-test")
    make_cap(limit="100")
    admission = policy_ledger.admit(principal=authenticate_token(agent_token), model="gpt-test",
                                    estimated_input_tokens=1000, estimated_output_tokens=500)
    batch = {"attempts": [attempt(reservation_id=str(admission.reservation_id)), *[attempt() for _ in range(9)]]}

    response, statements = statements_of(lambda: api_client.post(ATTEMPTS, batch, format="json",
                                                                 **bearer(agent_token)))

    assert response.status_code == 201 and response.json()["accepted"] == 10
    assert Reservation.objects.get(id=str(admission.reservation_id)).state == "settled"
    assert one_transaction_without_savepoints(statements), statements


@pytest.mark.django_db(transaction=True)
def test_a_runs_writes_are_one_transaction_each_without_savepoints(api_client, bearer, agent_token):
    copy_probed(api_client, bearer, agent_token)
    started, statements = statements_of(lambda: api_client.post("/api/v1/runs", {"task": "t"}, format="json",
                                                                **bearer(agent_token)))
    assert started.status_code == 201 and one_transaction_without_savepoints(statements), statements
    run = started.json()["id"]
    writes = [(f"/api/v1/runs/{run}/events", {"events": [{"kind": "step"}, {"kind": "done"}]}),
              (f"/api/v1/runs/{run}/finish", {"status": "succeeded"}),
              ("/api/v1/benchmarks", {"suite": "s", "model": "gpt-test", "score": 0.5})]
    for url, body in writes:
        response, statements = statements_of(lambda url=url, body=body: api_client.post(url, body, format="json",
                                                                                         **bearer(agent_token)))
        assert response.status_code in (200, 201), (url, response.json())
        assert one_transaction_without_savepoints(statements), (url, statements)
