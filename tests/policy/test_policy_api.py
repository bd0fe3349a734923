import pytest

from apps.audit.models import AuditEvent
from apps.keys.models import Agent
from apps.policy.models import AdmissionDecision, Policy, PolicyCap, Reservation, UsageLedger
from tests.factories import AgentFactory, issue_key, make_cap, make_price

pytestmark = pytest.mark.django_db
ADMISSIONS, POLICY, CAPS = "/api/v1/admissions", "/api/v1/policy", "/api/v1/policy/caps"


def written_rows():
    return tuple(m.objects.count() for m in (AdmissionDecision, Reservation, UsageLedger, Policy, PolicyCap,
                                             AuditEvent))


def test_admission_over_rest_returns_the_documented_shape(api_client, bearer):
    make_price("gpt-test", input_per_mtok="10")
    token = issue_key(scopes=["tasks:write"]).token
    cap = make_cap(limit="25")
    body = {"model": "gpt-test", "estimated_input_tokens": 1_000_000, "estimated_output_tokens": 0}
    first = api_client.post(ADMISSIONS, body, format="json", **bearer(token))
    assert first.status_code == 200
    data = first.json()
    assert data["allowed"] is True and data["reasons"] == [] and data["reservation_id"]
    assert data["estimated_cost_usd"] == "10.000000"
    assert data["caps"] == [{
        "cap_id": cap.pk, "metric": "cost_usd", "window": "day", "window_start": data["caps"][0]["window_start"],
        "mode": "enforce", "limit": "25.000000", "used": "0.000000", "reserved": "10.000000",
        "remaining": "15.000000",
    }]
    api_client.post(ADMISSIONS, body, format="json", **bearer(token))
    third = api_client.post(ADMISSIONS, body, format="json", **bearer(token)).json()
    assert third["allowed"] is False and third["reasons"] == [f"cap_exceeded:{cap.pk}"]
    assert third["reservation_id"] is None and third["caps"][0]["remaining"] == "5.000000"


@pytest.mark.parametrize("body", [
    {"model": "gpt-test", "estimated_input_tokens": -1, "estimated_output_tokens": 0},
    {"model": "gpt-test", "estimated_input_tokens": 10**15, "estimated_output_tokens": 0},
    {"model": "gpt-test", "estimated_input_tokens": "100", "estimated_output_tokens": 0},
    {"model": "gpt-test", "estimated_input_tokens": 1.5, "estimated_output_tokens": 0},
    {"model": "gpt-test", "estimated_input_tokens": True, "estimated_output_tokens": 0},
    {"model": "gpt-test", "estimated_input_tokens": 1, "estimated_output_tokens": 0, "estimated_cost_usd": -3},
    {"model": "gpt-test", "estimated_input_tokens": 1, "estimated_output_tokens": 0, "estimated_cost_usd": "NaN"},
    {"model": "gpt-test", "estimated_input_tokens": 1, "estimated_output_tokens": 0, "estimated_cost_usd": 1e30},
    {"model": "gpt-test", "estimated_input_tokens": 1, "estimated_output_tokens": 0, "surprise": 1},
    {"model": "../../etc/passwd", "estimated_input_tokens": 1, "estimated_output_tokens": 0},
    {"model": "a" * 200, "estimated_input_tokens": 1, "estimated_output_tokens": 0},
    {"model": "", "estimated_input_tokens": 1, "estimated_output_tokens": 0},
    {"model": ["gpt-test"], "estimated_input_tokens": 1, "estimated_output_tokens": 0},
    {"estimated_input_tokens": 1, "estimated_output_tokens": 0},
    [1, 2, 3],
])
def test_bad_admission_input_is_400_and_writes_nothing(api_client, bearer, body):
    make_price("gpt-test")
    make_cap(limit="100")
    token = issue_key(scopes=["tasks:write"]).token
    before = written_rows()
    response = api_client.post(ADMISSIONS, body, format="json", **bearer(token))
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "validation_error"
    assert written_rows() == before


def test_malformed_json_is_a_400_problem(api_client, bearer):
    token = issue_key(scopes=["tasks:write"]).token
    response = api_client.generic("POST", ADMISSIONS, "{not json", content_type="application/json",
                                  **bearer(token))
    assert (response.status_code, response.json()["code"]) == (400, "malformed_request")


def test_scopes_gate_policy_reads_and_writes(api_client, bearer):
    agent = AgentFactory.create()
    reader = issue_key(agent, scopes=["policy:read"]).token
    tasks_only = issue_key(agent, scopes=["tasks:write"]).token
    writer = issue_key(agent, scopes=["policy:read", "policy:write"]).token
    update = {"subject": "agent", "max_tokens_per_attempt": 5000}
    cap = {"subject": "agent", "metric": "tokens", "window": "hour", "limit": "1000"}

    assert api_client.get(POLICY, **bearer(reader)).status_code == 200
    assert api_client.get(CAPS, **bearer(reader)).status_code == 200
    for token in (reader, tasks_only):
        put = api_client.put(POLICY, update, format="json", **bearer(token))
        assert (put.status_code, put.json()["code"]) == (403, "missing_scope")
        post = api_client.post(CAPS, cap, format="json", **bearer(token))
        assert (post.status_code, post.json()["code"]) == (403, "missing_scope")
    assert api_client.get(POLICY, **bearer(tasks_only)).status_code == 403
    assert not Policy.objects.exists() and not PolicyCap.objects.exists()

    assert api_client.put(POLICY, update, format="json", **bearer(writer)).status_code == 200
    created = api_client.post(CAPS, cap, format="json", **bearer(writer))
    assert created.status_code == 201
    effective = api_client.get(POLICY, **bearer(reader)).json()
    assert effective["effective"]["max_tokens_per_attempt"] == 5000
    assert [c["id"] for c in effective["caps"]] == [created.json()["id"]]
    by_key = AuditEvent.objects.filter(actor_label__startswith="key:", action__in=["policy.create", "cap.create"])
    assert by_key.count() == 2


def test_an_agent_cannot_see_or_change_another_projects_caps(api_client, bearer):
    mine, theirs = AgentFactory.create(), AgentFactory.create()
    writer = issue_key(mine, scopes=["policy:read", "policy:write"]).token
    foreign = make_cap(subject=theirs.project, limit="10")
    global_cap = make_cap(limit="1000")

    listed = api_client.get(CAPS, **bearer(writer)).json()
    assert [c["id"] for c in listed["results"]] == [global_cap.pk] and listed["next"] is None
    body = {"metric": "cost_usd", "window": "day", "limit": "999999"}
    for method in ("put", "delete"):
        response = getattr(api_client, method)(f"{CAPS}/{foreign.pk}", body, format="json", **bearer(writer))
        assert (response.status_code, response.json()["code"]) == (404, "cap_not_found")
    response = api_client.put(f"{CAPS}/{global_cap.pk}", body, format="json", **bearer(writer))
    assert (response.status_code, response.json()["code"]) == (403, "global_policy_is_operator_only")
    assert PolicyCap.objects.get(pk=foreign.pk).limit == 10
    assert PolicyCap.objects.get(pk=global_cap.pk).limit == 1000


def test_an_agent_updates_and_deletes_its_own_cap_over_rest(api_client, bearer):
    agent = AgentFactory.create()
    writer = issue_key(agent, scopes=["policy:write"]).token
    created = api_client.post(CAPS, {"subject": "project", "metric": "cost_usd", "window": "day", "limit": "10"},
                              format="json", **bearer(writer))
    cap_id = created.json()["id"]
    body = {"metric": "cost_usd", "window": "week", "limit": "20", "mode": "dry_run"}
    updated = api_client.put(f"{CAPS}/{cap_id}", body, format="json", **bearer(writer))
    assert updated.status_code == 200 and updated.json()["window"] == "week"
    assert api_client.delete(f"{CAPS}/{cap_id}", **bearer(writer)).status_code == 204
    assert not PolicyCap.objects.filter(pk=cap_id).exists()
    assert AuditEvent.objects.filter(action="cap.delete", target_id=str(cap_id)).exists()


def test_agents_can_engage_but_not_release_a_kill_switch(api_client, bearer):
    agent = AgentFactory.create()
    writer = issue_key(agent, scopes=["policy:write"]).token
    engage = api_client.put(POLICY, {"subject": "project", "kill_switch": True, "reason": "loop"}, format="json",
                            **bearer(writer))
    assert engage.status_code == 200
    release = api_client.put(POLICY, {"subject": "project", "kill_switch": False}, format="json", **bearer(writer))
    assert (release.status_code, release.json()["code"]) == (403, "kill_switch_release_requires_operator")
    assert Policy.objects.get(project=agent.project).kill_switch is True


@pytest.mark.parametrize("body", [
    {"subject": "global", "dry_run": True},
    {"subject": "agent", "max_tokens_per_attempt": 0},
    {"subject": "agent", "max_cost_per_attempt": "-1"},
    {"subject": "agent", "allowed_models": ["ok", "not ok!"]},
    {"subject": "agent", "dry_run": "yes"},
    {"subject": "agent", "unknown": 1},
    {"dry_run": True},
])
def test_bad_policy_input_is_400_and_writes_nothing(api_client, bearer, body):
    writer = issue_key(scopes=["policy:write"]).token
    before = written_rows()
    response = api_client.put(POLICY, body, format="json", **bearer(writer))
    assert (response.status_code, response.json()["code"]) == (400, "validation_error")
    assert written_rows() == before


@pytest.mark.parametrize("body", [
    {"subject": "agent", "metric": "dollars", "window": "day", "limit": "1"},
    {"subject": "agent", "metric": "tokens", "window": "fortnight", "limit": "1"},
    {"subject": "agent", "metric": "tokens", "window": "day", "limit": "0"},
    {"subject": "agent", "metric": "tokens", "window": "day", "limit": "1e20"},
    {"subject": "agent", "metric": "tokens", "window": "day", "limit": "1", "model": "bad model"},
    {"subject": "agent", "metric": "tokens", "window": "day", "limit": "1", "mode": "maybe"},
    {"subject": "agent", "metric": "tokens", "window": "day"},
])
def test_bad_cap_input_is_400_and_writes_nothing(api_client, bearer, body):
    writer = issue_key(scopes=["policy:write"]).token
    before = written_rows()
    response = api_client.post(CAPS, body, format="json", **bearer(writer))
    assert (response.status_code, response.json()["code"]) == (400, "validation_error")
    assert written_rows() == before


def test_operator_keys_without_an_agent_get_a_clear_403(api_client, bearer):
    token = issue_key(scopes=["policy:read"]).token
    from apps.keys.models import ApiKey

    ApiKey.objects.all().update(agent=None)
    from modeloman.invalidation import clear_local_caches

    clear_local_caches()
    response = api_client.get(POLICY, **bearer(token))
    assert (response.status_code, response.json()["code"]) == (403, "not_an_agent")
    assert Agent.objects.count() == 1
