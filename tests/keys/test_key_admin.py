import re

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.gateway.auth import authenticate_token
from apps.gateway.signing import signing_secret_for
from apps.keys import tokens
from apps.keys.models import ApiKey
from tests.factories import AgentFactory, issue_key
from tests.keys.test_authentication import tables_containing

pytestmark = pytest.mark.django_db
TOKEN_RE = re.compile(r"mmk_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}")
SIGNING_SECRET_RE = re.compile(r"mms_[0-9a-f]{64}")


@pytest.fixture
def operator(client):
    user = User.objects.create_superuser("operator", "op@example.com", "correct horse battery")
    client.force_login(user)
    return client


def test_key_pages_never_show_the_digest(operator):
    issued = issue_key()
    digest = ApiKey.objects.get(pk=issued.api_key.pk).digest
    for url in (reverse("admin:keys_apikey_changelist"),
                reverse("admin:keys_apikey_change", args=[issued.api_key.pk]),
                reverse("admin:keys_agent_change", args=[issued.api_key.agent_id])):
        page = operator.get(url).content.decode()
        assert issued.api_key.key_id in page
        assert digest not in page


def test_issuing_a_key_in_the_admin_shows_the_token_and_signing_secret_once(operator):
    agent = AgentFactory.create()
    response = operator.post(reverse("admin:keys_apikey_add"), {
        "agent": agent.pk, "name": "ci", "scopes": ["tasks:write", "telemetry:write"], "expires_in": "90d",
    })
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    token_shown, secret_shown = TOKEN_RE.search(page), SIGNING_SECRET_RE.search(page)
    assert token_shown is not None and secret_shown is not None
    token, signing_secret = token_shown.group(0), secret_shown.group(0)
    principal = authenticate_token(token)
    assert principal.agent_id == agent.pk and principal.scopes == {"tasks:write", "telemetry:write"}
    parsed = tokens.parse(token)
    assert parsed is not None and tables_containing(parsed.secret) == []
    assert signing_secret == signing_secret_for(principal.key_id)
    assert tables_containing(signing_secret.removeprefix("mms_")) == []  # derived, never stored
    event = AuditEvent.objects.get(action="api_key.create", actor_label="user:operator")
    assert event.after is not None
    assert event.after["scopes"] == ["tasks:write", "telemetry:write"]

    page = operator.get(reverse("admin:keys_apikey_change", args=[principal.key_pk])).content.decode()
    assert token not in page and signing_secret not in page


def test_issuing_with_bad_input_writes_nothing(operator):
    before = ApiKey.objects.count(), AuditEvent.objects.count()
    response = operator.post(reverse("admin:keys_apikey_add"), {
        "scopes": ["tasks:write", "root:everything"], "expires_in": "forever",
    })
    assert response.status_code == 200
    assert response.context["form"].errors.keys() == {"scopes", "expires_in"}
    assert (ApiKey.objects.count(), AuditEvent.objects.count()) == before


def test_revoking_in_the_admin_asks_for_confirmation_then_revokes_and_audits(operator):
    issued = issue_key()
    changelist = reverse("admin:keys_apikey_changelist")
    selection = {"action": "revoke_keys", "_selected_action": [issued.api_key.pk]}

    confirm_page = operator.post(changelist, selection)
    assert confirm_page.status_code == 200
    assert b"Yes, I&#x27;m sure" in confirm_page.content or b"Yes, I'm sure" in confirm_page.content
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is None

    no_reason = operator.post(changelist, {**selection, "confirm": "yes", "reason": ""})
    assert no_reason.status_code == 200
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is None

    done = operator.post(changelist, {**selection, "confirm": "yes", "reason": "laptop stolen"},
                         REMOTE_ADDR="203.0.113.9", HTTP_X_REQUEST_ID="req-0123456789")
    assert done.status_code == 302
    key = ApiKey.objects.get(pk=issued.api_key.pk)
    assert key.revoked_at is not None and key.revoked_reason == "laptop stolen"
    event = AuditEvent.objects.get(action="api_key.revoke", api_key=key)
    assert (event.actor_label, event.reason, event.client_ip, event.request_id) == (
        "user:operator", "laptop stolen", "203.0.113.9", "req-0123456789")
    assert event.before is not None
    assert event.after is not None
    assert event.before["revoked_at"] is None and event.after["revoked_at"] is not None


def test_rotating_in_the_admin_shows_the_new_token_and_signing_secret(operator):
    issued = issue_key()
    response = operator.post(reverse("admin:keys_apikey_changelist"), {
        "action": "rotate_keys", "_selected_action": [issued.api_key.pk], "confirm": "yes", "grace": "1h",
    })
    assert response.status_code == 200
    page = response.content.decode()
    token_shown, secret_shown = TOKEN_RE.search(page), SIGNING_SECRET_RE.search(page)
    assert token_shown is not None and secret_shown is not None
    new_token = token_shown.group(0)
    assert new_token != issued.token
    assert authenticate_token(new_token).key_id != issued.api_key.key_id
    assert authenticate_token(issued.token).key_id == issued.api_key.key_id  # still in grace
    parsed = tokens.parse(new_token)
    assert parsed is not None
    new_key_id = parsed.key_id
    assert secret_shown.group(0) == signing_secret_for(new_key_id)
    assert signing_secret_for(new_key_id) != issued.signing_secret


def test_extending_expiry_in_the_admin_is_audited(operator):
    issued = issue_key()
    response = operator.post(reverse("admin:keys_apikey_changelist"), {
        "action": "extend_expiry", "_selected_action": [issued.api_key.pk], "confirm": "yes",
        "expires_in": "30d",
    })
    assert response.status_code == 302
    assert ApiKey.objects.get(pk=issued.api_key.pk).expires_at is not None
    assert AuditEvent.objects.filter(action="api_key.set_expiry", api_key=issued.api_key).count() == 1


def test_changelist_filters_by_status_and_scope(operator):
    active = issue_key(scopes=["policy:read"])
    revoked = issue_key(scopes=["tasks:write"])
    from apps.keys.services import api_key_revoke
    from tests.factories import TEST_ACTOR

    api_key_revoke(actor=TEST_ACTOR, api_key=revoked.api_key, reason="test")
    url = reverse("admin:keys_apikey_changelist")
    revoked_page = operator.get(url, {"status": "revoked"}).content.decode()
    assert revoked.api_key.key_id in revoked_page and active.api_key.key_id not in revoked_page
    scope_page = operator.get(url, {"scope": "policy:read"}).content.decode()
    assert active.api_key.key_id in scope_page and revoked.api_key.key_id not in scope_page


def test_agent_and_project_admin_saves_are_audited(operator):
    inline_forms = {f"{prefix}-{field}": value for prefix in ("policy_set", "policycap_set")
                    for field, value in (("TOTAL_FORMS", "0"), ("INITIAL_FORMS", "0"))}
    response = operator.post(reverse("admin:keys_project_add"), {
        "slug": "acme", "name": "Acme", "public_name": "", "leaderboard_opt_in": "", **inline_forms,
    })
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action="project.create", target_repr="acme").count() == 1


def test_the_status_filter_and_each_keys_status_agree(operator):
    """One rule for a key's status: the admin's filter (a query) and `status_at` (the row) agree."""
    import datetime as dt

    from django.utils import timezone

    from apps.keys import services
    from tests.factories import TEST_ACTOR

    now = timezone.now()
    active, expired, revoked = issue_key(), issue_key(), issue_key()
    ApiKey.objects.filter(pk=expired.api_key.pk).update(expires_at=now - dt.timedelta(minutes=1))
    services.api_key_revoke(actor=TEST_ACTOR, api_key=revoked.api_key, reason="test")
    rotated = services.api_key_rotate(actor=TEST_ACTOR, api_key=active.api_key, grace=dt.timedelta(hours=1))
    keys = list(ApiKey.objects.all())
    assert {key.status for key in keys} == set(ApiKey.Status.values)  # every status is present
    changelist = reverse("admin:keys_apikey_changelist")
    for status in ApiKey.Status.values:
        page = operator.get(changelist, {"status": status})
        listed = {key.pk for key in page.context["cl"].result_list}
        assert listed == {key.pk for key in keys if key.status == status}, status
    assert rotated.api_key.status == ApiKey.Status.ACTIVE
