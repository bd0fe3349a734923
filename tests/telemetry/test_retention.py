"""Nothing grows without bound (issue 8, item 11): telemetry_maintenance purges admission
decisions, finished reservations and ended ledger windows past their retention,
data_growth_check watches those tables, and a run takes a bounded number of events."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from apps.policy.models import AdmissionDecision, Reservation, UsageLedger
from apps.policy.windows import EPOCH
from apps.telemetry import maintenance as maintenance_module
from apps.telemetry.models import Run
from tests.factories import AgentFactory, issue_key, make_cap

pytestmark = pytest.mark.django_db
DAY = dt.timedelta(days=1)


@pytest.fixture
def retention(settings):
    settings.ADMISSION_DECISION_RETENTION_DAYS = 10
    settings.RESERVATION_RETENTION_DAYS = 5
    settings.USAGE_LEDGER_RETENTION_DAYS = 20


def maintenance() -> str:
    out = io.StringIO()
    call_command("telemetry_maintenance", stdout=out)
    return out.getvalue()


def test_maintenance_purges_decisions_reservations_and_ledger_windows_past_their_retention(retention):
    agent, now = AgentFactory.create(), timezone.now()

    def decision(age: dt.timedelta) -> AdmissionDecision:
        return AdmissionDecision.objects.create(agent=agent, model="m", allowed=False, estimated_tokens=1,
                                                created_at=now - age)

    def reservation(state: str, finished_age: dt.timedelta | None) -> Reservation:
        return Reservation.objects.create(
            agent=agent, model="m", estimated_tokens=1, state=state, created_at=now - 40 * DAY,
            expires_at=now + dt.timedelta(minutes=5) if state == "held" else now - 40 * DAY,
            finished_at=now - finished_age if finished_age else None)

    def ledger(window: str, start: dt.datetime, reserved: str = "0") -> UsageLedger:
        cap = make_cap(subject=agent, metric="tokens", window=window, limit="1000")
        return UsageLedger.objects.create(cap=cap, window_start=start, used=Decimal(1), reserved=Decimal(reserved),
                                          limit_snapshot=Decimal(1000))

    purged = [decision(11 * DAY), reservation("settled", 6 * DAY), reservation("released", 6 * DAY),
              ledger("minute", now - 20 * DAY - dt.timedelta(minutes=2)),
              ledger("day", now - 22 * DAY), ledger("month", now - 60 * DAY)]
    kept = [decision(9 * DAY), reservation("settled", 4 * DAY), reservation("held", None),
            ledger("hour", now - 19 * DAY),  # ended 19 days ago: within the retention
            ledger("month", now - 40 * DAY),  # began long ago but ended at most 12 days ago
            ledger("day", now - 30 * DAY, reserved="1"),  # still holds a reservation
            ledger("total", EPOCH)]  # a total window never ends

    output = maintenance()

    assert "purged: admission decisions 1, finished reservations 2, ledger windows 3" in output
    for row in purged:
        assert not type(row)._default_manager.filter(pk=row.pk).exists(), row
    for row in kept:
        assert type(row)._default_manager.filter(pk=row.pk).exists(), row


@pytest.mark.parametrize("purge, index", [
    ("ledger_windows_purge", "ledger_one_row_per_window"),  # per cap, through (cap_id, window_start)
    ("reservations_purge", "reservation_finished"),
])
def test_each_purge_batch_is_found_through_an_index(purge, index):
    """A batch must not read the whole table: the purge statement has an index path."""
    statements = []

    def capture(execute, sql, params, many, context):
        statements.append((sql, params))
        return execute(sql, params, many, context)

    make_cap(subject=AgentFactory.create(), metric="tokens", window="minute", limit="1000")
    with connection.execute_wrapper(capture):
        getattr(maintenance_module, purge)(**{"ended_before" if "ledger" in purge else "before": timezone.now()},
                                           batch_size=10)
    [(sql, params)] = statements
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # tiny tables: ask whether an index path exists
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert index in plan, plan


def test_data_growth_check_watches_the_operational_tables():
    AdmissionDecision.objects.create(agent=AgentFactory.create(), model="m", allowed=False, estimated_tokens=1)
    AdmissionDecision.objects.create(agent=AgentFactory.create(), model="m", allowed=False, estimated_tokens=1)
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"over the limit: policy_admissiondecision \(rows\)"):
        call_command("data_growth_check", "--max-rows", "policy_admissiondecision=1", stdout=out)
    watched = {line.split()[0] for line in out.getvalue().splitlines()[1:]}
    assert {"policy_admissiondecision", "policy_reservation", "policy_usageledger", "telemetry_run"} <= watched


def test_a_run_takes_at_most_max_events_per_run(api_client, bearer, settings):
    settings.MAX_EVENTS_PER_RUN = 5
    agent = AgentFactory.create()
    token = issue_key(agent, scopes=["telemetry:write"]).token
    run = Run.objects.create(agent=agent, project=agent.project, task="t")
    url = f"/api/v1/runs/{run.pk}/events"

    def post(count: int):
        return api_client.post(url, {"events": [{"kind": "step"}] * count}, format="json", **bearer(token))

    def stored() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM run_events WHERE run_id = %s", [run.pk])
            return cursor.fetchone()[0]

    assert post(3).status_code == 201
    over = post(3)
    assert (over.status_code, over.json()["code"], over.json()["limit"]) == (409, "run_event_limit_reached", 5)
    assert stored() == 3  # the refused batch wrote nothing
    assert post(2).status_code == 201
    assert post(1).json()["code"] == "run_event_limit_reached"
    run.refresh_from_db()
    assert (stored(), run.events) == (5, 5)
