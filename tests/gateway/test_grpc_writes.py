"""Writes over gRPC against a real `grpcserve`: idempotency keys (SPEC §5), hostile input
(nothing written, a stable code in `error-code`), and kill switches reaching the process in 1 s."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import grpc
import pytest
from django.db import connection
from django.utils import timezone

from apps.gateway.access import OPERATIONS, AccessClass, Op
from apps.gateway.auth import authenticate_token
from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2 as pb
from apps.gateway.idempotency import _fingerprint, principal_scope
from apps.gateway.models import IdempotencyRecord
from apps.keys.models import Agent
from apps.keys.services import agent_save
from apps.policy import services as policy_services
from apps.telemetry.models import Run
from tests.factories import TEST_ACTOR, issue_key, make_cap, make_price
from tests.gateway.transports import Grpc, Rest

pytestmark = pytest.mark.django_db(transaction=True)

SCOPES = ["tasks:write", "telemetry:write", "policy:read", "policy:write"]


@pytest.fixture
def door(server):
    with grpc.insecure_channel(server) as channel:
        yield Grpc(channel)


@pytest.fixture
def token():
    return issue_key(scopes=SCOPES).token


def attempt(**fields) -> dict:
    return {"model": "gpt-test", "success": True, "input_tokens": 10, "output_tokens": 5, "latency_ms": 50, **fields}


def counts() -> tuple[int, ...]:
    """Rows of everything an agent's write could add."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT (SELECT count(*) FROM prompt_attempts), (SELECT count(*) FROM run_events),"
                       " (SELECT count(*) FROM benchmarks), (SELECT count(*) FROM telemetry_run),"
                       " (SELECT count(*) FROM policy_policycap), (SELECT count(*) FROM telemetry_idempotencyrecord)")
        return cursor.fetchone()


# --- idempotency -------------------------------------------------------------------------------------


def test_a_write_without_an_idempotency_key_is_refused_and_writes_nothing(door, token):
    before = counts()
    answer = door.call(Op.START_RUN, token, {"task": "t"}, idempotency_key=None)
    assert (answer.status, answer.code) == ("INVALID_ARGUMENT", "idempotency_key_missing")
    answer = door.call(Op.START_RUN, token, {"task": "t"}, idempotency_key="no spaces allowed")
    assert (answer.status, answer.code) == ("INVALID_ARGUMENT", "idempotency_key_malformed")
    assert counts() == before


def test_a_retry_with_the_same_key_replays_the_first_answer_without_a_second_run(door, token):
    first = door.call(Op.START_RUN, token, {"task": "t", "metadata": {"a": "1"}}, idempotency_key="run-1")
    again = door.call(Op.START_RUN, token, {"task": "t", "metadata": {"a": "1"}}, idempotency_key="run-1")
    assert first.ok and not first.replayed
    assert again.ok and again.replayed
    assert again.data == first.data
    assert Run.objects.filter(pk=first.data["id"]).count() == Run.objects.count() == 1


def test_the_same_key_for_another_request_is_refused_and_the_first_stands(door, token):
    first = door.call(Op.START_RUN, token, {"task": "t"}, idempotency_key="run-2")
    other = door.call(Op.START_RUN, token, {"task": "other"}, idempotency_key="run-2")
    assert (other.status, other.code) == ("FAILED_PRECONDITION", "idempotency_key_reused")
    assert list(Run.objects.values_list("id", "task")) == [(uuid.UUID(first.data["id"]), "t")]


def test_a_key_still_in_flight_is_aborted(door, token):
    """The first request with the key holds its claim (as a running one does) while the retry arrives."""
    request = pb.StartRunRequest(task="t")
    fingerprint = _fingerprint("StartRun", b"grpc\n" + request.SerializeToString(deterministic=True))
    IdempotencyRecord.objects.create(principal=principal_scope(authenticate_token(token)), key="run-3",
                                     operation="StartRun", fingerprint=fingerprint,
                                     expires_at=timezone.now() + dt.timedelta(hours=1))
    answer = door.call(Op.START_RUN, token, request=request, idempotency_key="run-3")
    assert (answer.status, answer.code) == ("ABORTED", "idempotency_in_flight")
    assert Run.objects.count() == 0


def test_keys_are_shared_across_transports_but_a_request_belongs_to_its_encoding(door, token):
    """One (principal, key) space for both doors, so a key can never run a write twice, even when
    a client switches transport; the fingerprint is of the request as its transport sent it (bytes),
    so the same key over the other door is `idempotency_key_reused`, not a replay
    (docs/architecture.md, "Idempotency")."""
    rest = Rest()
    first = rest.call(Op.START_RUN, token, {"task": "t"}, idempotency_key="shared-1")
    assert first.ok
    answer = door.call(Op.START_RUN, token, {"task": "t"}, idempotency_key="shared-1")
    assert (answer.status, answer.code) == ("FAILED_PRECONDITION", "idempotency_key_reused")
    first = door.call(Op.START_RUN, token, {"task": "t"}, idempotency_key="shared-2")
    answer = rest.call(Op.START_RUN, token, {"task": "t"}, idempotency_key="shared-2")
    assert (answer.status, answer.code) == ("FAILED_PRECONDITION", "idempotency_key_reused")
    assert Run.objects.count() == 2


def test_every_write_needs_a_key_and_no_read_does(door):
    issued = issue_key(scopes=[*SCOPES, "admin:read"])
    for operation in OPERATIONS.values():
        if operation.name is Op.HEALTH:
            continue
        answer = door.call(operation.name, issued.token, {}, idempotency_key=None)
        if operation.access is AccessClass.WRITE:
            assert answer.code == "idempotency_key_missing", operation.name
        else:
            assert answer.code != "idempotency_key_missing", operation.name


# --- hostile input -----------------------------------------------------------------------------------

HOSTILE = {
    "a batch over 1,000": (Op.RECORD_PROMPT_ATTEMPTS, {"attempts": [attempt()] * 1001}, "invalid_batch"),
    "an empty batch": (Op.RECORD_PROMPT_ATTEMPTS, {"attempts": []}, "invalid_batch"),
    "NUL in attributes": (Op.RECORD_PROMPT_ATTEMPTS, {"attempts": [attempt(), attempt(attributes={"k": "a\x00b"})]},
                          "invalid_item"),
    "NUL in an attribute key": (Op.RECORD_PROMPT_ATTEMPT, {"attempt": attempt(attributes={"k\x00": "v"})},
                                "invalid_item"),
    "NUL in the model": (Op.RECORD_PROMPT_ATTEMPT, {"attempt": attempt(model="gpt\x00")}, "invalid_item"),
    "NUL in run metadata": (Op.START_RUN, {"task": "t", "metadata": {"k": "\x00"}}, "validation_error"),
    "NUL in a benchmark suite": (Op.RECORD_BENCHMARK, {"benchmark": {"suite": "s\x00", "model": "m", "score": 1}},
                                "invalid_item"),
    "tokens out of range": (Op.RECORD_PROMPT_ATTEMPT, {"attempt": attempt(input_tokens=10**12)}, "invalid_item"),
    "negative latency": (Op.RECORD_PROMPT_ATTEMPTS, {"attempts": [attempt(latency_ms=-1)]}, "invalid_item"),
    "admission tokens out of range": (Op.ADMIT, {"model": "gpt-test", "estimated_input_tokens": 10**10,
                                                 "estimated_output_tokens": 1}, "validation_error"),
    "a bad decimal": (Op.RECORD_PROMPT_ATTEMPT, {"attempt": attempt(reported_cost_usd="1,5")}, "invalid_item"),
    "a negative cost": (Op.RECORD_PROMPT_ATTEMPT, {"attempt": attempt(reported_cost_usd="-1")}, "invalid_item"),
    "NaN as a cost": (Op.ADMIT, {"model": "gpt-test", "estimated_input_tokens": 1, "estimated_output_tokens": 1,
                                 "estimated_cost_usd": "NaN"}, "validation_error"),
    "too many decimal places": (Op.UPSERT_POLICY_CAP, {"subject": "agent", "metric": "cost_usd", "window": "day",
                                                       "limit": "0.0000001"}, "validation_error"),
    "a huge cap limit": (Op.UPSERT_POLICY_CAP, {"subject": "agent", "metric": "cost_usd", "window": "day",
                                                "limit": "1e30"}, "validation_error"),
    "an unknown window": (Op.UPSERT_POLICY_CAP, {"subject": "agent", "metric": "cost_usd", "window": "fortnight",
                                                 "limit": "1"}, "validation_error"),
    "a non-finite score": (Op.RECORD_BENCHMARK, {"benchmark": {"suite": "s", "model": "m", "score": "Infinity"}},
                           "invalid_item"),
    "33 attributes": (Op.RECORD_PROMPT_ATTEMPT, {"attempt": attempt(attributes={f"k{i}": "v" for i in range(33)})},
                      "invalid_item"),
    "33 metadata entries": (Op.START_RUN, {"task": "t", "metadata": {f"k{i}": "v" for i in range(33)}},
                            "validation_error"),
    "attributes over 4 KB": (Op.RECORD_PROMPT_ATTEMPT, {"attempt": attempt(attributes={"k": "x" * 5000})},
                             "invalid_item"),
    "a time far in the future": (Op.RECORD_PROMPT_ATTEMPT, {"attempt": attempt(time="2999-01-01T00:00:00Z")},
                                 "invalid_item"),
    "an unknown policy field in the mask": (Op.SET_POLICY, {"subject": "agent", "kill_switch_reason": None},
                                            "validation_error"),
    "a malformed run id": (Op.RECORD_RUN_EVENT, {"run_id": "../../etc", "events": [{"kind": "x"}]},
                           "run_not_found"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_input_is_invalid_argument_with_a_stable_code_and_writes_nothing(door, token, case):
    make_price("gpt-test")
    op, payload, code = HOSTILE[case]
    before = counts()
    answer = door.call(op, token, payload)
    expected_status = "NOT_FOUND" if code == "run_not_found" else "INVALID_ARGUMENT"
    assert (answer.status, answer.code) == (expected_status, code)
    assert counts() == before


def test_an_oversized_message_is_resource_exhausted_and_writes_nothing(door, token):
    before = counts()
    huge = {"attempts": [attempt(attributes={f"k{i}": "x" * 100 for i in range(30)})] * 400}  # > 1 MiB
    answer = door.call(Op.RECORD_PROMPT_ATTEMPTS, token, huge)
    assert answer.status == "RESOURCE_EXHAUSTED"
    assert counts() == before


def test_the_same_bad_item_gets_the_same_code_and_field_over_rest(door, token):
    payload = {"attempts": [attempt(), attempt(input_tokens=-5)]}
    over_grpc = door.call(Op.RECORD_PROMPT_ATTEMPTS, token, payload)
    over_rest = Rest().call(Op.RECORD_PROMPT_ATTEMPTS, token, payload)
    assert over_grpc.code == over_rest.code == "invalid_item"
    assert over_rest.data["index"] == 1 and over_rest.data["field"] == "input_tokens"
    assert "item 1, field `input_tokens`" in over_grpc.data
    assert over_rest.data["detail"] in over_grpc.data


@pytest.mark.parametrize(("seconds", "nanos"), [(253402300800, 0), (0, 1_000_000_000)])
def test_a_timestamp_no_time_can_hold_is_an_invalid_item_not_internal(door, token, seconds, nanos):
    """A message can carry a Timestamp no datetime holds (JSON cannot: it is no RFC 3339 text); it is
    refused as REST refuses a malformed time, naming the item and field."""
    before = counts()
    bad = pb.PromptAttempt(model="gpt-test", input_tokens=1, output_tokens=1, latency_ms=1)
    bad.time.seconds, bad.time.nanos = seconds, nanos
    request = pb.RecordPromptAttemptsRequest(attempts=[pb.PromptAttempt(model="gpt-test"), bad])
    answer = door.call(Op.RECORD_PROMPT_ATTEMPTS, token, request=request)
    assert (answer.status, answer.code) == ("INVALID_ARGUMENT", "invalid_item")
    assert "item 1, field `time`" in answer.data
    assert counts() == before


# --- propagation -------------------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["kill switch", "agent disabled"])
def test_a_change_made_elsewhere_reaches_the_running_server_within_a_second(door, change):
    make_price("gpt-test")
    issued = issue_key(scopes=SCOPES)
    agent = Agent.objects.select_related("project").get(api_keys=issued.api_key)
    make_cap(subject=agent, metric="requests", window="day", limit="1000")
    body = {"model": "gpt-test", "estimated_input_tokens": 1, "estimated_output_tokens": 1}
    for _ in range(5):  # the server has cached the key and the effective policy
        assert door.call(Op.ADMIT, issued.token, body).data["allowed"] is True

    if change == "kill switch":
        policy_services.policy_set(actor=TEST_ACTOR, subject_type="project", project=agent.project,
                                   kill_switch=True, reason="runaway")
    else:
        agent.status = Agent.Status.DISABLED
        agent_save(actor=TEST_ACTOR, agent=agent)
    start = time.monotonic()
    while True:
        answer = door.call(Op.ADMIT, issued.token, body)
        if change == "kill switch" and answer.ok and answer.data["reasons"] == ["kill_switch"]:
            break
        if change == "agent disabled" and answer.status == "UNAUTHENTICATED":
            break
        assert time.monotonic() - start < 1.0, f"{change} did not reach grpcserve within 1 s: {answer}"
        time.sleep(0.02)
