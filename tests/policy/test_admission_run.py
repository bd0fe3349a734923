"""An admission may name the run it is for (SPEC §5: "optional run id"), over both transports
against real servers: the reservation and a recorded decision keep it, whichever path answers; a
run that is not the caller's own is 404 `run_not_found` before any rule is looked at, and leaves
nothing written."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import pytest

from apps.gateway.access import Op
from apps.gateway.models import IdempotencyRecord
from apps.policy import services
from apps.policy.models import AdmissionDecision, Reservation, UsageLedger
from apps.telemetry.models import Run
from tests.factories import TEST_ACTOR, AgentFactory, issue_key, make_cap
from tests.gateway.transports import Rest

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"model": "gpt-test", "estimated_input_tokens": 100000, "estimated_output_tokens": 0}  # $1 at $10/Mtok
SOME_UUID = "5f0c3e2a-9b1d-4c7e-8a6f-2d4b1e9c7a30"


def start_run(door, token) -> str:
    started = door.call(Op.START_RUN, token, {"task": "triage"}, idempotency_key=uuid.uuid4().hex)
    assert started.ok, started
    return started.data["id"]


def wait_for_kill_switch(door, token) -> None:
    """Until the server denies this agent for its kill switch (it hears of it within a second)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if door.call(Op.ADMIT, token, BODY).data["reasons"] == ["kill_switch"]:
            return
        time.sleep(0.05)
    raise AssertionError("the kill switch did not reach the server")


def test_the_reservation_records_the_run_and_a_retry_replays_it(door, priced_agent):
    _, token = priced_agent
    make_cap(limit="10")
    run_id = start_run(door, token)

    first = door.call(Op.ADMIT, token, {**BODY, "run_id": run_id}, idempotency_key="for-the-run")
    assert first.ok and first.data["allowed"] is True
    reservation = Reservation.objects.get()
    assert str(reservation.id) == first.data["reservation_id"]
    assert str(reservation.run_id) == run_id

    again = door.call(Op.ADMIT, token, {**BODY, "run_id": run_id}, idempotency_key="for-the-run")
    assert again.replayed and again.data == first.data
    assert Reservation.objects.count() == 1


def test_the_full_path_records_the_run_too(door, priced_agent):
    """A dry-run cap that would deny sends the admission down the full path (`ledger.admit`)."""
    _, token = priced_agent
    make_cap(limit="10")
    loud = make_cap(limit="0.5", mode="dry_run")
    run_id = start_run(door, token)

    answer = door.call(Op.ADMIT, token, {**BODY, "run_id": run_id}, idempotency_key="loud")
    assert answer.ok and answer.data["dry_run_would_deny"] == [f"cap_exceeded:{loud.pk}"]
    assert str(Reservation.objects.get(id=answer.data["reservation_id"]).run_id) == run_id
    assert str(AdmissionDecision.objects.get().run_id) == run_id


def test_a_denial_records_the_run(door, priced_agent):
    _, token = priced_agent
    cap = make_cap(limit="0.5")
    run_id = start_run(door, token)
    denied = door.call(Op.ADMIT, token, {**BODY, "run_id": run_id}, idempotency_key="denied")
    assert denied.ok and denied.data["reasons"] == [f"cap_exceeded:{cap.pk}"]
    decision = AdmissionDecision.objects.get()
    assert (decision.allowed, str(decision.run_id)) == (False, run_id)


def test_without_a_run_the_reservation_has_none(door, priced_agent):
    _, token = priced_agent
    make_cap(limit="10")
    assert door.call(Op.ADMIT, token, BODY, idempotency_key="no-run").data["allowed"] is True
    assert Reservation.objects.get().run_id is None


@pytest.mark.parametrize("whose", ["another agent's", "nobody's"])
@pytest.mark.parametrize("path", ["one statement", "a kill switch engaged"])
def test_a_run_that_is_not_the_callers_is_not_found_and_nothing_is_written(door, priced_agent, whose, path):
    agent, token = priced_agent
    cap = make_cap(limit="10")
    if whose == "nobody's":
        run_id = str(uuid.uuid4())
    else:
        run_id = start_run(door, issue_key(agent=AgentFactory.create(), scopes=["tasks:write"]).token)
    if path == "a kill switch engaged":  # the run is checked before any rule: no decision is recorded
        services.policy_set(actor=TEST_ACTOR, subject_type="agent", agent=agent, kill_switch=True, reason="runaway")
        wait_for_kill_switch(door, token)

    decisions = AdmissionDecision.objects.count()

    refused = door.call(Op.ADMIT, token, {**BODY, "run_id": run_id}, idempotency_key="not-mine")
    assert (refused.status, refused.code) == ("NOT_FOUND", "run_not_found")
    assert not Reservation.objects.exists()
    assert not UsageLedger.objects.filter(cap=cap, reserved__gt=Decimal(0)).exists()
    assert AdmissionDecision.objects.count() == decisions
    assert not IdempotencyRecord.objects.filter(key="not-mine").exists()  # a failure leaves no claim
    assert Run.objects.filter(pk=run_id).count() == (whose == "another agent's")


@pytest.mark.parametrize("run_id", ["not-a-uuid", "", "0" * 32, "{" + SOME_UUID + "}", "urn:uuid:" + SOME_UUID])
def test_a_run_id_that_is_no_uuid_is_invalid(door, priced_agent, run_id):
    _, token = priced_agent
    make_cap(limit="10")
    refused = door.call(Op.ADMIT, token, {**BODY, "run_id": run_id}, idempotency_key="malformed")
    assert (refused.status, refused.code) == ("INVALID_ARGUMENT", "validation_error")
    assert not Reservation.objects.exists()


def test_a_null_run_id_over_rest_is_no_run(priced_agent):
    _, token = priced_agent
    make_cap(limit="10")
    answer = Rest().call(Op.ADMIT, token, {**BODY, "run_id": None}, idempotency_key="null-run")
    assert answer.ok and answer.data["allowed"] is True
    assert Reservation.objects.get().run_id is None
