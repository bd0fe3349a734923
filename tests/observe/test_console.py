"""The admin index as the operator's console: what it shows, that its reads are bounded, and the
global kill switch behind a confirmation page with a reason, through the audited service."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.gateway import metrics
from apps.gateway.auth import authenticate_token
from apps.policy import ledger
from apps.policy.models import AdmissionDecision, Policy
from apps.policy.services import policy_set
from tests.factories import TEST_ACTOR, AgentFactory, issue_key, make_cap, make_price

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "correct horse battery"))
    return client


def test_the_console_shows_admissions_spenders_rate_limited_keys_and_kill_switches(operator):
    make_price("gpt-test", input_per_mtok="10")
    issued = issue_key(scopes=["tasks:write"])
    agent = issued.api_key.agent
    assert agent is not None
    make_cap(subject=agent, limit="12")
    principal = authenticate_token(issued.token)
    allowed = ledger.admit(principal=principal, model="gpt-test", estimated_input_tokens=1_000_000,
                           estimated_output_tokens=0)
    denied = ledger.admit(principal=principal, model="gpt-test", estimated_input_tokens=1_000_000,
                          estimated_output_tokens=0)
    assert allowed.allowed and not denied.allowed
    AdmissionDecision.objects.create(agent=agent, model="old", allowed=False, reasons=["kill_switch"],
                                     estimated_tokens=1, created_at=timezone.now() - dt.timedelta(hours=2))
    policy_set(actor=TEST_ACTOR, subject_type="project", project=agent.project, kill_switch=True, reason="runaway")
    metrics.rate_limit_rejected("Admit", key_id=issued.api_key.key_id)

    page = operator.get("/admin/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<title>Console | ModeloMan operators</title>" in html
    assert '<a href="/">View site</a>' in html
    admissions = page.context["admissions"]
    assert (admissions.admitted.value, admissions.denied.value) == (1, 1)  # the 2-hour-old denial is not counted
    assert admissions.reasons == [("cap_exceeded", 1)]
    [spender] = page.context["spenders"]
    assert (spender.used, spender.reserved, spender.limit) == (Decimal(0), Decimal(10), Decimal(12))
    assert round(spender.percent) == 83 and f"agent {agent}" in html
    latest_key, _, key = page.context["rate_limited"][0]  # Redis may remember earlier runs' keys for an hour
    assert latest_key == issued.api_key.key_id and key.agent == agent
    assert [p.subject_label for p in page.context["kill_switches"]] == [f"project {agent.project}"]
    assert "runaway" in html and 'id="engage-global-kill-switch"' in html
    assert "All records" in html  # the models are still one click away


def test_the_console_reads_are_bounded(operator, django_assert_max_num_queries):
    for n in range(30):
        make_cap(subject=AgentFactory.create(), limit=str(10 + n), window="hour")
    # session, user, and one bounded query per section: the number does not grow with the data.
    with django_assert_max_num_queries(14):
        assert operator.get("/admin/").status_code == 200


def test_the_global_kill_switch_is_one_click_and_a_confirmation_away(operator):
    page = operator.get("/admin/kill-switch/")
    assert page.status_code == 200 and b"Yes, stop all admissions" in page.content
    refused = operator.post("/admin/kill-switch/", {"confirm": "yes", "engage": "on", "reason": ""})
    assert refused.status_code == 200 and not Policy.objects.filter(kill_switch=True).exists()  # reason needed

    done = operator.post("/admin/kill-switch/", {"confirm": "yes", "engage": "on", "reason": "incident 42"},
                         HTTP_X_REQUEST_ID="console-kill-0001")
    assert done.status_code == 302 and done["Location"] == "/admin/"
    policy = Policy.objects.get(subject_type="global")
    assert policy.kill_switch and policy.kill_switch_reason == "incident 42"
    audit = AuditEvent.objects.filter(target_type="policy.policy").latest("chain_seq")
    assert (audit.actor_label, audit.reason, audit.request_id) == ("user:operator", "incident 42", "console-kill-0001")
    assert audit.after is not None
    assert audit.after["kill_switch"] is True
    assert b'id="release-global-kill-switch"' in operator.get("/admin/").content

    operator.post("/admin/kill-switch/", {"confirm": "yes", "reason": "resolved"})
    assert Policy.objects.get(subject_type="global").kill_switch is False


def test_staff_without_policy_permission_cannot_flip_it(client):
    client.force_login(User.objects.create_user("viewer", password="x" * 12, is_staff=True))
    assert client.get("/admin/kill-switch/").status_code == 403
    assert client.post("/admin/kill-switch/", {"confirm": "yes", "engage": "on", "reason": "x"}).status_code == 403
    assert not Policy.objects.filter(kill_switch=True).exists()
