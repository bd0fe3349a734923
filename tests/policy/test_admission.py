import datetime as dt
from contextlib import nullcontext
from decimal import Decimal
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction

from apps.audit.models import AuditEvent
from apps.gateway.auth import authenticate_token
from apps.gateway.errors import DomainError
from apps.policy import ledger as policy_ledger
from apps.policy import services
from apps.policy.models import AdmissionDecision, PolicyCap, Reservation, UsageLedger
from apps.policy.windows import window_start
from tests.concurrently import at_once
from tests.factories import TEST_ACTOR, AgentFactory, issue_key, make_cap, make_price

MILLION = 1_000_000


def principal_for(agent=None, scopes=("tasks:write",)):
    return authenticate_token(issue_key(agent or AgentFactory.create(), scopes=scopes).token)


def admit(principal, model="gpt-test", input_tokens=MILLION, output_tokens=0, **kwargs):
    return policy_ledger.admit(principal=principal, model=model, estimated_input_tokens=input_tokens,
                          estimated_output_tokens=output_tokens, **kwargs)


def settle(principal, admission, *, tokens, cost, model="gpt-test"):
    """What an attempt reported with the admission's reservation does (apps.telemetry.services)."""
    policy_ledger.usage_record(agent_id=principal.agent_id, settlements=[
        policy_ledger.Settlement(admission.reservation_id, model, tokens, Decimal(cost))])


def ledger(cap):
    return UsageLedger.objects.get(cap=cap)


@pytest.mark.django_db(transaction=True)
def test_forty_concurrent_admissions_never_overshoot_the_cap():
    make_price("gpt-test", input_per_mtok="10")  # 1M input tokens cost $10
    principal = principal_for()
    cap = make_cap(limit="100")
    results = at_once(40, lambda: admit(principal))
    allowed = [r for r in results if r.allowed]
    denied = [r for r in results if not r.allowed]
    assert len(allowed) == 10 and len(denied) == 30
    assert {tuple(r.reasons) for r in denied} == {(f"cap_exceeded:{cap.pk}",)}
    assert UsageLedger.objects.filter(cap=cap).count() == 1  # concurrent first use: one row
    row = ledger(cap)
    assert row.used + row.reserved == Decimal(100)
    assert Reservation.objects.filter(state="held").count() == 10
    assert AdmissionDecision.objects.filter(allowed=False).count() == 30


@pytest.mark.django_db
def test_a_settlement_of_nothing_and_expiry_return_the_ledger_to_its_prior_value():
    make_price("gpt-test", input_per_mtok="10")
    principal = principal_for()
    cap = make_cap(limit="100")
    first = admit(principal)
    before = (ledger(cap).used, ledger(cap).reserved)

    failed = admit(principal)  # the attempt failed before it spent anything
    settle(principal, failed, tokens=0, cost=0)
    assert (ledger(cap).used, ledger(cap).reserved) == before

    expiring = admit(principal)
    assert policy_ledger.reservations_expire(now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)) == 2
    assert (ledger(cap).used, ledger(cap).reserved) == (Decimal(0), Decimal(0))
    assert Reservation.objects.get(id=expiring.reservation_id).state == "released"
    assert Reservation.objects.get(id=first.reservation_id).state == "released"


@pytest.mark.django_db
def test_settling_moves_actual_cost_to_used_and_keeps_overrun_outside_the_limit():
    make_price("gpt-test", input_per_mtok="10")
    principal = principal_for()
    cap = make_cap(limit="25")
    cheap = admit(principal)  # reserves 10
    settle(principal, cheap, tokens=500_000, cost="4")
    assert (ledger(cap).used, ledger(cap).reserved) == (Decimal(4), Decimal(0))

    costly = admit(principal)  # reserves 10 more; actual comes back at 30
    settle(principal, costly, tokens=3 * MILLION, cost="30")
    row = ledger(cap)
    assert (row.used, row.reserved, row.overrun) == (Decimal(25), Decimal(0), Decimal(9))
    assert not admit(principal).allowed

    with pytest.raises(DomainError) as again:
        settle(principal, costly, tokens=1, cost=1)
    assert again.value.code == "reservation_not_held"


@pytest.mark.django_db
@pytest.mark.parametrize("assignment", ["used = limit_snapshot + 1", "reserved = -1", "used = -0.5",
                                        "reserved = limit_snapshot, used = 1"])
def test_direct_sql_cannot_push_a_ledger_row_outside_its_limit(assignment):
    make_price("gpt-test", input_per_mtok="10")
    make_cap(limit="100")
    admit(principal_for())
    with pytest.raises(IntegrityError, match="ledger_within_limit"), transaction.atomic(), \
            connection.cursor() as cursor:
        cursor.execute(f"UPDATE policy_usageledger SET {assignment}")  # noqa: S608  # fixed test strings


@pytest.mark.django_db
def test_day_cap_resets_at_local_midnight_across_a_dst_change(settings):
    settings.POLICY_TIMEZONE = "America/New_York"
    make_price("gpt-test", input_per_mtok="10")
    principal = principal_for()
    cap = make_cap(limit="10", window="day")
    # 2026-03-08 is the spring-forward day in New York: local midnight is 05:00 UTC (EST),
    # the next local midnight is 04:00 UTC (EDT) — a 23-hour day.
    before_midnight = dt.datetime(2026, 3, 8, 4, 59, tzinfo=dt.UTC)  # 23:59 EST on the 7th
    after_midnight = dt.datetime(2026, 3, 8, 5, 0, 30, tzinfo=dt.UTC)  # 00:00:30 EST on the 8th
    late_that_day = dt.datetime(2026, 3, 9, 3, 59, tzinfo=dt.UTC)  # 23:59 EDT on the 8th
    next_day = dt.datetime(2026, 3, 9, 4, 0, 30, tzinfo=dt.UTC)  # 00:00:30 EDT on the 9th

    assert admit(principal, now=before_midnight).allowed
    assert not admit(principal, now=before_midnight).allowed
    assert admit(principal, now=after_midnight).allowed
    assert not admit(principal, now=late_that_day).allowed
    assert admit(principal, now=next_day).allowed
    starts = sorted(UsageLedger.objects.filter(cap=cap).values_list("window_start", flat=True))
    assert starts == [dt.datetime(2026, 3, 7, 5, tzinfo=dt.UTC), dt.datetime(2026, 3, 8, 5, tzinfo=dt.UTC),
                      dt.datetime(2026, 3, 9, 4, tzinfo=dt.UTC)]


def test_window_starts_are_calendar_aligned(settings):
    settings.POLICY_TIMEZONE = "Europe/Berlin"
    moment = dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC)  # fall-back day; 02:30 CEST locally
    assert window_start("month", moment) == dt.datetime(2026, 9, 30, 22, tzinfo=dt.UTC)  # Oct 1, 00:00 CEST
    assert window_start("week", moment) == dt.datetime(2026, 10, 18, 22, tzinfo=dt.UTC)  # Mon Oct 19
    assert window_start("day", moment) == dt.datetime(2026, 10, 24, 22, tzinfo=dt.UTC)
    assert window_start("hour", moment) == dt.datetime(2026, 10, 25, 0, tzinfo=dt.UTC)
    assert window_start("minute", moment) == moment
    assert window_start("total", moment) == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@pytest.mark.django_db
def test_month_cap_resets_on_the_first_of_the_month():
    make_price("gpt-test", input_per_mtok="10")
    principal = principal_for()
    make_cap(limit="10", window="month")
    assert admit(principal, now=dt.datetime(2026, 1, 31, 23, 59, tzinfo=dt.UTC)).allowed
    assert not admit(principal, now=dt.datetime(2026, 1, 31, 23, 59, 59, tzinfo=dt.UTC)).allowed
    assert admit(principal, now=dt.datetime(2026, 2, 1, 0, 0, 1, tzinfo=dt.UTC)).allowed


@pytest.mark.django_db
def test_dry_run_cap_never_blocks_and_records_the_would_deny():
    make_price("gpt-test", input_per_mtok="10")
    principal = principal_for()
    cap = make_cap(limit="15", mode="dry_run")
    results = [admit(principal) for _ in range(3)]
    assert all(r.allowed for r in results)
    assert [r.dry_run_would_deny for r in results] == [[], [f"cap_exceeded:{cap.pk}"], [f"cap_exceeded:{cap.pk}"]]
    decisions = AdmissionDecision.objects.filter(allowed=True)
    assert decisions.count() == 2
    assert list(decisions.values_list("dry_run_would_deny", flat=True)) == [[f"cap_exceeded:{cap.pk}"]] * 2


@pytest.mark.django_db
def test_policy_level_dry_run_softens_rules_and_switching_it_is_audited():
    make_price("gpt-test", input_per_mtok="10")
    principal = principal_for()
    agent = principal.agent_id
    from apps.keys.models import Agent

    agent = Agent.objects.get(pk=agent)
    services.policy_set(actor=TEST_ACTOR, subject_type="agent", agent=agent, allowed_models=["other-model"])
    assert admit(principal).reasons == ["model_not_allowed"]

    services.policy_set(actor=TEST_ACTOR, subject_type="agent", agent=agent, dry_run=True, reason="trial")
    result = admit(principal)
    assert result.allowed and result.dry_run_would_deny == ["model_not_allowed"]
    event = AuditEvent.objects.filter(action="policy.update").latest("id")
    assert event.before is not None
    assert event.after is not None
    assert (event.before["dry_run"], event.after["dry_run"], event.reason) == (False, True, "trial")


@pytest.mark.django_db
@pytest.mark.parametrize("level", ["global", "project", "agent"])
def test_kill_switch_at_any_level_denies(level):
    make_price("gpt-test")
    principal = principal_for()
    from apps.keys.models import Agent

    agent = Agent.objects.get(pk=principal.agent_id)
    subjects: dict[str, dict[str, Any]] = {
        "global": {}, "project": {"project": agent.project}, "agent": {"agent": agent}}
    subject = subjects[level]
    services.policy_set(actor=TEST_ACTOR, subject_type=level, kill_switch=True, reason="runaway", **subject)
    result = admit(principal)
    assert (result.allowed, result.reasons, result.reservation_id) == (False, ["kill_switch"], None)
    services.policy_set(actor=TEST_ACTOR, subject_type=level, kill_switch=False, reason="fixed", **subject)
    assert admit(principal).allowed


@pytest.mark.django_db
def test_unpriced_model_under_a_cost_cap_is_denied_unless_explicitly_allowed():
    principal = principal_for()
    make_cap(limit="100", metric="cost_usd")
    result = admit(principal, model="mystery-model")
    assert (result.allowed, result.reasons) == (False, ["unpriced_model"])

    services.policy_set(actor=TEST_ACTOR, subject_type="global", allow_unpriced_models=True)
    result = admit(principal, model="mystery-model", estimated_cost_usd=Decimal("3"))
    assert result.allowed and result.estimated_cost_usd == Decimal("3")


@pytest.mark.django_db
def test_an_unpriced_model_under_a_cost_cap_needs_the_agents_estimate():
    services.policy_set(actor=TEST_ACTOR, subject_type="global", allow_unpriced_models=True)
    principal = principal_for()
    cap = make_cap(limit="100", metric="cost_usd")
    result = admit(principal, model="mystery-model", input_tokens=10**9, output_tokens=10**9)
    assert (result.allowed, result.reasons, result.reservation_id) == (False, ["cost_estimate_required"], None)
    assert not UsageLedger.objects.filter(cap=cap).exists()  # nothing reserved, not even $0
    assert AdmissionDecision.objects.get().reasons == ["cost_estimate_required"]

    result = admit(principal, model="mystery-model", estimated_cost_usd=Decimal("2.5"))
    assert result.allowed and ledger(cap).reserved == Decimal("2.5")

    cap.mode = "dry_run"  # a dry-run cap only records the would-deny
    services.cap_save(actor=TEST_ACTOR, cap=cap)
    result = admit(principal, model="mystery-model")
    assert result.allowed and result.dry_run_would_deny == ["cost_estimate_required"]


@pytest.mark.django_db
def test_priced_model_cost_is_computed_server_side():
    make_price("gpt-test", input_per_mtok="3", output_per_mtok="15")
    principal = principal_for()
    cap = make_cap(limit="100")
    result = admit(principal, input_tokens=200_000, output_tokens=100_000, estimated_cost_usd=Decimal("0.01"))
    assert result.estimated_cost_usd == Decimal("2.1")  # 0.2M*3 + 0.1M*15, not the agent's 0.01
    assert ledger(cap).reserved == Decimal("2.1")


@pytest.mark.django_db
def test_caps_filter_by_model_and_metric():
    make_price("gpt-test")
    make_price("other-model")
    principal = principal_for()
    tokens_cap = make_cap(metric="tokens", limit="1500000", model="gpt-test")
    requests_cap = make_cap(metric="requests", limit="3", window="minute")
    assert admit(principal).allowed
    assert admit(principal, model="other-model").allowed
    assert admit(principal, input_tokens=400_000).allowed
    denied = admit(principal, model="other-model")
    assert denied.reasons == [f"cap_exceeded:{requests_cap.pk}"]
    assert ledger(tokens_cap).reserved == 1_400_000


@pytest.mark.django_db
def test_lowering_a_limit_below_usage_blocks_without_breaking_the_ledger():
    make_price("gpt-test", input_per_mtok="10")
    principal = principal_for()
    cap = make_cap(limit="100")
    for _ in range(5):
        assert admit(principal).allowed
    cap.limit = Decimal("20")
    services.cap_save(actor=TEST_ACTOR, cap=cap)
    assert ledger(cap).limit_snapshot == Decimal(50)
    assert not admit(principal).allowed
    assert AuditEvent.objects.filter(action="cap.update", target_id=str(cap.pk)).exists()
    assert PolicyCap.objects.get(pk=cap.pk).limit == Decimal(20)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("in_a_transaction", [True, False])
def test_a_denial_by_a_later_cap_undoes_the_earlier_caps_reservation(in_a_transaction):
    """policy_reserve_or_deny reports a denial as a row (no savepoint round trips, issue 10): the
    caps reserved before the one that does not fit are still given back, inside a transaction or not."""
    make_price("gpt-test", input_per_mtok="10")
    principal = principal_for()
    roomy = make_cap(limit="1000")  # reserved first (lower id), then undone
    tight = make_cap(metric="requests", window="minute", limit="1")
    assert admit(principal).allowed
    with transaction.atomic() if in_a_transaction else nullcontext():
        assert connection.in_atomic_block == in_a_transaction
        denied = admit(principal)
    assert denied.reasons == [f"cap_exceeded:{tight.pk}"] and denied.reservation_id is None
    assert (ledger(roomy).reserved, ledger(tight).reserved) == (Decimal("10"), Decimal("1"))
    assert Reservation.objects.count() == 1
    assert {c.cap_id: c.reserved for c in denied.caps} == {roomy.pk: Decimal("10"), tight.pk: Decimal("1")}


@pytest.mark.django_db
def test_an_agent_holding_reservations_cannot_be_deleted():
    """Reservations point at their agent without a database constraint (apps/policy/models.py says
    why); the ORM still protects them, and the database still refuses a raw delete of the agent,
    whose keys reference it."""
    from django.db.models import ProtectedError

    make_price("gpt-test", input_per_mtok="10")
    make_cap(limit="100")
    principal = principal_for()
    assert admit(principal).reservation_id is not None
    agent = Reservation.objects.get().agent
    with pytest.raises(ProtectedError):
        agent.delete()
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # what COMMIT would check
        cursor.execute("DELETE FROM keys_agent WHERE id = %s", [agent.pk])
    assert Reservation.objects.get().agent_id == agent.pk
