"""Loosening a cap or releasing a kill switch in the admin needs a reason and is audited with
before/after; above REQUIRE_SECOND_APPROVAL_ABOVE_USD a cost cap waits for a second staff member
(issue 14). Everything through the admin's own pages, as an operator would."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.policy import services
from apps.policy.models import PendingCapChange, Policy, PolicyCap
from tests.factories import TEST_ACTOR, AgentFactory, make_cap

pytestmark = pytest.mark.django_db


def staff_client(username: str) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser(username, f"{username}@example.com", "correct horse battery"))
    return client


@pytest.fixture
def alice() -> Client:
    return staff_client("alice")


@pytest.fixture
def bob() -> Client:
    return staff_client("bob")


def cap_form(cap: PolicyCap, **changes: object) -> dict:
    data = {"subject_type": cap.subject_type, "project": cap.project_id or "", "agent": cap.agent_id or "",
            "metric": cap.metric, "window": cap.window, "limit": str(cap.limit), "model": cap.model,
            "mode": cap.mode, "enabled": "on" if cap.enabled else "", "reason": ""}
    data.update({k: str(v) for k, v in changes.items()})
    if data["enabled"] in ("False", ""):
        del data["enabled"]
    return data


def change_url(cap: PolicyCap) -> str:
    return reverse("admin:policy_policycap_change", args=[cap.pk])


def cap_audit(cap: PolicyCap):
    return AuditEvent.objects.filter(target_type="policy.policycap", target_id=str(cap.pk), action="cap.update")


@pytest.mark.parametrize("change", [{"limit": "500"}, {"enabled": ""}, {"mode": "dry_run"}, {"window": "month"}],
                         ids=["raise", "disable", "dry-run", "longer-window"])
def test_loosening_a_cap_without_a_reason_is_refused_by_the_form(alice, change):
    cap = make_cap(limit="50")
    response = alice.post(change_url(cap), cap_form(cap, **change))
    assert response.status_code == 200
    assert "Say why: this loosens the cap" in response.content.decode()
    cap.refresh_from_db()
    assert (cap.limit, cap.enabled, cap.mode, cap.window) == (Decimal(50), True, "enforce", "day")
    assert not cap_audit(cap).exists()


def test_raising_a_cap_with_a_reason_writes_one_audit_row_with_before_and_after(alice):
    cap = make_cap(limit="50")
    response = alice.post(change_url(cap), cap_form(cap, limit="80", reason="quarter-end batch"))
    assert response.status_code == 302
    cap.refresh_from_db()
    assert cap.limit == Decimal(80)
    event = cap_audit(cap).get()
    assert (event.actor_label, event.reason) == ("user:alice", "quarter-end batch")
    assert (Decimal(event.before["limit"]), Decimal(event.after["limit"])) == (Decimal(50), Decimal(80))


def test_tightening_a_cap_needs_no_reason(alice):
    cap = make_cap(limit="50")
    assert alice.post(change_url(cap), cap_form(cap, limit="20")).status_code == 302
    assert cap_audit(cap).get().reason == ""


def test_raising_an_inline_cap_on_the_project_page_needs_a_reason(alice):
    project = AgentFactory.create().project
    cap = make_cap(subject=project, limit="5")
    url = reverse("admin:keys_project_change", args=[project.pk])
    data = {
        "slug": project.slug, "name": project.name, "public_name": "", "leaderboard_opt_in": "",
        "policy_set-TOTAL_FORMS": "0", "policy_set-INITIAL_FORMS": "0",
        "policycap_set-TOTAL_FORMS": "1", "policycap_set-INITIAL_FORMS": "1",
        "policycap_set-0-id": cap.pk, "policycap_set-0-project": project.pk,
        "policycap_set-0-metric": "cost_usd", "policycap_set-0-window": "day", "policycap_set-0-limit": "9",
        "policycap_set-0-model": "", "policycap_set-0-mode": "enforce", "policycap_set-0-enabled": "on",
    }
    assert alice.post(url, data).status_code == 200
    cap.refresh_from_db()
    assert cap.limit == Decimal(5) and not cap_audit(cap).exists()

    assert alice.post(url, {**data, "policycap_set-0-reason": "launch"}).status_code == 302
    cap.refresh_from_db()
    assert cap.limit == Decimal(9) and cap_audit(cap).get().reason == "launch"


def test_releasing_a_kill_switch_without_a_reason_is_refused(alice):
    agent = AgentFactory.create()
    services.policy_set(actor=TEST_ACTOR, subject_type="agent", agent=agent, kill_switch=True, reason="runaway")
    changelist = reverse("admin:keys_agent_changelist")
    selection = {"action": "release_kill_switch", "_selected_action": [agent.pk], "confirm": "yes"}

    refused = alice.post(changelist, {**selection, "reason": "  "})
    assert refused.status_code == 200 and b"This field is required" in refused.content
    assert Policy.objects.get(agent=agent).kill_switch is True
    assert not AuditEvent.objects.filter(action="policy.update").exists()

    assert alice.post(changelist, {**selection, "reason": "loop fixed"}).status_code == 302
    event = AuditEvent.objects.get(action="policy.update")
    assert event.before is not None
    assert event.after is not None
    assert (event.before["kill_switch"], event.after["kill_switch"], event.reason) == (True, False, "loop fixed")


# --- the two-person rule ---------------------------------------------------------------------


@pytest.fixture
def threshold(settings):
    settings.REQUIRE_SECOND_APPROVAL_ABOVE_USD = Decimal(100)


def approve(client: Client, change: PendingCapChange, action: str = "approve"):
    return client.post(reverse("admin:policy_pendingcapchange_changelist"), {
        "action": action, "_selected_action": [change.pk], "confirm": "yes", "reason": "checked the budget"},
        follow=True)


def test_a_raise_above_the_threshold_waits_for_a_second_staff_member(threshold, alice, bob):
    cap = make_cap(limit="50")
    response = alice.post(change_url(cap), cap_form(cap, limit="500", reason="big eval run"))
    change = PendingCapChange.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:policy_pendingcapchange_change", args=[change.pk])
    cap.refresh_from_db()
    assert cap.limit == Decimal(50), "no effect before approval"
    assert not cap_audit(cap).exists()
    request = AuditEvent.objects.get(action="cap_change.request")
    assert request.after is not None
    assert (request.actor_label, Decimal(request.after["limit"]), request.reason) == (
        "user:alice", Decimal(500), "big eval run")

    own = approve(alice, change)
    assert "A second staff member must approve" in own.content.decode()
    cap.refresh_from_db()
    change.refresh_from_db()
    assert (cap.limit, change.state) == (Decimal(50), "pending")
    assert not AuditEvent.objects.filter(action="cap_change.approve").exists()

    assert approve(bob, change).status_code == 200
    cap.refresh_from_db()
    change.refresh_from_db()
    assert cap.limit == Decimal(500)
    assert change.decided_by is not None and (change.state, change.decided_by.username) == ("approved", "bob")
    applied = cap_audit(cap).get()
    assert applied.actor_label == "user:bob" and "alice" in applied.reason
    assert (Decimal(applied.before["limit"]), Decimal(applied.after["limit"])) == (Decimal(50), Decimal(500))
    decision = AuditEvent.objects.get(action="cap_change.approve")
    assert decision.after is not None
    assert (decision.actor_label, decision.after["state"]) == ("user:bob", "approved")

    again = approve(bob, change)
    assert "already approved" in again.content.decode()


def test_a_new_cap_above_the_threshold_is_created_only_on_approval(threshold, alice, bob):
    data = {"subject_type": "global", "project": "", "agent": "", "metric": "cost_usd", "window": "day",
            "limit": "1000", "model": "", "mode": "enforce", "enabled": "on", "reason": "fleet budget"}
    assert alice.post(reverse("admin:policy_policycap_add"), data).status_code == 302
    assert not PolicyCap.objects.exists()
    change = PendingCapChange.objects.get()
    approve(bob, change)
    cap = PolicyCap.objects.get()
    assert cap.limit == Decimal(1000)
    assert AuditEvent.objects.filter(action="cap.create", target_id=str(cap.pk), actor_label="user:bob").count() == 1


def test_disabling_a_cost_cap_counts_as_lifting_it(threshold, alice):
    cap = make_cap(limit="50")
    alice.post(change_url(cap), cap_form(cap, enabled="", reason="noisy"))
    cap.refresh_from_db()
    assert cap.enabled is True
    assert PendingCapChange.objects.get().proposed["enabled"] is False


def test_below_the_threshold_and_other_metrics_apply_at_once(threshold, alice):
    cost = make_cap(limit="50")
    tokens = make_cap(metric="tokens", limit="1000")
    alice.post(change_url(cost), cap_form(cost, limit="100", reason="a bit more"))
    alice.post(change_url(tokens), cap_form(tokens, limit="5000000", reason="long prompts"))
    cost.refresh_from_db()
    tokens.refresh_from_db()
    assert (cost.limit, tokens.limit) == (Decimal(100), Decimal(5_000_000))
    assert not PendingCapChange.objects.exists()


def test_a_rejected_change_leaves_the_cap_alone_and_the_requester_may_withdraw(threshold, alice):
    cap = make_cap(limit="50")
    alice.post(change_url(cap), cap_form(cap, limit="500", reason="oops"))
    change = PendingCapChange.objects.get()
    approve(alice, change, action="reject")
    change.refresh_from_db()
    cap.refresh_from_db()
    assert (change.state, cap.limit) == ("rejected", Decimal(50))
    assert AuditEvent.objects.filter(action="cap_change.reject", actor_label="user:alice").count() == 1


def test_the_database_refuses_a_self_approval(threshold, alice):
    cap = make_cap(limit="50")
    alice.post(change_url(cap), cap_form(cap, limit="500", reason="x"))
    change = PendingCapChange.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        PendingCapChange.objects.filter(pk=change.pk).update(state="approved", decided_by=change.requested_by)
