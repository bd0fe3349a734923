"""Who may loosen what (issue 8, item 2), tested over REST: status codes, rows, audit rows.

An agent's `policy:write` key may make things stricter anywhere it can see and may loosen or
delete only caps it created itself; loosening anything else is operator-only. A quarantined
agent reads and reports telemetry, and nothing else.
"""

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.gateway.errors import Conflict, Forbidden
from apps.keys import services as key_services
from apps.keys.models import Agent
from apps.policy import services
from apps.policy.models import Policy, PolicyCap
from tests.factories import TEST_ACTOR, AgentFactory, issue_key, make_cap, make_price

pytestmark = pytest.mark.django_db
POLICY, CAPS = "/api/v1/policy", "/api/v1/policy/caps"
WRITER_SCOPES = ["policy:read", "policy:write", "tasks:write", "telemetry:write"]


def cap_row(cap_id: int) -> tuple:
    return PolicyCap.objects.filter(pk=cap_id).values_list("limit", "enabled", "mode", "window", "model").get()


def key_audit_rows() -> int:
    return AuditEvent.objects.filter(actor_type="key").count()


# --- caps -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "fields"), [
    ({"limit": "11"}, ["limit"]),
    ({"enabled": False}, ["enabled"]),
    ({"mode": "dry_run"}, ["mode"]),
    ({"window": "hour"}, ["window"]),
    ({"model": "gpt-test"}, ["model"]),
    ({"limit": "20", "mode": "dry_run"}, ["limit", "mode"]),
])
def test_an_agent_cannot_loosen_a_cap_an_operator_set(api_client, bearer, change, fields):
    agent = AgentFactory.create()
    token = issue_key(agent, scopes=WRITER_SCOPES).token
    cap = make_cap(subject=agent.project, metric="tokens", window="day", limit="10")
    before, audit_before = cap_row(cap.pk), key_audit_rows()

    body = {"metric": "tokens", "window": "day", "limit": "10", **change}
    response = api_client.put(f"{CAPS}/{cap.pk}", body, format="json", **bearer(token))
    assert response.status_code == 403
    assert (response.json()["code"], response.json()["fields"]) == ("cap_loosening_requires_owner", fields)
    deleted = api_client.delete(f"{CAPS}/{cap.pk}", **bearer(token))
    assert (deleted.status_code, deleted.json()["code"]) == (403, "cap_delete_requires_owner")
    assert cap_row(cap.pk) == before and key_audit_rows() == audit_before


def test_an_agent_can_tighten_an_operator_cap_and_that_is_audited_as_its_key(api_client, bearer):
    agent = AgentFactory.create()
    issued = issue_key(agent, scopes=WRITER_SCOPES)
    cap = make_cap(subject=agent.project, metric="tokens", window="day", limit="10", mode="dry_run")
    PolicyCap.objects.filter(pk=cap.pk).update(enabled=False)

    body = {"metric": "tokens", "window": "day", "limit": "4", "mode": "enforce", "enabled": True}
    response = api_client.put(f"{CAPS}/{cap.pk}", body, format="json", **bearer(issued.token))
    assert response.status_code == 200
    assert cap_row(cap.pk)[:3] == (4, True, "enforce")
    event = AuditEvent.objects.get(action="cap.update", target_id=str(cap.pk))
    assert event.before is not None
    assert event.after is not None
    assert (event.actor_label, event.before["limit"], event.after["limit"]) == (
        f"key:{issued.api_key.key_id}", "10.000000", "4.000000")


def test_caps_record_their_creator_and_only_the_creating_agent_may_loosen_or_delete_them(api_client, bearer):
    agent = AgentFactory.create()
    sibling = AgentFactory.create(project=agent.project)
    mine = issue_key(agent, scopes=WRITER_SCOPES)
    my_other_key = issue_key(agent, scopes=WRITER_SCOPES)
    theirs = issue_key(sibling, scopes=WRITER_SCOPES).token
    body = {"subject": "project", "metric": "cost_usd", "window": "day", "limit": "5"}
    created = api_client.post(CAPS, body, format="json", **bearer(mine.token))
    assert created.status_code == 201
    cap = PolicyCap.objects.get(pk=created.json()["id"])
    assert (cap.created_by_key_id, cap.created_by_user_id) == (mine.api_key.pk, None)

    raise_limit = {"metric": "cost_usd", "window": "day", "limit": "50"}
    refused = api_client.put(f"{CAPS}/{cap.pk}", raise_limit, format="json", **bearer(theirs))
    assert (refused.status_code, refused.json()["code"]) == (403, "cap_loosening_requires_owner")
    refused = api_client.delete(f"{CAPS}/{cap.pk}", **bearer(theirs))
    assert (refused.status_code, refused.json()["code"]) == (403, "cap_delete_requires_owner")
    assert cap_row(cap.pk)[0] == 5

    # The creating agent (through any of its keys) may loosen and delete its own cap.
    assert api_client.put(f"{CAPS}/{cap.pk}", raise_limit, format="json", **bearer(my_other_key.token)
                          ).status_code == 200
    assert cap_row(cap.pk)[0] == 50
    assert api_client.delete(f"{CAPS}/{cap.pk}", **bearer(mine.token)).status_code == 204
    assert not PolicyCap.objects.filter(pk=cap.pk).exists()
    assert AuditEvent.objects.filter(action="cap.delete", target_id=str(cap.pk),
                                     actor_label=f"key:{mine.api_key.key_id}").exists()


def test_caps_made_by_an_operator_in_the_admin_record_the_staff_user(client):
    user = User.objects.create_superuser("operator", "op@example.com", "correct horse battery")
    client.force_login(user)
    response = client.post(reverse("admin:policy_policycap_add"), {
        "subject_type": "global", "metric": "tokens", "window": "day", "limit": "7", "model": "",
        "mode": "enforce", "enabled": "on"})
    assert response.status_code == 302
    cap = PolicyCap.objects.get()
    assert (cap.created_by_user_id, cap.created_by_key_id) == (user.pk, None)


def test_caps_per_subject_are_bounded_and_the_list_is_paginated(api_client, bearer, settings):
    settings.MAX_CAPS_PER_SUBJECT = 3
    agent = AgentFactory.create()
    token = issue_key(agent, scopes=WRITER_SCOPES).token
    body = {"subject": "agent", "metric": "tokens", "window": "day", "limit": "5"}
    for _ in range(3):
        assert api_client.post(CAPS, body, format="json", **bearer(token)).status_code == 201
    audit_before = AuditEvent.objects.count()
    refused = api_client.post(CAPS, body, format="json", **bearer(token))
    assert (refused.status_code, refused.json()["code"]) == (409, "too_many_caps")
    assert PolicyCap.objects.filter(agent=agent).count() == 3 and AuditEvent.objects.count() == audit_before
    with pytest.raises(Conflict, match="at most 3 caps"):  # operators are bounded too
        make_cap(subject=agent)
    assert api_client.post(CAPS, {**body, "subject": "project"}, format="json", **bearer(token)).status_code == 201
    make_cap(limit="1000")  # a global one

    seen, url = [], f"{CAPS}?limit=2"
    while url:
        page = api_client.get(url, **bearer(token)).json()
        assert len(page["results"]) <= 2
        seen += [cap["id"] for cap in page["results"]]
        url = page["next"]
    assert seen == sorted(PolicyCap.objects.values_list("id", flat=True))  # 5 caps, each once, in id order
    for query in ("limit=0", "limit=", "after=", "limit=x", "limit=2&limit="):  # an empty value is no integer
        bad = api_client.get(f"{CAPS}?{query}", **bearer(token))
        assert (bad.status_code, bad.json()["code"]) == (400, "validation_error"), query
        assert set(bad.json()["errors"]) <= {"limit", "after"}, query


# --- policy ---------------------------------------------------------------------------------


@pytest.fixture
def operator_policy():
    """An operator's project policy, and a key of an agent in that project."""
    agent = AgentFactory.create()
    services.policy_set(actor=TEST_ACTOR, subject_type="project", project=agent.project, kill_switch=True,
                        reason="incident", allowed_models=["a", "b"], allow_unpriced_models=False,
                        max_tokens_per_attempt=1000, max_cost_per_attempt="2", max_concurrent_runs=4)
    return agent, issue_key(agent, scopes=WRITER_SCOPES).token


@pytest.mark.parametrize(("change", "code"), [
    ({"kill_switch": False}, "kill_switch_release_requires_operator"),
    ({"dry_run": True}, "policy_loosening_requires_operator"),
    ({"allow_unpriced_models": True}, "policy_loosening_requires_operator"),
    ({"allow_unpriced_models": None}, "policy_loosening_requires_operator"),
    ({"allowed_models": ["a", "c"]}, "policy_loosening_requires_operator"),
    ({"allowed_models": []}, "policy_loosening_requires_operator"),
    ({"max_tokens_per_attempt": 1001}, "policy_loosening_requires_operator"),
    ({"max_tokens_per_attempt": None}, "policy_loosening_requires_operator"),
    ({"max_cost_per_attempt": "2.5"}, "policy_loosening_requires_operator"),
    ({"max_concurrent_runs": None}, "policy_loosening_requires_operator"),
])
def test_an_agent_cannot_loosen_its_projects_policy(api_client, bearer, operator_policy, change, code):
    agent, token = operator_policy
    before = Policy.objects.filter(project=agent.project).values().get()
    audit_before = AuditEvent.objects.count()
    response = api_client.put(POLICY, {"subject": "project", **change}, format="json", **bearer(token))
    assert (response.status_code, response.json()["code"]) == (403, code)
    assert Policy.objects.filter(project=agent.project).values().get() == before
    assert AuditEvent.objects.count() == audit_before


def test_an_agent_can_tighten_its_projects_policy(api_client, bearer, operator_policy):
    agent, token = operator_policy
    change = {"subject": "project", "kill_switch": True, "dry_run": False, "allowed_models": ["a"],
              "allow_unpriced_models": False, "max_tokens_per_attempt": 500, "max_cost_per_attempt": "1",
              "max_concurrent_runs": 2, "reason": "narrowing"}
    assert api_client.put(POLICY, change, format="json", **bearer(token)).status_code == 200
    policy = Policy.objects.get(project=agent.project)
    assert (policy.allowed_models, policy.max_tokens_per_attempt, policy.max_concurrent_runs) == (["a"], 500, 2)
    assert AuditEvent.objects.filter(action="policy.update", actor_type="key", reason="narrowing").count() == 1


def test_an_agent_cannot_loosen_even_what_it_tightened_itself(api_client, bearer):
    token = issue_key(scopes=WRITER_SCOPES).token
    assert api_client.put(POLICY, {"subject": "agent", "max_tokens_per_attempt": 500}, format="json",
                          **bearer(token)).status_code == 200
    response = api_client.put(POLICY, {"subject": "agent", "max_tokens_per_attempt": 600}, format="json",
                              **bearer(token))
    assert (response.status_code, response.json()["code"]) == (403, "policy_loosening_requires_operator")
    assert response.json()["fields"] == ["max_tokens_per_attempt"]


def test_project_dry_run_by_an_agent_no_longer_unblocks_its_siblings(api_client, bearer):
    """The audit's reproduction: one agent's key put the whole project in dry-run."""
    make_price("gpt-test", input_per_mtok="100000")
    agent = AgentFactory.create()
    sibling = issue_key(AgentFactory.create(project=agent.project), scopes=["tasks:write"]).token
    make_cap(subject=agent.project, limit="1")
    token = issue_key(agent, scopes=WRITER_SCOPES).token
    refused = api_client.put(POLICY, {"subject": "project", "dry_run": True}, format="json", **bearer(token))
    assert refused.status_code == 403
    admission = api_client.post("/api/v1/admissions", {"model": "gpt-test", "estimated_input_tokens": 100,
                                                       "estimated_output_tokens": 0}, format="json",
                                **bearer(sibling)).json()
    assert admission["allowed"] is False


# --- quarantine -----------------------------------------------------------------------------


def test_a_quarantined_agent_reads_and_reports_telemetry_but_every_other_write_is_403(api_client, bearer):
    make_price("gpt-test")
    agent = AgentFactory.create()
    token = issue_key(agent, scopes=WRITER_SCOPES).token
    own_cap = api_client.post(CAPS, {"subject": "agent", "metric": "tokens", "window": "day", "limit": "100"},
                              format="json", **bearer(token)).json()["id"]
    run = api_client.post("/api/v1/runs", {"task": "summarize"}, format="json", **bearer(token)).json()["id"]
    agent.status = Agent.Status.QUARANTINED
    key_services.agent_save(actor=TEST_ACTOR, agent=agent)
    rows_before = (Policy.objects.count(), list(PolicyCap.objects.values_list("id", "limit")),
                   AuditEvent.objects.count())

    writes = [
        ("put", POLICY, {"subject": "agent", "kill_switch": True}),
        ("post", CAPS, {"subject": "agent", "metric": "tokens", "window": "day", "limit": "1"}),
        ("put", f"{CAPS}/{own_cap}", {"metric": "tokens", "window": "day", "limit": "1"}),
        ("delete", f"{CAPS}/{own_cap}", None),
        ("post", "/api/v1/admissions", {"model": "gpt-test", "estimated_input_tokens": 1,
                                        "estimated_output_tokens": 1}),
        ("post", "/api/v1/runs", {"task": "summarize"}),
        ("post", f"/api/v1/runs/{run}/finish", {"status": "succeeded"}),
    ]
    for method, url, body in writes:
        response = getattr(api_client, method)(url, body, format="json", **bearer(token))
        assert (response.status_code, response.json()["code"]) == (403, "agent_quarantined"), url
    assert rows_before == (Policy.objects.count(), list(PolicyCap.objects.values_list("id", "limit")),
                           AuditEvent.objects.count())

    assert api_client.get(POLICY, **bearer(token)).status_code == 200
    assert api_client.get(CAPS, **bearer(token)).status_code == 200
    assert api_client.get(f"/api/v1/runs/{run}", **bearer(token)).status_code == 200
    attempt = {"model": "gpt-test", "prompt_name": "p", "prompt_version": "v1", "success": True,
               "input_tokens": 10, "output_tokens": 5, "latency_ms": 100}
    assert api_client.post("/api/v1/attempts", attempt, format="json", **bearer(token)).status_code == 201
    assert api_client.post(f"/api/v1/runs/{run}/events", {"kind": "log", "message": "still here"}, format="json",
                           **bearer(token)).status_code == 201

    with pytest.raises(Forbidden, match="quarantined"):  # the services refuse too (a gRPC door reuses them)
        services.policy_set_for_agent(principal=_principal(token), subject="agent", kill_switch=True)


def _principal(token: str):
    from apps.gateway.auth import authenticate_token

    return authenticate_token(token)
