import datetime as dt
import uuid
from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.audit.services import Actor
from apps.gateway.auth import authenticate_token
from apps.policy import ledger
from apps.policy import services as policy_services
from apps.policy.models import PolicyCap
from apps.telemetry.admin import BoundedCountPaginator
from apps.telemetry.models import Benchmark, PromptAttempt, Run, RunEvent
from apps.telemetry.rollups import rollups_refresh
from apps.telemetry.validation import AttemptIn, BenchmarkIn, RunEventIn
from tests.factories import TEST_ACTOR, issue_key, make_cap, make_price
from tests.telemetry.timeseries_data import attempt, insert_attempts, new_project_id

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "correct horse battery"))
    return client


@pytest.fixture
def one_of_everything():
    issued = issue_key()
    agent = issued.api_key.agent
    assert agent is not None
    Group.objects.create(name="operators")
    make_price("gpt-test")
    make_cap(subject=agent, limit="1")
    policy_services.policy_set(actor=TEST_ACTOR, subject_type="agent", agent=agent, max_tokens_per_attempt=10**6)
    principal = authenticate_token(issued.token)
    from apps.telemetry import services as telemetry

    issued_telemetry = issue_key(agent, scopes=["telemetry:write", "tasks:write"])
    telemetry_principal = authenticate_token(issued_telemetry.token)
    run = telemetry.run_start(principal=telemetry_principal, task="t", metadata={})
    for _ in range(2):  # one allowed (ledger row + reservation), one denied (decision row), for the run
        ledger.admit(principal=principal, model="gpt-test", estimated_input_tokens=600_000,
                     estimated_output_tokens=0, run_id=run.pk)
    telemetry.attempts_record(principal=telemetry_principal, batch=False, items=[AttemptIn(
        model="gpt-test", success=True, input_tokens=1, output_tokens=1, latency_ms=5)])
    telemetry.run_events_record(principal=telemetry_principal, run_id=run.pk, items=[RunEventIn(kind="step")],
                                batch=False)
    telemetry.benchmark_record(principal=telemetry_principal, item=BenchmarkIn(suite="s", model="gpt-test", score=1))
    rollups_refresh(full=True, retention=dt.timedelta(days=90))  # the hourly and daily rollup rows
    from apps.leaderboard.models import HiddenEntry
    from apps.leaderboard.services import hidden_entry_save

    hidden_entry_save(actor=TEST_ACTOR, entry=HiddenEntry(kind="model", name="gpt-hidden", reason="test"))
    requester = User.objects.create_user("requester", is_staff=True)
    with override_settings(REQUIRE_SECOND_APPROVAL_ABOVE_USD=Decimal(10)):  # a pending cap change
        policy_services.cap_propose(actor=Actor.for_user(requester), cap=PolicyCap(
            subject_type="global", metric="cost_usd", window="day", limit=Decimal(50)))
    return issued


def test_every_model_admin_renders_changelist_add_and_change(operator, one_of_everything):
    reverse("admin:index")  # loads the URLconf
    for model, model_admin in list(admin.site._registry.items()):
        info = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        changelist = operator.get(reverse(f"{info}_changelist"))
        assert changelist.status_code == 200, info
        if "run" in model_admin.list_display:  # reservations and decisions show the run they were for
            assert str(Run.objects.get()).encode() in changelist.content, info
        if model_admin.has_add_permission(changelist.wsgi_request):
            assert operator.get(reverse(f"{info}_add")).status_code == 200, info
        obj = model._default_manager.first()
        assert obj is not None, info
        assert operator.get(reverse(f"{info}_change", args=[obj.pk])).status_code == 200, info


TELEMETRY_CHANGELISTS = ("run", "promptattempt", "runevent", "benchmark", "promptattempthourly", "benchmarkdaily")


@pytest.mark.parametrize("model_name", TELEMETRY_CHANGELISTS)
def test_telemetry_changelists_never_count_a_whole_table(operator, one_of_everything, model_name):
    with CaptureQueriesContext(connection) as queries:
        response = operator.get(reverse(f"admin:telemetry_{model_name}_changelist"), {"within": "24h"})
    assert response.status_code == 200
    counts = [query["sql"] for query in queries if "COUNT(" in query["sql"].upper()]
    assert counts, "the paginator counts (within its bound)"
    assert all("LIMIT 10001" in sql for sql in counts), counts
    assert "DISTINCT" not in " ".join(query["sql"] for query in queries if "prompt_attempts\"" in query["sql"])


def test_telemetry_admin_finds_attempts_by_run_id_and_filters_by_model(operator, one_of_everything):
    run = Run.objects.get()
    PromptAttempt.objects.filter(pk=PromptAttempt.objects.get().pk).update(run_id=run.pk)
    url = reverse("admin:telemetry_promptattempt_changelist")

    assert operator.get(url, {"q": str(run.pk)}).context["cl"].result_count == 1
    assert operator.get(url, {"q": "not-a-uuid"}).context["cl"].result_count == 0
    assert operator.get(url, {"model": "gpt-test", "success__exact": "1"}).context["cl"].result_count == 1
    assert operator.get(url, {"model": "other-model"}).context["cl"].result_count == 0


@pytest.mark.parametrize("model", [PromptAttempt, RunEvent, Benchmark])
def test_pasting_a_uuid_into_a_telemetry_search_never_scans_the_whole_table(rf, model):
    """The search ORs every UUID column it offers; each must be indexed, or the OR is a full scan."""
    model_admin = admin.site._registry[model]
    queryset, _ = model_admin.get_search_results(rf.get("/"), model.objects.all(), str(uuid.uuid4()))
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # only an index can avoid a Seq Scan now
        plan = queryset.order_by("-time")[:100].explain()
    # Every searched column is an index condition: nothing is filtered row by row.
    assert "Seq Scan" not in plan and "Filter:" not in plan, plan


def test_above_its_bound_the_paginator_uses_the_planner_estimate(monkeypatch):
    insert_attempts([attempt(timezone.now(), project_id=new_project_id()) for _ in range(5)])
    monkeypatch.setattr(BoundedCountPaginator, "count_limit", 2)
    with CaptureQueriesContext(connection) as queries:
        count = BoundedCountPaginator(PromptAttempt.objects.order_by("-time"), 100).count
    assert count >= 3  # at least what was counted; beyond that, whatever EXPLAIN estimates
    assert [query["sql"].split()[0] for query in queries] == ["SELECT", "EXPLAIN"]


def test_usage_of_an_unpriced_model_is_marked_agent_priced(operator, one_of_everything):
    from decimal import Decimal

    from apps.policy.models import Reservation
    from apps.telemetry import services as telemetry

    policy_services.policy_set(actor=TEST_ACTOR, subject_type="global", allow_unpriced_models=True)
    agent = one_of_everything.api_key.agent
    assert agent is not None
    principal = authenticate_token(issue_key(agent, scopes=["telemetry:write", "tasks:write"]).token)
    admission = ledger.admit(principal=principal, model="mystery-model", estimated_input_tokens=10,
                                      estimated_output_tokens=0, estimated_cost_usd=Decimal("0.25"))
    assert admission.allowed, admission.reasons
    telemetry.attempts_record(principal=principal, batch=False, items=[AttemptIn(
        model="mystery-model", success=True, input_tokens=1, output_tokens=1, latency_ms=5,
        reported_cost_usd="0.2", reservation_id=admission.reservation_id)])

    attempts = operator.get(reverse("admin:telemetry_promptattempt_changelist"))
    by_model = {a.model: attempts.context["cl"].model_admin.priced_by(a) for a in attempts.context["cl"].result_list}
    assert by_model == {"gpt-test": "server", "mystery-model": "agent (unpriced model)"}
    assert b"agent (unpriced model)" in attempts.content

    reservations = operator.get(reverse("admin:policy_reservation_changelist"))
    changelist = reservations.context["cl"]
    marks = {r.model: changelist.model_admin.priced_by(r) for r in changelist.result_list}
    assert marks == {"gpt-test": "server", "mystery-model": "agent (unpriced model)"}
    assert admission.reservation_id is not None
    assert Reservation.objects.get(id=admission.reservation_id).state == "settled"


def test_one_admin_site_registers_the_composed_admins():
    """admin.site is ModeloMan's own site, and a project's or agent's page is the composed one
    (keys' admin plus policy's inlines and switches), registered once, without unregistering."""
    from pathlib import Path

    from apps.keys.models import Agent, Project
    from apps.policy.admin import AgentWithPolicyAdmin, ProjectWithPolicyAdmin
    from modeloman.admin_site import ModeloManAdminSite

    assert isinstance(admin.site, ModeloManAdminSite)
    assert type(admin.site._registry[Project]) is ProjectWithPolicyAdmin
    assert type(admin.site._registry[Agent]) is AgentWithPolicyAdmin
    sources = [path.read_text() for path in (Path(__file__).parents[1] / "apps").glob("*/admin.py")]
    assert len(sources) >= 4
    assert not [s for s in sources if "unregister(" in s or "admin.register(" in s]
