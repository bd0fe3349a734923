"""Stateful property test: whatever sequence of admit / settle / release / expire / cap change
happens, every ledger row keeps 0 <= used, 0 <= reserved, used + reserved <= limit."""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from apps.gateway.auth import authenticate_token
from apps.policy import services
from apps.policy.models import PolicyCap, UsageLedger
from tests.factories import TEST_ACTOR, AgentFactory, issue_key, make_cap, make_price

pytestmark = pytest.mark.django_db


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.atomic = transaction.atomic()
        self.atomic.__enter__()  # each example runs in a savepoint that is rolled back
        make_price("gpt-test", input_per_mtok="1", output_per_mtok="2")
        agent = AgentFactory()
        self.principal = authenticate_token(issue_key(agent).token)
        self.caps = [make_cap(limit="50", subject=agent), make_cap(metric="tokens", limit="40000000"),
                     make_cap(metric="requests", limit="12", mode="dry_run")]
        self.held: list = []
        self.now = dt.datetime.now(dt.UTC)

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self.atomic.__exit__(None, None, None)

    @rule(input_millions=st.integers(0, 12), output_millions=st.integers(0, 6))
    def admit(self, input_millions, output_millions):
        result = services.admit(principal=self.principal, model="gpt-test",
                                estimated_input_tokens=input_millions * 1_000_000,
                                estimated_output_tokens=output_millions * 1_000_000, now=self.now)
        if result.reservation_id:
            self.held.append(result.reservation_id)

    @precondition(lambda self: self.held)
    @rule(data=st.data(), actual_cost=st.decimals(0, 80, places=2), actual_tokens=st.integers(0, 20_000_000))
    def settle(self, data, actual_cost, actual_tokens):
        reservation = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        services.reservation_settle(reservation_id=reservation, agent_id=self.principal.agent_id,
                                    actual_tokens=actual_tokens, actual_cost_usd=actual_cost, now=self.now)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release(self, data):
        reservation = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        services.reservation_release(reservation_id=reservation, agent_id=self.principal.agent_id)

    @rule()
    def expire_everything(self):
        services.reservations_expire(now=self.now + dt.timedelta(days=1))
        self.held.clear()

    @rule(index=st.integers(0, 2), limit=st.integers(1, 60))
    def change_cap(self, index, limit):
        cap = PolicyCap.objects.get(pk=self.caps[index].pk)
        cap.limit = Decimal(limit) * (1_000_000 if cap.metric == "tokens" else 1)
        services.cap_save(actor=TEST_ACTOR, cap=cap)

    @rule(cost=st.decimals(0, 30, places=2), tokens=st.integers(0, 5_000_000))
    def unreserved_usage(self, cost, tokens):
        services.usage_record(agent_id=self.principal.agent_id,
                              usages=[services.Usage("gpt-test", self.now, 1, tokens, cost)])

    @invariant()
    def ledger_within_bounds(self):
        for row in UsageLedger.objects.all():
            assert row.used >= 0 and row.reserved >= 0 and row.overrun >= 0
            assert row.used + row.reserved <= row.limit_snapshot

    @invariant()
    def reserved_equals_what_held_reservations_hold(self):
        from apps.policy.models import Reservation

        held = {}
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
