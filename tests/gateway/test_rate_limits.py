"""Rate limits (issue 13, SPEC §9) as agents and the public meet them over REST: per key, per
client address, per rate class; failed authentications; the shared cache going away."""

from __future__ import annotations

import logging
import random
import subprocess
import time
import uuid

import pytest
import redis
from django.test import override_settings
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.gateway import ratelimits
from apps.gateway.models import IdempotencyRecord
from apps.keys import services, tokens
from apps.keys.models import ApiKey
from apps.telemetry.models import Run
from tests.factories import TEST_ACTOR, issue_key
from tests.observe.metrics_text import value as metric_value
from tests.processes import free_port

pytestmark = pytest.mark.django_db

WHOAMI, RUNS, LEADERBOARD = "/api/v1/whoami", "/api/v1/runs", "/api/v1/leaderboard"


def address() -> str:
    """A client address no other test (or earlier run, within the window) has used; not a trusted proxy."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"  # noqa: S311


def fresh_window(group: str, rate: str, *buckets: str, need: float = 10) -> None:
    """Wait, if need be, until every bucket's window has at least `need` seconds left, so a test's
    calls all fall into one window per bucket (django-ratelimit windows are fixed, and each bucket's
    is offset by a hash of its name: waiting for one bucket's next window can bring another's end
    near, so all are checked together)."""
    while True:
        usages = [ratelimits._usage(group, rate, bucket, increment=False) for bucket in buckets]
        assert None not in usages, "the rate-limit cache is unreachable"
        soonest = min(usage.reset for usage in usages if usage is not None)
        if soonest >= need:
            return
        time.sleep(soonest + 0.5)


def whoami(client, token: str, ip: str):
    return client.get(WHOAMI, HTTP_AUTHORIZATION=f"Bearer {token}", REMOTE_ADDR=ip)


def start_run(client, token: str, ip: str):
    return client.post(RUNS, {"task": "t"}, content_type="application/json", REMOTE_ADDR=ip,
                       HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)


@override_settings(RATE_LIMIT_GET="10/m")
def test_the_eleventh_call_in_a_ten_per_minute_window_is_refused_with_retry_after(client):
    issued, ip = issue_key(), address()
    fresh_window("gateway:get", "10/m", f"key:{issued.api_key.key_id}")
    assert [whoami(client, issued.token, ip).status_code for _ in range(10)] == [200] * 10
    response = whoami(client, issued.token, ip)
    assert response.status_code == 429
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "rate_limited"
    assert 1 <= int(response["Retry-After"]) <= 60
    assert (response["RateLimit-Limit"], response["RateLimit-Remaining"]) == ("10", "0")
    assert response["RateLimit-Reset"] == response["Retry-After"]


@override_settings(RATE_LIMIT_GET="10/m", RATE_LIMIT_MUTATION="3/m")
def test_writes_have_their_own_limit_and_a_refused_write_writes_nothing(client):
    issued, ip = issue_key(scopes=("tasks:write",)), address()
    fresh_window("gateway:mutation", "3/m", f"key:{issued.api_key.key_id}")
    assert [start_run(client, issued.token, ip).status_code for _ in range(3)] == [201] * 3
    runs, records = Run.objects.count(), IdempotencyRecord.objects.count()
    refused = start_run(client, issued.token, ip)
    assert (refused.status_code, refused.json()["code"]) == (429, "rate_limited")
    assert refused["RateLimit-Limit"] == "3"
    assert (Run.objects.count(), IdempotencyRecord.objects.count()) == (runs, records)
    assert whoami(client, issued.token, ip).status_code == 200  # reads count against the GET limit


@override_settings(RATE_LIMIT_GET="10/m")
def test_two_agents_behind_one_address_have_separate_budgets(client):
    first, second, ip = issue_key(), issue_key(), address()
    fresh_window("gateway:get", "10/m", f"key:{first.api_key.key_id}", f"key:{second.api_key.key_id}")
    assert [whoami(client, first.token, ip).status_code for _ in range(11)][-1] == 429
    assert [whoami(client, second.token, ip).status_code for _ in range(10)] == [200] * 10


@override_settings(RATE_LIMIT_GET="10/m")
def test_forwarded_for_from_an_untrusted_peer_does_not_change_the_clients_identity(client):
    peer = address()
    fresh_window("gateway:get", "10/m", f"ip:{peer}")
    statuses = [client.get(LEADERBOARD, REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=address()).status_code
                for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    # Through the trusted proxy (loopback), each forwarded client has its own budget.
    proxied = address()
    fresh_window("gateway:get", "10/m", f"ip:{proxied}")
    assert client.get(LEADERBOARD, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=proxied).status_code == 200


@override_settings(RATE_LIMIT_GET="10/m")
def test_public_pages_and_health_are_limited_per_address():
    from django.test import Client

    client, ip = Client(), address()
    fresh_window("gateway:get", "10/m", f"ip:{ip}")
    paths = ["/", "/prompts/", "/healthz", "/suites/", "/readyz"] * 2
    assert [client.get(path, REMOTE_ADDR=ip).status_code for path in paths] == [200] * 10
    response = client.get("/healthz", REMOTE_ADDR=ip)
    assert (response.status_code, response.json()["code"]) == (429, "rate_limited")
    assert int(response["Retry-After"]) >= 1
    assert client.get("/healthz", REMOTE_ADDR=address()).status_code == 200


@override_settings(RATE_LIMIT_GET="10/m")
def test_an_operators_per_key_override_takes_effect_and_is_audited(client):
    issued, ip = issue_key(), address()
    services.api_key_set_rate_limits(actor=TEST_ACTOR, api_key=issued.api_key, rate_limit_get="20/m",
                                     rate_limit_mutation="")
    fresh_window("gateway:get", "20/m", f"key:{issued.api_key.key_id}")
    statuses = [whoami(client, issued.token, ip).status_code for _ in range(21)]
    assert statuses == [200] * 20 + [429]
    event = AuditEvent.objects.get(action="api_key.set_rate_limits", api_key=issued.api_key)
    assert event.before is not None
    assert event.after is not None
    assert (event.before["rate_limit_get"], event.after["rate_limit_get"]) == ("", "20/m")


def test_the_override_is_set_in_the_admin_validated_and_audited(client):
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_superuser("operator", "op@example.com", "correct horse battery"))
    issued = issue_key()
    changelist = reverse("admin:keys_apikey_changelist")
    form = {"action": "set_rate_limits", "_selected_action": [issued.api_key.pk], "confirm": "yes"}
    bad = client.post(changelist, {**form, "rate_limit_get": "lots", "rate_limit_mutation": ""})
    assert bad.status_code == 200 and b"count per period" in bad.content
    assert ApiKey.objects.get(pk=issued.api_key.pk).rate_limit_get == ""
    good = client.post(changelist, {**form, "rate_limit_get": "6000/m", "rate_limit_mutation": "600/m"})
    assert good.status_code == 302
    key = ApiKey.objects.get(pk=issued.api_key.pk)
    assert (key.rate_limit_get, key.rate_limit_mutation) == ("6000/m", "600/m")
    assert AuditEvent.objects.filter(action="api_key.set_rate_limits", api_key=key).count() == 1


@override_settings(RATE_LIMIT_AUTH_FAILURES="30/m")
def test_fifty_bad_tokens_from_one_address_slow_that_address_down(client, django_assert_num_queries):
    guesser, elsewhere = address(), address()
    valid = issue_key()
    fresh_window(ratelimits.AUTH_FAILURES, "30/m", f"ip:{guesser}")
    guesses = [tokens.generate()[2] for _ in range(50)]  # well-formed tokens of keys that do not exist
    statuses = [whoami(client, token, guesser).status_code for token in guesses]
    assert statuses == [401] * 30 + [429] * 20
    with django_assert_num_queries(0):  # refused before the key lookup
        refused = whoami(client, tokens.generate()[2], guesser)
    assert (refused.status_code, refused.json()["code"]) == (429, "authentication_rate_limited")
    assert int(refused["Retry-After"]) >= 1
    assert whoami(client, valid.token, guesser).status_code == 429
    assert whoami(client, valid.token, elsewhere).status_code == 200


# --- the shared cache goes away --------------------------------------------------------------------


@pytest.fixture
def own_redis():
    """A redis-server of this test's own on a free port, so that it can be stopped."""
    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",  # noqa: S607
                                "--appendonly", "no"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port).ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield port, process
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_with_the_cache_down_writes_fail_closed_and_reads_stay_up(client, own_redis, monkeypatch, caplog):
    port, process = own_redis
    cache = {"default": {"BACKEND": "modeloman.cache.RedisCache",
                         "LOCATION": f"redis://127.0.0.1:{port}/0",
                         "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}}}
    monkeypatch.setattr(ratelimits, "_last_logged", {})  # this test sees the first message of the interval
    issued, ip = issue_key(scopes=("tasks:write",)), address()
    with override_settings(CACHES=cache):
        assert start_run(client, issued.token, ip).status_code == 201
        process.terminate()
        process.wait(timeout=10)
        before = ratelimits.counts()
        scraped_before = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
        runs, records = Run.objects.count(), IdempotencyRecord.objects.count()

        with caplog.at_level(logging.WARNING, logger="apps.gateway.ratelimits"):
            refused = [start_run(client, issued.token, ip) for _ in range(3)]
        assert [(r.status_code, r.json()["code"]) for r in refused] == [(503, "rate_limit_unavailable")] * 3
        assert refused[0]["Retry-After"] == "1"
        assert (Run.objects.count(), IdempotencyRecord.objects.count()) == (runs, records)
        closed_lines = [r for r in caplog.records if "writes refused" in r.getMessage()]
        assert len(closed_lines) == 1  # logged once per interval, not per request

        assert client.get("/healthz", REMOTE_ADDR=ip).status_code == 200
        assert client.get(LEADERBOARD, REMOTE_ADDR=ip).status_code == 200
        assert client.get("/", REMOTE_ADDR=ip).status_code == 200
        assert whoami(client, issued.token, ip).status_code == 200  # private reads fail open too
        # A failed authentication is still a 401, but goes uncounted: recorded as such, not silently.
        assert whoami(client, tokens.generate()[2], address()).status_code == 401
        after = ratelimits.counts()
        scraped_after = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()

    def moved(outcome: str, limit: str) -> int:
        return after.get((outcome, limit), 0) - before.get((outcome, limit), 0)

    assert moved(ratelimits.FAIL_CLOSED, "mutation") == 3
    assert moved(ratelimits.FAIL_OPEN, "get") == 4
    assert moved(ratelimits.FAIL_OPEN, ratelimits.AUTH_FAILURES) == 1

    def scraped(name: str) -> float:  # what an operator's Prometheus sees
        return metric_value(scraped_after, name) - metric_value(scraped_before, name)

    assert scraped("modeloman_rate_limit_fail_closed_total") == 3
    assert scraped("modeloman_rate_limit_fail_open_total") == 5


def test_django_ratelimits_own_exception_is_a_429_not_a_403():
    from django_ratelimit.exceptions import Ratelimited

    from apps.gateway.rest.problems import operational_failure, problem_response

    failure = operational_failure(Ratelimited())
    assert failure is not None
    response = problem_response(failure)
    assert response.status_code == 429
    assert response["Content-Type"] == "application/problem+json"


def test_every_operation_has_a_rate_class_in_the_access_table():
    from apps.gateway.access import OPERATIONS, RateClass

    for operation in OPERATIONS.values():
        assert operation.rate is (RateClass.MUTATION if operation.is_write else RateClass.GET), operation.name


def test_the_shared_cache_counts_in_one_round_trip_what_django_ratelimit_counts_in_two():
    """modeloman.cache.RedisCache.count: a new counter starts at 0 with the window's expiry; each call
    adds one; reading does not. Its key is django-ratelimit's, so get_usage reads the same count."""
    from django.core.cache import cache
    from django_ratelimit.core import get_usage

    bucket = f"key:{uuid.uuid4().hex}"
    first = ratelimits._usage("gateway:test", "5/m", bucket, increment=True)
    assert first is not None and (first.count, first.limit) == (1, 5)
    assert ratelimits._usage("gateway:test", "5/m", bucket, increment=True).count == 2  # type: ignore[union-attr]
    assert ratelimits._usage("gateway:test", "5/m", bucket, increment=False).count == 2  # type: ignore[union-attr]
    library = get_usage(None, group="gateway:test", key=lambda _g, _r: bucket, rate="5/m", increment=True)
    assert library is not None and library["count"] == 3  # the library's own counting continues ours
    assert ratelimits._usage("gateway:test", "5/m", bucket, increment=False).count == 3  # type: ignore[union-attr]

    client = redis.Redis.from_url(cache._cache._servers[0])  # type: ignore[attr-defined]  # Django's own client
    ttls = [int(client.ttl(k)) for k in client.keys("*rl:*")]  # type: ignore[arg-type,union-attr]  # sync client
    assert ttls and all(0 < ttl <= 60 + 5 for ttl in ttls)  # the window plus django-ratelimit's fudge
