"""Concurrent ledger writers never deadlock into a 500 (issue 8, item 1).

Each test sends two writers at once, on their own PostgreSQL connections, released by a
barrier, that touch the same ledger rows in opposite orders if they follow their items' order:
settlements of two per-model caps, of two windows of one cap, settlement beside unreserved
usage, settlement beside an admission, and settlement beside `reservations_expire`. Every
round must end with every request answered 2xx and the ledger equal to what was held and used,
without the retry backstop (modeloman.transactions), which has its own test at the end.
"""

import datetime as dt
import threading
import time
import uuid
from decimal import Decimal

import pytest
from django.db import connections
from django.db.utils import OperationalError
from rest_framework.test import APIClient

from apps.gateway.auth import authenticate_token
from apps.gateway.rest.problems import problem_exception_handler
from apps.policy import ledger
from apps.policy.models import Reservation, UsageLedger
from modeloman.transactions import ServiceBusy, atomic_with_retry
from tests.factories import AgentFactory, issue_key, make_cap, make_price

pytestmark = pytest.mark.django_db(transaction=True)
ATTEMPTS = "/api/v1/attempts"
ADMISSIONS = "/api/v1/admissions"
ROUNDS = 12
MILLION = 1_000_000


@pytest.fixture
def agent():
    make_price("model-a", input_per_mtok="1", output_per_mtok="1")
    make_price("model-b", input_per_mtok="1", output_per_mtok="1")
    return AgentFactory.create()


@pytest.fixture
def token(agent):
    return issue_key(agent, scopes=["telemetry:write", "tasks:write"]).token


@pytest.fixture
def no_retries(caplog):
    """The lock order alone must prevent the deadlock: the retry backstop is never needed."""
    yield
    assert not [r for r in caplog.get_records("call") if r.name == "modeloman.transactions"]


def admit(token, model, now=None):
    result = ledger.admit(principal=authenticate_token(token), model=model, estimated_input_tokens=MILLION,
                            estimated_output_tokens=0, now=now)
    assert result.allowed, result.reasons
    return str(result.reservation_id)


def item(model, reservation_id=None):
    body = {"model": model, "success": True, "input_tokens": MILLION // 2, "output_tokens": 0, "latency_ms": 5}
    if reservation_id:
        body["reservation_id"] = reservation_id
    return body


def at_once(*calls):
    """Run each call on its own thread (and so its own connection), released together."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(position, call):
        try:
            barrier.wait()
            results[position] = call()
        except Exception as error:  # reported by the caller's assertions
            results[position] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def post(token, url, body):
    def call():
        client = APIClient(raise_request_exception=False)
        response = client.post(url, body, format="json", HTTP_AUTHORIZATION=f"Bearer {token}",
                               HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)
        return response.status_code, response.json()
    return call


def batch(token, items):
    return post(token, ATTEMPTS, {"attempts": items})


def assert_ledger_matches_reservations():
    """`reserved` is exactly what held reservations hold; `used` never passes the limit."""
    held: dict[int, Decimal] = {}
    for reservation in Reservation.objects.filter(state="held"):
        for hold in reservation.holds:
            held[hold["ledger"]] = held.get(hold["ledger"], Decimal(0)) + Decimal(hold["amount"])
    for row in UsageLedger.objects.all():
        assert row.reserved == held.get(row.pk, Decimal(0))
        assert row.used + row.reserved <= row.limit_snapshot


def used(cap):
    return sum(row.used for row in UsageLedger.objects.filter(cap=cap))


def test_batches_settling_two_caps_in_opposite_orders(token, no_retries):
    cap_a = make_cap(limit="1000", window="total", model="model-a")
    cap_b = make_cap(limit="1000", window="total", model="model-b")
    for round_number in range(1, ROUNDS + 1):
        a1, b1, a2, b2 = (admit(token, m) for m in ("model-a", "model-b", "model-a", "model-b"))
        results = at_once(batch(token, [item("model-a", a1), item("model-b", b1)]),
                          batch(token, [item("model-b", b2), item("model-a", a2)]))
        assert [status for status, _ in results] == [201, 201], results
        assert used(cap_a) == used(cap_b) == Decimal("0.5") * 2 * round_number
        assert_ledger_matches_reservations()


def test_batches_settling_two_windows_of_one_cap_in_opposite_orders(token, no_retries):
    cap = make_cap(limit="1000", window="minute")
    for _ in range(ROUNDS):
        now = dt.datetime.now(dt.UTC)
        earlier = now - dt.timedelta(minutes=1)
        old1, new1, old2, new2 = admit(token, "model-a", earlier), admit(token, "model-a", now), \
            admit(token, "model-a", earlier), admit(token, "model-a", now)
        results = at_once(batch(token, [item("model-a", old1), item("model-a", new1)]),
                          batch(token, [item("model-a", new2), item("model-a", old2)]))
        assert [status for status, _ in results] == [201, 201], results
        assert_ledger_matches_reservations()
    assert Reservation.objects.filter(state="settled").count() == 4 * ROUNDS
    assert used(cap) == Decimal("0.5") * 4 * ROUNDS


def test_settlement_beside_unreserved_usage_in_opposite_orders(token, no_retries):
    cap_a = make_cap(limit="1000", window="total", model="model-a")
    cap_b = make_cap(limit="1000", window="total", model="model-b")
    for round_number in range(1, ROUNDS + 1):
        a, b = admit(token, "model-a"), admit(token, "model-b")
        results = at_once(batch(token, [item("model-a", a), item("model-b")]),
                          batch(token, [item("model-b", b), item("model-a")]))
        assert [status for status, _ in results] == [201, 201], results
        assert used(cap_a) == used(cap_b) == Decimal(1) * round_number
        assert_ledger_matches_reservations()


def test_settlement_beside_an_admission(token, no_retries):
    cap_a = make_cap(limit="100000", window="total", model="model-a")  # admission locks this one first
    cap_all = make_cap(limit="100000", window="total")
    for _ in range(ROUNDS):
        b, a = admit(token, "model-b"), admit(token, "model-a")  # b holds only cap_all
        results = at_once(batch(token, [item("model-b", b), item("model-a", a)]),
                          post(token, ADMISSIONS, {"model": "model-a", "estimated_input_tokens": MILLION,
                                                   "estimated_output_tokens": 0}))
        assert [status for status, _ in results] == [201, 200], results
        assert results[1][1]["allowed"] is True
        assert_ledger_matches_reservations()
    assert used(cap_a) == Decimal("0.5") * ROUNDS and used(cap_all) == Decimal(1) * ROUNDS


def test_settlement_beside_reservations_expire(token, no_retries):
    make_cap(limit="100000", window="total", model="model-a")
    make_cap(limit="100000", window="total", model="model-b")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)

    def expire_after(delay):
        def call():
            time.sleep(delay)  # swept over the rounds, so the two transactions overlap at some point
            return ledger.reservations_expire(now=dt.datetime.now(dt.UTC))
        return call

    for round_number in range(ROUNDS):
        expiring = [admit(token, model, long_ago) for model in ("model-a", "model-b") for _ in range(10)]
        b, a = admit(token, "model-b"), admit(token, "model-a")
        results = at_once(batch(token, [item("model-b", b), item("model-a", a)]),
                          expire_after(round_number * 0.002))
        assert results[0][0] == 201 and results[1] == len(expiring), results
        assert set(Reservation.objects.filter(id__in=expiring).values_list("state", flat=True)) == {"released"}
        assert_ledger_matches_reservations()


def _lock_two_rows(first, second, barrier, attempts):
    """Lock two ledger rows in the given order; only on the first attempt wait for the other
    thread in between, which makes the two transactions deadlock."""
    def work():
        attempts.append(1)
        with connections["default"].cursor() as cursor:
            cursor.execute("UPDATE policy_usageledger SET used = used WHERE id = %s", [first])
            if len(attempts) == 1:
                barrier.wait()
            cursor.execute("UPDATE policy_usageledger SET used = used WHERE id = %s", [second])
        return "done"
    return work


def test_a_deadlock_that_still_happens_is_retried_and_otherwise_is_a_503(token):
    make_cap(limit="1000", window="total", model="model-a")
    make_cap(limit="1000", window="total", model="model-b")
    admit(token, "model-a")
    admit(token, "model-b")
    first, second = UsageLedger.objects.order_by("id").values_list("id", flat=True)

    barrier = threading.Barrier(2)
    tries: tuple[list, list] = ([], [])
    results = at_once(lambda: atomic_with_retry(_lock_two_rows(first, second, barrier, tries[0])),
                      lambda: atomic_with_retry(_lock_two_rows(second, first, barrier, tries[1])))
    assert results == ["done", "done"]
    assert sorted(len(t) for t in tries) == [1, 2]  # PostgreSQL chose one victim; it ran again

    barrier = threading.Barrier(2)
    tries = ([], [])
    results = at_once(lambda: atomic_with_retry(_lock_two_rows(first, second, barrier, tries[0]), attempts=1),
                      lambda: atomic_with_retry(_lock_two_rows(second, first, barrier, tries[1]), attempts=1))
    busy = [r for r in results if isinstance(r, ServiceBusy)]
    assert len(busy) == 1 and "done" in results
    assert isinstance(busy[0].__cause__, OperationalError)
    response = problem_exception_handler(busy[0], {})  # what the agent would get
    assert response is not None
    assert (response.status_code, response.data["code"], response["Retry-After"]) == (503, "database_busy", "1")


def test_an_admission_that_opens_the_window_of_a_cap_deleted_meanwhile_is_run_again_not_a_500(token):
    """The first admission in a window inserts the window's ledger row; its foreign key to the cap
    is checked at commit. If an operator deletes the cap in between, the commit fails — that run
    is repeated (the cap is gone by then) instead of reaching the agent as a 500."""
    from apps.audit.services import Actor
    from apps.policy import services
    from apps.policy.models import PolicyCap

    cap = make_cap(limit="1000", window="day")
    opened, deleted = threading.Event(), threading.Event()
    runs = []

    def admission_that_waits_for_the_delete():
        def work():
            runs.append(admit(token, "model-a"))
            if len(runs) == 1:  # the first run has inserted the window row: now the cap goes
                opened.set()
                assert deleted.wait(10)
            return runs[-1]
        return atomic_with_retry(work)

    def delete_the_cap():
        assert opened.wait(10)
        services.cap_delete(actor=Actor.system("test"), cap=PolicyCap.objects.get(pk=cap.pk), reason="test")
        deleted.set()
        return "deleted"

    admitted, outcome = at_once(admission_that_waits_for_the_delete, delete_the_cap)
    assert outcome == "deleted"
    assert isinstance(admitted, str), admitted  # admitted (the helper asserts it), not an IntegrityError
    assert len(runs) >= 2  # the first run's commit failed and the admission ran again
    assert not PolicyCap.objects.filter(pk=cap.pk).exists()
    assert not UsageLedger.objects.filter(cap_id=cap.pk).exists()
    # The failed run's reservation went with its transaction; without the cap, nothing is held.
    assert not Reservation.objects.exists()
