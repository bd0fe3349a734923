"""Admission in one statement (issue 10; policy migration 0009), over both transports against real
servers: the common case claims, reserves and stores in one round trip, and its answer is exactly
what the ledger holds and what a retry replays; everything else (a cap that does not fit, a dry-run
cap that would deny) is handed to the full path, which records the decision as before."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.gateway.access import Op
from apps.gateway.models import IdempotencyRecord
from apps.policy.models import AdmissionDecision, Reservation, UsageLedger
from tests.concurrently import at_once
from tests.factories import make_cap
from tests.gateway.transports import Rest

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"model": "gpt-test", "estimated_input_tokens": 100000, "estimated_output_tokens": 0}  # $1 at $10/Mtok


def figures(cap_status: dict) -> tuple[Decimal, ...]:
    return tuple(Decimal(cap_status[name]) for name in ("limit", "used", "reserved", "remaining"))


def test_the_answer_is_what_the_ledger_holds_and_what_a_retry_replays(door, priced_agent):
    agent, token = priced_agent
    spend = make_cap(limit="10")
    requests = make_cap(subject=agent, metric="requests", window="minute", limit="5")
    make_cap(model="other-model", limit="1")  # does not apply to gpt-test: not in the answer

    first = door.call(Op.ADMIT, token, BODY, idempotency_key="admit-1")
    assert first.ok and not first.replayed
    assert first.data["allowed"] is True
    assert [int(c["cap_id"]) for c in first.data["caps"]] == [spend.pk, requests.pk]
    for status in first.data["caps"]:
        row = UsageLedger.objects.get(cap_id=status["cap_id"])
        assert figures(status) == (row.limit_snapshot, row.used, row.reserved,
                                   row.limit_snapshot - row.used - row.reserved)
    assert figures(first.data["caps"][0]) == (Decimal(10), Decimal(0), Decimal(1), Decimal(9))
    assert figures(first.data["caps"][1]) == (Decimal(5), Decimal(0), Decimal(1), Decimal(4))
    reservation = Reservation.objects.get()
    assert str(reservation.id) == first.data["reservation_id"]
    assert reservation.estimated_cost_usd == Decimal(1) and reservation.state == Reservation.State.HELD
    record = IdempotencyRecord.objects.get(key="admit-1")
    assert record.state == IdempotencyRecord.State.COMPLETED and record.response_body is not None

    again = door.call(Op.ADMIT, token, BODY, idempotency_key="admit-1")
    assert again.ok and again.replayed and again.data == first.data
    assert Reservation.objects.count() == 1
    assert UsageLedger.objects.get(cap=spend).reserved == Decimal(1)
    assert AdmissionDecision.objects.count() == 0  # an allowed admission with nothing to report records none


def test_a_cap_that_does_not_fit_is_denied_recorded_and_replayed(door, priced_agent):
    _, token = priced_agent
    cap = make_cap(limit="1.5")
    assert door.call(Op.ADMIT, token, BODY, idempotency_key="fits").data["allowed"] is True

    denied = door.call(Op.ADMIT, token, BODY, idempotency_key="too-much")
    assert denied.ok and denied.data["allowed"] is False
    assert denied.data["reasons"] == [f"cap_exceeded:{cap.pk}"]
    assert figures(denied.data["caps"][0]) == (Decimal("1.5"), Decimal(0), Decimal(1), Decimal("0.5"))
    assert not denied.data.get("reservation_id")
    assert Reservation.objects.count() == 1  # the statement that tried was undone whole, claim included
    decision = AdmissionDecision.objects.get()
    assert (decision.allowed, decision.reasons) == (False, [f"cap_exceeded:{cap.pk}"])

    again = door.call(Op.ADMIT, token, BODY, idempotency_key="too-much")
    assert again.replayed and again.data == denied.data
    assert AdmissionDecision.objects.count() == 1


def test_a_dry_run_cap_that_would_deny_is_reported_and_recorded(door, priced_agent):
    _, token = priced_agent
    cap = make_cap(limit="1.5", mode="dry_run")
    quiet = door.call(Op.ADMIT, token, BODY, idempotency_key="one")
    assert not quiet.data.get("dry_run_would_deny") and AdmissionDecision.objects.count() == 0

    loud = door.call(Op.ADMIT, token, BODY, idempotency_key="two")
    assert loud.data["allowed"] is True and loud.data["dry_run_would_deny"] == [f"cap_exceeded:{cap.pk}"]
    assert not loud.data.get("reservation_id")  # never blocked, and nothing held beyond the cap
    assert Reservation.objects.count() == 1
    decision = AdmissionDecision.objects.get()
    assert (decision.allowed, decision.dry_run_would_deny) == (True, [f"cap_exceeded:{cap.pk}"])


def test_concurrent_duplicates_wait_for_the_first_and_replay_it(priced_agent):
    _, token = priced_agent
    cap = make_cap(limit="100")
    key = f"dup-{uuid.uuid4().hex}"
    answers = at_once(6, lambda: Rest().call(Op.ADMIT, token, BODY, idempotency_key=key))
    assert all(answer.ok for answer in answers)
    assert sorted(answer.replayed for answer in answers) == [False] + [True] * 5
    assert all(answer.data == answers[0].data for answer in answers)
    assert Reservation.objects.count() == 1
    assert UsageLedger.objects.get(cap=cap).reserved == Decimal(1)


def test_an_admission_under_no_cap_holds_nothing_and_replays(door, priced_agent):
    _, token = priced_agent
    first = door.call(Op.ADMIT, token, BODY, idempotency_key="uncapped")
    assert first.ok and first.data["allowed"] is True
    assert not first.data.get("caps") and not first.data.get("reservation_id")
    assert Reservation.objects.count() == 0
    again = door.call(Op.ADMIT, token, BODY, idempotency_key="uncapped")
    assert again.replayed and again.data == first.data


@pytest.mark.parametrize("left_behind", ["expired", "abandoned in flight"])
def test_a_key_whose_record_is_left_behind_is_taken_over_in_the_one_statement(door, priced_agent, left_behind):
    # The statement's claim finds the key taken and hands it to idempotency_claim's rules, which take
    # over an expired record, or an in-flight one past its lease; the admission then goes on in the
    # same statement (policy migration 0011).
    _, token = priced_agent
    cap = make_cap(limit="10")
    first = door.call(Op.ADMIT, token, BODY, idempotency_key="left-behind")
    assert first.ok
    long_ago = timezone.now() - dt.timedelta(hours=1)
    if left_behind == "expired":
        IdempotencyRecord.objects.filter(key="left-behind").update(expires_at=long_ago)
    else:
        IdempotencyRecord.objects.filter(key="left-behind").update(
            state=IdempotencyRecord.State.IN_FLIGHT, created_at=long_ago, response_status=None, response_body=None)

    again = door.call(Op.ADMIT, token, BODY, idempotency_key="left-behind")
    assert again.ok and not again.replayed
    assert again.data["reservation_id"] != first.data["reservation_id"]
    assert figures(again.data["caps"][0]) == (Decimal(10), Decimal(0), Decimal(2), Decimal(8))
    assert Reservation.objects.count() == 2 and UsageLedger.objects.get(cap=cap).reserved == Decimal(2)
    record = IdempotencyRecord.objects.get(key="left-behind")
    assert record.state == IdempotencyRecord.State.COMPLETED and record.expires_at > timezone.now()
    assert door.call(Op.ADMIT, token, BODY, idempotency_key="left-behind").data == again.data
    assert AdmissionDecision.objects.count() == 0


def test_the_reservation_holds_each_cap_s_ledger_row_and_amount(priced_agent):
    # What settlement releases and charges: one hold per cap, with the ledger row reserved.
    agent, token = priced_agent
    spend = make_cap(limit="10")
    requests = make_cap(subject=agent, metric="requests", window="minute", limit="5")
    answer = Rest().call(Op.ADMIT, token, BODY, idempotency_key="holds")
    holds = Reservation.objects.get(pk=answer.data["reservation_id"]).holds
    assert holds == [
        {"cap": spend.pk, "ledger": UsageLedger.objects.get(cap=spend).pk, "metric": "cost_usd", "amount": "1.000000"},
        {"cap": requests.pk, "ledger": UsageLedger.objects.get(cap=requests).pk, "metric": "requests", "amount": "1"},
    ]
