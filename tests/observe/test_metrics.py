"""/metrics: who may read it, and that the counters move with the requests served (in process;
tests/observe/test_metrics_processes.py proves the sums across gunicorn workers)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from apps.policy.models import Reservation
from tests.factories import issue_key, make_cap, make_price
from tests.observe.metrics_text import value

pytestmark = pytest.mark.django_db

METRICS_TOKEN = "metrics-token-for-tests-0123456789abcdef"  # noqa: S105  # test-only value
PUBLIC = "203.0.113.7"


def scrape(client, **extra) -> str:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


@override_settings(METRICS_TOKEN=METRICS_TOKEN)
def test_metrics_are_hidden_from_everyone_but_loopback_and_the_token_holder(client):
    assert client.get("/metrics", REMOTE_ADDR=PUBLIC).status_code == 404
    assert client.get("/metrics", REMOTE_ADDR=PUBLIC, HTTP_AUTHORIZATION="Bearer wrong").status_code == 404
    assert client.get("/metrics", REMOTE_ADDR=PUBLIC, HTTP_AUTHORIZATION=f"Basic {METRICS_TOKEN}").status_code == 404
    # Relayed by the local proxy for a public client: the client is public, not loopback.
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=PUBLIC).status_code == 404
    assert "modeloman_requests_total" in scrape(client, REMOTE_ADDR=PUBLIC,
                                                HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert "modeloman_requests_total" in scrape(client, REMOTE_ADDR="127.0.0.1")
    assert "modeloman_requests_total" in scrape(client, REMOTE_ADDR="::1")


@override_settings(METRICS_TOKEN="")
def test_without_a_configured_token_no_token_opens_it(client):
    assert client.get("/metrics", REMOTE_ADDR=PUBLIC, HTTP_AUTHORIZATION="Bearer ").status_code == 404


def test_counters_move_with_requests_admissions_auth_failures_and_idempotency(
        client, api_client, bearer, django_capture_on_commit_callbacks):
    make_price("gpt-test", input_per_mtok="10")
    token = issue_key(scopes=["tasks:write"]).token
    cap = make_cap(limit="15")
    before = scrape(client)
    admit = {"model": "gpt-test", "estimated_input_tokens": 1_000_000, "estimated_output_tokens": 0}

    assert api_client.get("/api/v1/whoami", **bearer(token)).status_code == 200
    mistyped = token[:-1] + ("x" if token[-1] != "x" else "y")  # never the token itself
    assert api_client.get("/api/v1/whoami", **bearer(mistyped)).status_code == 401
    assert api_client.get("/api/v1/whoami", HTTP_AUTHORIZATION="Basic abc").status_code == 401
    with django_capture_on_commit_callbacks(execute=True):  # decisions count once committed
        first = api_client.post("/api/v1/admissions", admit, format="json", **bearer(token, "admit-1"))
        replay = api_client.post("/api/v1/admissions", admit, format="json", **bearer(token, "admit-1"))
        reused = api_client.post("/api/v1/admissions", {**admit, "model": "other"}, format="json",
                                 **bearer(token, "admit-1"))
        denied = api_client.post("/api/v1/admissions", admit, format="json", **bearer(token))
    assert first.json()["allowed"] is True and replay.headers["Idempotent-Replayed"] == "true"
    assert reused.status_code == 422 and denied.json()["reasons"] == [f"cap_exceeded:{cap.pk}"]
    assert Reservation.objects.count() == 1

    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("modeloman_requests_total", transport="rest", operation="WhoAmI", status="200") == 1
    assert moved("modeloman_requests_total", transport="rest", operation="WhoAmI", status="401") == 2
    assert moved("modeloman_requests_total", transport="rest", operation="Admit", status="200") == 3
    assert moved("modeloman_requests_total", transport="rest", operation="Admit", status="422") == 1
    assert moved("modeloman_requests_total", transport="rest", operation="metrics", status="200") == 1
    assert moved("modeloman_request_duration_seconds_count", transport="rest", operation="Admit") == 4
    assert moved("modeloman_admission_decisions_total", outcome="allowed", reason="none") == 1
    assert moved("modeloman_admission_decisions_total", outcome="denied", reason="cap_exceeded") == 1
    assert moved("modeloman_auth_failures_total", reason="token_invalid") + moved(
        "modeloman_auth_failures_total", reason="token_malformed") == 2
    assert moved("modeloman_auth_failures_total", reason="token_malformed") >= 1  # the Basic scheme
    assert moved("modeloman_idempotency_replays_total", operation="Admit") == 1
    assert moved("modeloman_idempotency_conflicts_total", operation="Admit", code="idempotency_key_reused") == 1
    # Not a label anywhere: key ids and cap ids would make the series unbounded.
    assert token.split("_")[1] not in after and f"cap_exceeded:{cap.pk}" not in after


def test_ingest_rows_count_committed_rows_only(client, api_client, bearer, django_capture_on_commit_callbacks):
    token = issue_key(scopes=["telemetry:write"]).token
    before = scrape(client)
    attempt = {"model": "gpt-test", "prompt_name": "p", "prompt_version": "1", "success": True,
               "input_tokens": 10, "output_tokens": 5, "latency_ms": 100}
    with django_capture_on_commit_callbacks(execute=True):
        ok = api_client.post("/api/v1/attempts", {"attempts": [attempt, attempt, attempt]}, format="json",
                             **bearer(token))
        bad = api_client.post("/api/v1/attempts", {"attempts": [attempt, {**attempt, "input_tokens": -1}]},
                              format="json", **bearer(token))
    assert ok.status_code == 201, ok.json()
    assert bad.status_code == 400
    after = scrape(client)
    assert value(after, "modeloman_ingest_rows_total", table="prompt_attempts") - value(
        before, "modeloman_ingest_rows_total", table="prompt_attempts") == 3


@override_settings(METRICS_ENABLED=False)
def test_metrics_disabled_is_a_404(client):
    assert client.get("/metrics").status_code == 404
