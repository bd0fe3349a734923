"""Stateful property test: whatever sequence of admit / settle / expire / cap change /
batch happens — batches crossing caps and windows in any item order, unpriced models, the
largest values the validators admit, attempts of the wrong model — every ledger row keeps
0 <= used, 0 <= reserved, used + reserved <= limit, and `reserved` is exactly what held
reservations hold."""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from apps.gateway.auth import authenticate_token
from apps.policy import ledger, services
from apps.policy.models import LEDGER_MAX, PolicyCap, Reservation, UsageLedger
from tests.factories import TEST_ACTOR, AgentFactory, issue_key, make_cap, make_price

pytestmark = pytest.mark.django_db

PRICED = ("gpt-test", "other-model")
UNPRICED = "mystery-model"
MODELS = (*PRICED, UNPRICED)
MAX_TOKENS = 10**9  # per field, as apps.telemetry.validation and the admission API admit
MAX_ESTIMATE = Decimal("999999999999.999999")  # the admission API's largest estimated_cost_usd
MAX_REPORTED = Decimal("1000000")  # the largest reported_cost_usd
LIMIT_SCALE = {"cost_usd": 1, "tokens": 1_000_000, "requests": 1}


def ledger_snapshot():
    return sorted(UsageLedger.objects.values_list("id", "used", "reserved", "overrun"))


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.atomic = transaction.atomic()
        self.atomic.__enter__()  # each example runs in a savepoint that is rolled back
        make_price("gpt-test", input_per_mtok="1", output_per_mtok="2")
        make_price("other-model", input_per_mtok="3", output_per_mtok="15")
        services.policy_set(actor=TEST_ACTOR, subject_type="global", allow_unpriced_models=True)
        agent = AgentFactory.create()
        self.principal = authenticate_token(issue_key(agent).token)
        self.agent_id = agent.pk
        self.caps = [make_cap(limit="50", subject=agent), make_cap(metric="tokens", limit="40000000"),
                     make_cap(metric="requests", limit="12", mode="dry_run"),
                     make_cap(limit="30", window="minute", model="gpt-test"),
                     make_cap(metric="tokens", limit="999999999999", window="total", model="other-model")]
        self.held: list[tuple] = []  # (reservation id, model)
        self.now = dt.datetime.now(dt.UTC)

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self.atomic.__exit__(None, None, None)

    def _admit(self, model, input_tokens, output_tokens, estimate=None):
        result = ledger.admit(principal=self.principal, model=model, estimated_input_tokens=input_tokens,
                                estimated_output_tokens=output_tokens, estimated_cost_usd=estimate, now=self.now)
        if model == UNPRICED and estimate is None:  # under the agent's cost cap: never a silent $0
            assert (result.allowed, result.reasons) == (False, ["cost_estimate_required"])
        if result.reservation_id:
            self.held.append((result.reservation_id, model))

    def _settle(self, reservation, model, tokens, cost):
        ledger.usage_record(agent_id=self.agent_id, settlements=[ledger.Settlement(reservation, model, tokens, cost)],
                            now=self.now)

    def _pop(self, data):
        return self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))

    @rule(model=st.sampled_from(MODELS), input_millions=st.integers(0, 12), output_millions=st.integers(0, 6),
          estimate=st.none() | st.decimals(0, 60, places=2))
    def admit(self, model, input_millions, output_millions, estimate):
        self._admit(model, input_millions * 1_000_000, output_millions * 1_000_000, estimate)

    @rule(model=st.sampled_from(MODELS))
    def admit_the_largest_request(self, model):
        self._admit(model, MAX_TOKENS, MAX_TOKENS, MAX_ESTIMATE)

    @precondition(lambda self: self.held)
    @rule(data=st.data(), actual_cost=st.decimals(0, 80, places=2) | st.just(MAX_REPORTED),
          actual_tokens=st.integers(0, 20_000_000) | st.just(2 * MAX_TOKENS))
    def settle(self, data, actual_cost, actual_tokens):
        reservation, model = self._pop(data)
        self._settle(reservation, model, actual_tokens, actual_cost)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def settle_with_another_model(self, data):
        reservation, model = data.draw(st.sampled_from(self.held))
        other = data.draw(st.sampled_from([m for m in MODELS if m != model]))
        before = ledger_snapshot()
        # A caller that goes on after a write service's error needs a savepoint of its own
        # (`write_transaction` joins the caller's transaction without one).
        with pytest.raises(ledger.ReservationRefused) as refused, transaction.atomic():
            self._settle(reservation, other, 1000, Decimal(1))
        assert refused.value.code == "reservation_model_mismatch"
        assert ledger_snapshot() == before
        assert Reservation.objects.get(id=reservation).state == "held"

    @rule(data=st.data(), usages=st.lists(
        st.tuples(st.sampled_from(MODELS), st.integers(0, 3), st.integers(0, 5_000_000), st.decimals(0, 30, places=2)),
        max_size=3))
    def crossing_batch(self, data, usages):
        """One batch, items in any order: settlements of several reservations (across caps and
        windows) beside usage without a reservation, some of it in earlier minutes."""
        chosen = [self._pop(data) for _ in range(data.draw(st.integers(0, min(4, len(self.held)))))]
        settlements = [ledger.Settlement(r, model, data.draw(st.integers(0, 8_000_000)),
                                           data.draw(st.decimals(0, 40, places=2))) for r, model in chosen]
        unreserved = [ledger.Usage(model, self.now - dt.timedelta(minutes=minutes_ago), 1, tokens, cost)
                      for model, minutes_ago, tokens, cost in usages]
        ledger.usage_record(agent_id=self.agent_id, settlements=data.draw(st.permutations(settlements)),
                              usages=data.draw(st.permutations(unreserved)), now=self.now)
        assert set(Reservation.objects.filter(id__in=[r for r, _ in chosen]).values_list("state", flat=True)) <= {
            "settled"}

    @rule(batches=st.integers(1, 60), model=st.sampled_from(MODELS))
    def maximal_batches(self, batches, model):
        """Up to 60 batches' worth of 1,000 attempts of the largest size, each reporting the largest
        cost: enough to pass numeric(20, 6) on a tokens cap (tests/telemetry/test_ingest.py sends
        them one request at a time)."""
        biggest = ledger.Usage(model, self.now, 1000, 1000 * 2 * MAX_TOKENS, 1000 * MAX_REPORTED)
        ledger.usage_record(agent_id=self.agent_id, usages=[biggest] * batches, now=self.now)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def settle_a_failed_attempt(self, data):
        reservation, model = self._pop(data)
        self._settle(reservation, model, 0, Decimal(0))

    @rule()
    def expire_everything(self):
        ledger.reservations_expire(now=self.now + dt.timedelta(days=1))
        self.held.clear()

    @rule(minutes=st.integers(1, 90))
    def time_passes(self, minutes):
        self.now += dt.timedelta(minutes=minutes)

    @rule(index=st.integers(0, 4), limit=st.integers(1, 60))
    def change_cap(self, index, limit):
        cap = PolicyCap.objects.get(pk=self.caps[index].pk)
        cap.limit = Decimal(limit) * LIMIT_SCALE[cap.metric]
        services.cap_save(actor=TEST_ACTOR, cap=cap)

    @rule(model=st.sampled_from(MODELS), cost=st.decimals(0, 30, places=2), tokens=st.integers(0, 5_000_000))
    def unreserved_usage(self, model, cost, tokens):
        ledger.usage_record(agent_id=self.agent_id,
                              usages=[ledger.Usage(model, self.now, 1, tokens, cost)])

    @invariant()
    def ledger_within_bounds(self):
        for row in UsageLedger.objects.all():
            assert row.used >= 0 and row.reserved >= 0 and 0 <= row.overrun <= LEDGER_MAX
            assert row.used + row.reserved <= row.limit_snapshot

    @invariant()
    def reserved_equals_what_held_reservations_hold(self):
        held: dict[int, Decimal] = {}
        for reservation in Reservation.objects.filter(state="held"):
            for hold in reservation.holds:
                held[hold["ledger"]] = held.get(hold["ledger"], Decimal(0)) + Decimal(hold["amount"])
        with connection.cursor() as cursor:
            cursor.execute("SELECT id, reserved FROM policy_usageledger")
            assert {i: r for i, r in cursor.fetchall() if r} == {i: r for i, r in held.items() if r}


LedgerMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=30, deadline=None,
                                           suppress_health_check=list(HealthCheck))


def test_ledger_invariants_hold_under_any_sequence(db):
    LedgerMachine.TestCase().runTest()
