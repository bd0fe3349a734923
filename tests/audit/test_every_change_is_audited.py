"""Every change to keys, policy, caps, prices, kill switches and dry-run — through the admin, the
management commands and the API — writes exactly one audit row, with the actor and (for a request)
its request id; a change that rolls back writes none (issue 14).

Each door is driven from the outside: the admin and the API through Django's full request stack,
the commands through `call_command`. The rollback cases run each audited service inside a
transaction that then fails, as any later error in the same request would make it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.keys import services as key_services
from apps.keys.models import Agent, ApiKey
from apps.policy import services as policy_services
from apps.policy.models import ModelPrice, Policy, PolicyCap
from tests.factories import TEST_ACTOR, AgentFactory, issue_key, make_cap

pytestmark = pytest.mark.django_db


class World:
    """An operator logged in to the admin, an agent with a policy-writing key, and one of its caps."""

    def __init__(self) -> None:
        self.operator = User.objects.create_superuser("operator", "op@example.com", "correct horse battery")
        self.admin = APIClient()
        self.admin.force_login(self.operator)
        self.agent = AgentFactory.create()
        self.issued = issue_key(self.agent, scopes=["policy:read", "policy:write"])
        self.own_cap = make_cap(subject=self.agent, limit="100")
        self.spare_key = issue_key(self.agent).api_key

    def api(self, method: str, path: str, body: dict | None, request_id: str):
        client = APIClient()
        return getattr(client, method)(path, body, format="json", HTTP_AUTHORIZATION=f"Bearer {self.issued.token}",
                                       HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex, HTTP_X_REQUEST_ID=request_id)

    def admin_post(self, url: str, data: dict, request_id: str):
        return self.admin.post(url, data, HTTP_X_REQUEST_ID=request_id)


def _admin_revoke_key(w: World, rid: str):
    issued = issue_key(w.agent)
    w.admin_post(reverse("admin:keys_apikey_changelist"), {
        "action": "revoke_keys", "_selected_action": [issued.api_key.pk], "confirm": "yes", "reason": "leaked"}, rid)
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is not None


def _admin_kill_switch(w: World, rid: str):
    w.admin_post(reverse("admin:keys_agent_changelist"), {
        "action": "engage_kill_switch", "_selected_action": [w.agent.pk], "confirm": "yes", "reason": "runaway"}, rid)
    assert Policy.objects.get(agent=w.agent).kill_switch is True


def _admin_dry_run(w: World, rid: str):
    w.admin_post(reverse("admin:keys_project_changelist"), {
        "action": "dry_run_on", "_selected_action": [w.agent.project.pk], "confirm": "yes", "reason": "trial"}, rid)
    assert Policy.objects.get(project=w.agent.project).dry_run is True


def _admin_add_cap(w: World, rid: str):
    response = w.admin_post(reverse("admin:policy_policycap_add"), {
        "subject_type": "agent", "agent": w.agent.pk, "metric": "requests", "window": "hour", "limit": "10",
        "model": "", "mode": "enforce", "enabled": "on"}, rid)
    assert response.status_code == 302, response.content[:2000]
    assert PolicyCap.objects.filter(agent=w.agent, metric="requests").exists()


def _admin_add_price(w: World, rid: str):
    now = timezone.localtime()
    response = w.admin_post(reverse("admin:policy_modelprice_add"), {
        "model": "audited-model", "input_usd_per_mtok": "1.5", "output_usd_per_mtok": "3",
        "effective_from_0": now.date().isoformat(), "effective_from_1": now.time().strftime("%H:%M:%S")}, rid)
    assert response.status_code == 302, response.content[:2000]
    assert ModelPrice.objects.filter(model="audited-model").exists()


def _api_kill_switch(w: World, rid: str):
    response = w.api("put", "/api/v1/policy", {"subject": "agent", "kill_switch": True, "reason": "stop"}, rid)
    assert response.status_code == 200, response.json()


def _api_add_cap(w: World, rid: str):
    response = w.api("post", "/api/v1/policy/caps",
                     {"subject": "agent", "metric": "tokens", "window": "day", "limit": "1000"}, rid)
    assert response.status_code == 201, response.json()


def _api_lower_cap(w: World, rid: str):
    cap = make_cap(subject=w.agent, limit="100")
    response = w.api("put", f"/api/v1/policy/caps/{cap.pk}",
                     {"metric": "cost_usd", "window": "day", "limit": "50"}, rid)
    assert response.status_code == 200, response.json()


def _api_delete_own_cap(w: World, rid: str):
    created = w.api("post", "/api/v1/policy/caps",
                    {"subject": "agent", "metric": "tokens", "window": "day", "limit": "1000"}, "setup-" + rid)
    response = w.api("delete", f"/api/v1/policy/caps/{created.json()['id']}", None, rid)
    assert response.status_code == 204


def _command_create_key(w: World, rid: str):
    call_command("create_agent_key", "--project", w.agent.project.slug, "--agent", w.agent.name,
                 "--scopes", "tasks:write", stdout=StringIO())


def _command_revoke_key(w: World, rid: str):
    issued = issue_key(w.agent)
    call_command("revoke_key", issued.api_key.key_id, "--reason", "rotation", stdout=StringIO())


# (door and change, the change, the audit action it must write, the actor's label prefix,
#  whether the row carries the request's id)
CHANGES: list[tuple[str, Callable[[World, str], None], str, str, bool]] = [
    ("admin: revoke a key", _admin_revoke_key, "api_key.revoke", "user:", True),
    ("admin: engage a kill switch", _admin_kill_switch, "policy.create", "user:", True),
    ("admin: switch a project to dry-run", _admin_dry_run, "policy.create", "user:", True),
    ("admin: add a cap", _admin_add_cap, "cap.create", "user:", True),
    ("admin: add a price", _admin_add_price, "model_price.create", "user:", True),
    ("api: engage the agent's kill switch", _api_kill_switch, "policy.create", "key:", True),
    ("api: add a cap", _api_add_cap, "cap.create", "key:", True),
    ("api: lower a cap", _api_lower_cap, "cap.update", "key:", True),
    ("api: delete its own cap", _api_delete_own_cap, "cap.delete", "key:", True),
    ("command: create_agent_key", _command_create_key, "api_key.create", "system:", False),
    ("command: revoke_key", _command_revoke_key, "api_key.revoke", "system:", False),
]


@pytest.mark.parametrize(("door", "change", "action", "actor", "has_request_id"), CHANGES, ids=[c[0] for c in CHANGES])
def test_each_change_writes_exactly_one_audit_row_with_its_actor_and_request_id(door, change, action, actor,
                                                                               has_request_id):
    world = World()
    request_id = f"audit-{uuid.uuid4().hex[:12]}"
    before = AuditEvent.objects.order_by("-chain_seq").values_list("chain_seq", flat=True).first() or 0

    change(world, request_id)

    written = list(AuditEvent.objects.filter(chain_seq__gt=before, action=action)
                   .exclude(request_id=f"setup-{request_id}"))  # a cap the API test made first
    assert len(written) == 1, [(e.action, e.request_id) for e in AuditEvent.objects.filter(chain_seq__gt=before)]
    [event] = written
    assert event.actor_label.startswith(actor), event.actor_label
    if has_request_id:
        assert event.request_id == request_id
        # and nothing else was audited under this request
        assert list(AuditEvent.objects.filter(request_id=request_id)) == [event]


def _rollback_revoke(w: World):
    key_services.api_key_revoke(actor=TEST_ACTOR, api_key=w.spare_key, reason="leaked")


def _rollback_kill_switch(w: World):
    policy_services.policy_set(actor=TEST_ACTOR, subject_type="agent", agent=w.agent, kill_switch=True,
                               reason="runaway")


def _rollback_dry_run(w: World):
    policy_services.policy_set(actor=TEST_ACTOR, subject_type="project", project=w.agent.project, dry_run=True,
                               reason="trial")


def _rollback_cap(w: World):
    make_cap(subject=w.agent, limit="5")


def _rollback_cap_raise(w: World):
    cap = w.own_cap
    cap.limit = Decimal(500)
    policy_services.cap_save(actor=TEST_ACTOR, cap=cap, reason="more budget")


def _rollback_cap_delete(w: World):
    policy_services.cap_delete(actor=TEST_ACTOR, cap=w.own_cap, reason="gone")


def _rollback_price(w: World):
    policy_services.model_price_save(actor=TEST_ACTOR, price=ModelPrice(
        model="rollback-model", input_usd_per_mtok=Decimal(1), output_usd_per_mtok=Decimal(2),
        effective_from=timezone.now()))


def _rollback_agent_quarantine(w: World):
    w.agent.status = Agent.Status.QUARANTINED
    key_services.agent_save(actor=TEST_ACTOR, agent=w.agent)


ROLLBACKS = [_rollback_revoke, _rollback_kill_switch, _rollback_dry_run, _rollback_cap, _rollback_cap_raise,
             _rollback_cap_delete, _rollback_price, _rollback_agent_quarantine]


class LaterFailure(Exception):
    """Whatever fails after the change, in the same transaction."""


@pytest.mark.parametrize("change", ROLLBACKS, ids=[f.__name__.removeprefix("_rollback_") for f in ROLLBACKS])
def test_a_change_that_rolls_back_leaves_no_audit_row(change):
    world = World()
    audit_rows = AuditEvent.objects.count()
    with pytest.raises(LaterFailure), transaction.atomic():
        change(world)
        assert AuditEvent.objects.count() == audit_rows + 1  # written, in the change's transaction
        raise LaterFailure
    assert AuditEvent.objects.count() == audit_rows
