import datetime as dt
import threading
import uuid

import pytest
from django.db import connections
from django.utils import timezone

from apps.gateway.idempotency import sanitize
from apps.gateway.models import IdempotencyRecord
from apps.telemetry.maintenance import idempotency_records_reap
from apps.telemetry.models import Run
from tests.concurrently import at_once
from tests.factories import AgentFactory, issue_key

RUNS = "/api/v1/runs"


def headers(token, key):
    return {"HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_IDEMPOTENCY_KEY": key}


@pytest.fixture
def token(db):
    return issue_key(scopes=["tasks:write"]).token


def test_missing_key_is_400_and_nothing_is_written(api_client, token):
    response = api_client.post(RUNS, {"task": "t"}, format="json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert (response.status_code, response.json()["code"]) == (400, "idempotency_key_missing")
    assert not Run.objects.exists() and not IdempotencyRecord.objects.exists()


@pytest.mark.parametrize("key", ["x" * 129, "has space", "semi;colon", "ümlaut", ""])
def test_malformed_key_is_400_without_any_lookup(api_client, token, key, django_assert_num_queries):
    api_client.get("/api/v1/whoami", HTTP_AUTHORIZATION=f"Bearer {token}")  # warm the key cache
    with django_assert_num_queries(0):
        response = api_client.post(RUNS, {"task": "t"}, format="json", **headers(token, key))
    assert (response.status_code, response.json()["code"]) == (400, "idempotency_key_malformed")


def test_replay_returns_the_stored_response_and_makes_no_second_row(api_client, token):
    first = api_client.post(RUNS, {"task": "nightly"}, format="json", **headers(token, "retry-1"))
    again = api_client.post(RUNS, {"task": "nightly"}, format="json", **headers(token, "retry-1"))
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Run.objects.count() == 1


def test_same_key_different_body_is_422_and_the_original_stands(api_client, token):
    first = api_client.post(RUNS, {"task": "a"}, format="json", **headers(token, "k-422"))
    other = api_client.post(RUNS, {"task": "b"}, format="json", **headers(token, "k-422"))
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
    assert list(Run.objects.values_list("task", flat=True)) == ["a"]
    replay = api_client.post(RUNS, {"task": "a"}, format="json", **headers(token, "k-422"))
    assert replay.json() == first.json()


def test_the_body_is_compared_byte_for_byte(api_client, token):
    """A retry resends the same bytes; the same JSON written differently is a different request."""
    compact, spaced = b'{"task":"a"}', b'{"task": "a"}'
    first = api_client.post(RUNS, compact, content_type="application/json", **headers(token, "k-bytes"))
    same = api_client.post(RUNS, compact, content_type="application/json", **headers(token, "k-bytes"))
    reformatted = api_client.post(RUNS, spaced, content_type="application/json", **headers(token, "k-bytes"))
    assert (first.status_code, same.status_code, same["Idempotent-Replayed"]) == (201, 201, "true")
    assert (reformatted.status_code, reformatted.json()["code"]) == (422, "idempotency_key_reused")
    assert Run.objects.count() == 1


def test_two_agents_with_the_same_key_string_do_not_collide(api_client, db):
    one, two = issue_key(AgentFactory.create()).token, issue_key(AgentFactory.create()).token
    a = api_client.post(RUNS, {"task": "same"}, format="json", **headers(one, "shared-key"))
    b = api_client.post(RUNS, {"task": "same"}, format="json", **headers(two, "shared-key"))
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]
    assert "Idempotent-Replayed" not in b
    assert Run.objects.count() == 2


def test_failed_write_leaves_no_claim_so_a_corrected_retry_works(api_client, token):
    bad = api_client.post(RUNS, {"task": ""}, format="json", **headers(token, "k-fix"))
    assert bad.status_code == 400
    assert not IdempotencyRecord.objects.exists()
    good = api_client.post(RUNS, {"task": "fixed"}, format="json", **headers(token, "k-fix"))
    assert good.status_code == 201


def test_expired_records_are_reaped_and_the_key_then_works_as_new(api_client, token):
    api_client.post(RUNS, {"task": "old"}, format="json", **headers(token, "k-old"))
    IdempotencyRecord.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert idempotency_records_reap(now=timezone.now(), batch_size=100) == 1
    fresh = api_client.post(RUNS, {"task": "old"}, format="json", **headers(token, "k-old"))
    assert fresh.status_code == 201 and "Idempotent-Replayed" not in fresh
    assert Run.objects.count() == 2


def test_an_expired_but_unreaped_record_is_taken_over(api_client, token):
    api_client.post(RUNS, {"task": "x"}, format="json", **headers(token, "k-exp"))
    IdempotencyRecord.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    fresh = api_client.post(RUNS, {"task": "y"}, format="json", **headers(token, "k-exp"))
    assert fresh.status_code == 201 and Run.objects.count() == 2


def test_stored_bodies_are_sanitized():
    token = "mmk_" + "a" * 12 + "_" + "b" * 38
    assert sanitize({"api_key": "x", "nested": [{"note": f"leaked {token}"}], "ok": 1}) == {
        "api_key": "[redacted]", "nested": [{"note": "leaked [redacted]"}], "ok": 1}
    # NUL (which jsonb cannot store) in keys and text; keys that are not text; the same key again.
    assert sanitize({"a\x00b": "c\x00d", "Secret": {"x": 1}, 1: "one", None: "none"}) == {
        "a\\u0000b": "c\\u0000d", "Secret": "[redacted]", "1": "one", "null": "none"}
    assert sanitize([{"Secret": 2, "token_hint": f"mmk_\x00{token}"}]) == [
        {"Secret": "[redacted]", "token_hint": "mmk_\\u0000[redacted]"}]


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_identical_requests_have_exactly_one_effect():
    from rest_framework.test import APIClient

    token = issue_key(scopes=["tasks:write"]).token
    key = uuid.uuid4().hex
    responses = at_once(20, lambda: APIClient().post(RUNS, {"task": "once"}, format="json", **headers(token, key)))
    statuses, bodies = [r.status_code for r in responses], [r.json() for r in responses]
    assert Run.objects.count() == 1
    assert set(statuses) <= {201, 409} and 500 not in statuses and statuses.count(201) >= 1
    run_id = str(Run.objects.get().pk)
    assert all(b["id"] == run_id for s, b in zip(statuses, bodies, strict=True) if s == 201)
    assert all(b["code"] == "idempotency_in_flight" for s, b in zip(statuses, bodies, strict=True) if s == 409)


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_a_failing_request_get_its_400_or_409_never_500(monkeypatch):
    """Issue 8, item 5: a failed original deletes its claim; a concurrent retry that saw the claim
    conflict and then found it gone used to answer 500 (IdempotencyRecord.DoesNotExist)."""
    from rest_framework.test import APIClient

    # A duplicate waits for the claim in flight (claim and effect share one transaction), so the 16
    # threads queue behind each other's claims. Sharing one GIL on a slow host, the last can wait past
    # the 2 s lock timeout and get 503 `database_timeout` (seen once in CI): that is the harness, not
    # the race this test is about. The threads' own connections get a lock timeout the queue stays
    # under (a later -c wins).
    options = connections.settings["default"]["OPTIONS"]
    monkeypatch.setitem(options, "options", options["options"] + " -c lock_timeout=30000")

    token = issue_key(scopes=["tasks:write"]).token
    threads_per_round, rounds = 16, 25
    outcomes: list[tuple[int, str]] = []

    def worker(barrier: threading.Barrier, key: str) -> None:
        client = APIClient(raise_request_exception=False)  # a 500 is an outcome to count, not a crash
        try:
            barrier.wait()
            response = client.post(RUNS, {"task": ""}, format="json", **headers(token, key))
            outcomes.append((response.status_code, response.json().get("code", "")))
        finally:
            connections.close_all()

    for _ in range(rounds):
        barrier, key = threading.Barrier(threads_per_round), uuid.uuid4().hex
        threads = [threading.Thread(target=worker, args=(barrier, key)) for _ in range(threads_per_round)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert len(outcomes) == threads_per_round * rounds
    assert set(outcomes) <= {(400, "validation_error"), (409, "idempotency_in_flight")}, sorted(set(outcomes))
    assert (400, "validation_error") in outcomes
    assert not Run.objects.exists() and not IdempotencyRecord.objects.exists()


class _Owner:
    agent_id = None
    key_pk = 424242


def _wait_until_blocked_on_a_lock(timeout: float = 10.0) -> None:
    """Until some other session waits on a lock (the duplicate's claim on the unique index)."""
    import time

    deadline = time.monotonic() + timeout
    with connections["default"].cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND datname = current_database()")
            if cursor.fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError("the duplicate never waited on the first request's claim")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("first_fails", [False, True])
def test_a_concurrent_duplicate_waits_for_the_first_then_replays_or_runs_itself(first_fails):
    """Issue 10: claim, effect and stored response are one transaction, so a duplicate's claim waits
    on the first request's uncommitted one: it replays the first's response when that commits, and
    runs itself when the first failed (its rollback took the claim with it). No 409 either way."""
    from apps.gateway.errors import InvalidInput
    from apps.gateway.idempotency import Outcome, idempotent

    release, key, effects = threading.Event(), uuid.uuid4().hex, []
    results: dict[str, Outcome | Exception] = {}

    def first_run():
        effects.append("first")
        assert release.wait(10)
        if first_fails:
            raise InvalidInput("failed on purpose", code="validation_error")
        return 201, {"by": "first"}

    def call(name, run):
        try:
            results[name] = idempotent(principal=_Owner(), key=key, operation="Test", request=b"same", run=run)
        except Exception as error:  # noqa: BLE001  # the outcome to assert on
            results[name] = error
        finally:
            connections.close_all()

    first = threading.Thread(target=call, args=("first", first_run))
    first.start()
    while not effects:  # the first has claimed and is running
        threading.Event().wait(0.005)
    def second_run():
        effects.append("second")
        return 201, {"by": "second"}

    second = threading.Thread(target=call, args=("second", second_run))
    second.start()
    _wait_until_blocked_on_a_lock()
    release.set()
    first.join(10)
    second.join(10)

    second_outcome = results["second"]
    assert isinstance(second_outcome, Outcome), second_outcome
    if first_fails:
        assert isinstance(results["first"], InvalidInput)
        assert (second_outcome.body, second_outcome.replayed) == ({"by": "second"}, False)
        assert effects == ["first", "second"]
    else:
        first_outcome = results["first"]
        assert isinstance(first_outcome, Outcome), first_outcome
        assert (first_outcome.body, first_outcome.replayed) == ({"by": "first"}, False)
        assert (second_outcome.status, second_outcome.body, second_outcome.replayed) == (201, {"by": "first"}, True)
        assert effects == ["first"]
    assert IdempotencyRecord.objects.get(key=key).response_body == second_outcome.body
