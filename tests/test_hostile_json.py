"""Hostile JSON on every JSON endpoint (issue 8, items 7 and 14): a clear 400, nothing written."""

import json

import pytest

from apps.audit.models import AuditEvent
from apps.gateway.models import IdempotencyRecord
from apps.policy.models import AdmissionDecision, Policy, PolicyCap, Reservation
from apps.telemetry.models import Run
from tests.factories import AgentFactory, issue_key, make_cap


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.fixture
def agent_setup(db):
    agent = AgentFactory.create()
    token = issue_key(agent, scopes=["tasks:write", "telemetry:write", "policy:write", "policy:read"]).token
    run = Run.objects.create(agent=agent, project=agent.project, task="t")
    cap = make_cap(subject=agent, metric="tokens", limit="1000")
    return token, run, cap


def endpoints(run, cap) -> list[tuple[str, str, bytes]]:
    """(method, path, a valid body's prefix into which a hostile value is spliced)."""
    return [
        ("post", "/api/v1/admissions",
         b'{"model": "m", "estimated_input_tokens": 1, "estimated_output_tokens": 1, "x": '),
        ("post", "/api/v1/runs", b'{"task": "t", "metadata": {"a": '),
        ("post", f"/api/v1/runs/{run.pk}/finish", b'{"status": "succeeded", "metadata": {"a": '),
        ("put", "/api/v1/policy", b'{"subject": "agent", "allowed_models": '),
        ("post", "/api/v1/policy/caps", b'{"subject": "agent", "metric": "tokens", "window": "day", "limit": '),
        ("put", f"/api/v1/policy/caps/{cap.pk}", b'{"metric": "tokens", "window": "day", "limit": '),
    ]


def snapshot() -> tuple:
    return (Run.objects.filter(status="running").count(), Run.objects.count(), PolicyCap.objects.count(),
            Policy.objects.count(), Reservation.objects.count(), AdmissionDecision.objects.count(),
            AuditEvent.objects.count(), IdempotencyRecord.objects.count())


@pytest.mark.parametrize("depth", [600, 100_000], ids=["past-the-stack-after-decoding", "past-the-decoder"])
def test_deeply_nested_json_is_400_malformed_request_on_every_json_endpoint(api_client, bearer, agent_setup, depth):
    token, run, cap = agent_setup
    api_client.raise_request_exception = False  # a 500 must show up as a status, not stop the loop
    before = snapshot()
    answers = {}
    for method, path, prefix in endpoints(run, cap):
        body = prefix + deep(depth) + b"}" * prefix.count(b"{")
        response = getattr(api_client, method)(path, body, content_type="application/json", **bearer(token))
        answers[path] = (response.status_code, response.json().get("code"))
    assert answers == {path: (400, "malformed_request") for _, path, _ in endpoints(run, cap)}
    assert snapshot() == before


def test_nesting_within_the_limit_is_accepted(api_client, bearer, agent_setup):
    token, _, _ = agent_setup
    metadata = {"a": json.loads(deep(30))}  # 32 levels with the body and `metadata`
    response = api_client.post("/api/v1/runs", {"task": "t", "metadata": metadata}, format="json", **bearer(token))
    assert response.status_code == 201
    assert Run.objects.get(pk=response.json()["id"]).metadata == metadata


NUL_VALUES = [{"a": "x\u0000y"}, {"k\u0000": 1}, {"a": {"b": ["ok", "\u0000"]}}]


@pytest.mark.parametrize("metadata", NUL_VALUES, ids=["value", "key", "nested"])
def test_nul_in_run_metadata_is_400_naming_the_field_at_start_and_finish(api_client, bearer, agent_setup, metadata):
    token, run, _ = agent_setup
    api_client.raise_request_exception = False
    before = snapshot()
    start = api_client.post("/api/v1/runs", {"task": "t", "metadata": metadata}, format="json", **bearer(token))
    finish = api_client.post(f"/api/v1/runs/{run.pk}/finish", {"status": "failed", "metadata": metadata},
                             format="json", **bearer(token))
    for response in (start, finish):
        assert (response.status_code, response.json()["code"]) == (400, "validation_error")
        assert list(response.json()["errors"]) == ["metadata"]
    assert snapshot() == before
    run.refresh_from_db()
    assert (run.status, run.metadata) == ("running", {})


def test_nul_in_telemetry_attributes_is_400_naming_the_field(api_client, bearer, agent_setup):
    token, run, _ = agent_setup
    api_client.raise_request_exception = False
    response = api_client.post(f"/api/v1/runs/{run.pk}/events", {"kind": "k", "attributes": {"a": "\u0000"}},
                               format="json", **bearer(token))
    assert (response.status_code, response.json()["code"], response.json()["field"]) == (
        400, "invalid_item", "attributes")


@pytest.mark.django_db
def test_a_stored_idempotent_response_with_nul_is_kept_escaped_not_a_500():
    from apps.gateway.auth import authenticate_token
    from apps.gateway.idempotency import idempotent

    principal = authenticate_token(issue_key(scopes=["tasks:write"]).token)
    outcome = idempotent(principal=principal, key="nul-body", operation="StartRun", request=b'{"task": "t"}',
                         run=lambda: (201, {"note\u0000": "a\u0000b"}))
    assert outcome.status == 201
    record = IdempotencyRecord.objects.get(key="nul-body")
    assert (record.state, record.response_body) == ("completed", {"note\\u0000": "a\\u0000b"})
