import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.gateway.auth import authenticate_token
from apps.policy import ledger
from apps.policy.models import Policy, PolicyCap
from tests.factories import AgentFactory, issue_key, make_cap, make_price

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "correct horse battery"))
    return client


def test_kill_switch_from_the_agent_list_asks_for_a_reason_then_stops_admissions(operator):
    make_price("gpt-test")
    issued = issue_key()
    agent = issued.api_key.agent
    assert agent is not None
    changelist = reverse("admin:keys_agent_changelist")
    selection = {"action": "engage_kill_switch", "_selected_action": [agent.pk]}

    confirm = operator.post(changelist, selection)
    assert confirm.status_code == 200 and b"Engage kill switch" in confirm.content
    assert not Policy.objects.filter(agent=agent).exists()

    done = operator.post(changelist, {**selection, "confirm": "yes", "reason": "runaway loop"})
    assert done.status_code == 302
    policy = Policy.objects.get(agent=agent)
    assert policy.kill_switch and policy.kill_switch_reason == "runaway loop"
    event = AuditEvent.objects.get(action="policy.create", target_id=str(policy.pk))
    assert event.after is not None
    assert (event.actor_label, event.reason, event.after["kill_switch"]) == ("user:operator", "runaway loop", True)
    result = ledger.admit(principal=authenticate_token(issued.token), model="gpt-test",
                            estimated_input_tokens=1, estimated_output_tokens=1)
    assert result.reasons == ["kill_switch"]

    operator.post(changelist, {"action": "release_kill_switch", "_selected_action": [agent.pk], "confirm": "yes",
                               "reason": "fixed"})
    assert Policy.objects.get(agent=agent).kill_switch is False
    assert AuditEvent.objects.filter(action="policy.update", reason="fixed").count() == 1


def test_dry_run_switch_on_the_project_list_is_audited(operator):
    agent = AgentFactory.create()
    operator.post(reverse("admin:keys_project_changelist"), {
        "action": "dry_run_on", "_selected_action": [agent.project.pk], "confirm": "yes", "reason": "trial caps"})
    assert Policy.objects.get(project=agent.project).dry_run is True
    created = AuditEvent.objects.get(action="policy.create", reason="trial caps")
    assert created.after is not None and created.after["dry_run"] is True


def test_caps_edited_inline_on_the_project_page_go_through_the_audited_service(operator):
    agent = AgentFactory.create()
    project = agent.project
    data = {
        "slug": project.slug, "name": project.name, "public_name": "", "leaderboard_opt_in": "",
        "policy_set-TOTAL_FORMS": "0", "policy_set-INITIAL_FORMS": "0",
        "policycap_set-TOTAL_FORMS": "1", "policycap_set-INITIAL_FORMS": "0",
        "policycap_set-0-metric": "cost_usd", "policycap_set-0-window": "day", "policycap_set-0-limit": "12.5",
        "policycap_set-0-model": "", "policycap_set-0-mode": "enforce", "policycap_set-0-enabled": "on",
    }
    response = operator.post(reverse("admin:keys_project_change", args=[project.pk]), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    cap = PolicyCap.objects.get(project=project)
    assert (cap.subject_type, str(cap.limit)) == ("project", "12.500000")
    assert AuditEvent.objects.filter(action="cap.create", target_id=str(cap.pk), actor_label="user:operator").exists()


def test_decisions_list_filters_by_reason(operator):
    make_price("gpt-test", input_per_mtok="10")
    principal = authenticate_token(issue_key().token)
    cap = make_cap(limit="5")
    ledger.admit(principal=principal, model="gpt-test", estimated_input_tokens=1_000_000,
                   estimated_output_tokens=0)
    url = reverse("admin:policy_admissiondecision_changelist")
    assert f"cap_exceeded:{cap.pk}" in operator.get(url, {"reason": "cap_exceeded"}).content.decode()
    assert f"cap_exceeded:{cap.pk}" not in operator.get(url, {"reason": "kill_switch"}).content.decode()
    usage_page = operator.get(reverse("admin:policy_policycap_changelist")).content.decode()
    assert "unused" in usage_page


def test_caps_changelist_computes_usage_for_its_page_only_and_keeps_nothing_on_the_shared_admin(
        operator, monkeypatch):
    from django.contrib import admin
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from apps.policy.models import UsageLedger
    from apps.policy.windows import window_start

    caps = [make_cap(metric="tokens", limit=str(100 * (i + 1))) for i in range(3)]
    for i, cap in enumerate(caps):
        UsageLedger.objects.create(cap=cap, window_start=window_start(cap.window, timezone.now()),
                                   used=10 + i, reserved=1, limit_snapshot=cap.limit)
    model_admin = admin.site._registry[PolicyCap]
    monkeypatch.setattr(model_admin, "list_per_page", 2)
    state_before = set(vars(model_admin))

    url = reverse("admin:policy_policycap_changelist")
    with CaptureQueriesContext(connection) as queries:
        first = operator.get(url).content.decode()
    ledger_reads = [q["sql"] for q in queries if '"policy_usageledger"' in q["sql"]]
    second = operator.get(url, {"p": 2}).content.decode()

    usage = [f"{10 + i}.000000 + 1.000000 / {100 * (i + 1)}.000000" for i in range(3)]
    assert usage[0] in first and usage[1] in first and usage[2] not in first
    assert usage[2] in second and usage[0] not in second
    assert len(ledger_reads) == 1 and ledger_reads[0].count('"cap_id" =') == 2  # the page's two caps
    assert set(vars(model_admin)) == state_before  # nothing per-request on the shared instance
