import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.audit.models import AuditEvent
from apps.gateway.auth import authenticate_token
from apps.gateway.signing import signing_secret_for
from apps.keys.models import Agent, ApiKey, Project
from tests.factories import AgentFactory, issue_key

pytestmark = pytest.mark.django_db


def row_counts():
    return tuple(m.objects.count() for m in (Project, Agent, ApiKey, AuditEvent))


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_agent_key_prints_only_the_token_and_signing_secret():
    out = run("create_agent_key", "--project", "acme", "--agent", "scout", "--scopes",
              "tasks:write,telemetry:write", "--expires-in", "90d", "--create")
    assert re.fullmatch(r"mmk_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}\nmms_[0-9a-f]{64}\n", out)
    token, signing_secret = out.split()
    principal = authenticate_token(token)
    assert signing_secret == signing_secret_for(principal.key_id)
    assert (principal.project_slug, principal.agent_name) == ("acme", "scout")
    assert principal.scopes == {"tasks:write", "telemetry:write"} and principal.expires_at is not None
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert actions == {"project.create", "agent.create", "api_key.create"}


@pytest.mark.parametrize("args, message", [
    (["--project", "acme", "--agent", "scout", "--scopes", "tasks:write,root", "--create"], "root"),
    (["--project", "acme", "--agent", "scout", "--scopes", "", "--create"], "scope"),
    (["--project", "acme", "--agent", "scout", "--scopes", "tasks:write", "--expires-in=-5d", "--create"],
     "duration"),
    (["--project", "acme", "--agent", "scout", "--scopes", "tasks:write", "--expires-in", "99999w", "--create"],
     "longer"),
    (["--project", "nope", "--agent", "scout", "--scopes", "tasks:write"], "Unknown project"),
    (["--project", "Bad Slug!", "--agent", "scout", "--scopes", "tasks:write", "--create"], "slug"),
    (["--project", "acme", "--agent", "../../etc", "--scopes", "tasks:write", "--create"], "letters"),
])
def test_create_agent_key_bad_input_is_a_clear_error_and_writes_nothing(args, message):
    before = row_counts()
    with pytest.raises(CommandError, match=message):
        run("create_agent_key", *args)
    assert row_counts() == before


def test_create_agent_key_for_unknown_agent_without_create_writes_nothing():
    AgentFactory.create(project__slug="acme")
    before = row_counts()
    with pytest.raises(CommandError, match="Unknown agent"):
        run("create_agent_key", "--project", "acme", "--agent", "ghost", "--scopes", "tasks:write")
    assert row_counts() == before


def test_revoke_key_revokes_and_audits():
    issued = issue_key()
    assert run("revoke_key", issued.api_key.key_id, "--reason", "rotated out") == (
        f"revoked {issued.api_key.key_id}\n")
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_reason == "rotated out"
    event = AuditEvent.objects.get(action="api_key.revoke")
    assert event.actor_label == "system:revoke_key" and event.reason == "rotated out"


@pytest.mark.parametrize("key_id, reason, message", [
    ("unknownkey00", "x", "Unknown key id"),
    (None, "   ", "reason"),
])
def test_revoke_key_bad_input_writes_nothing(key_id, reason, message):
    issued = issue_key()
    before = row_counts()
    with pytest.raises(CommandError, match=message):
        run("revoke_key", key_id or issued.api_key.key_id, "--reason", reason)
    assert row_counts() == before
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is None


def test_revoking_twice_is_refused():
    issued = issue_key()
    run("revoke_key", issued.api_key.key_id, "--reason", "first")
    with pytest.raises(CommandError, match="already revoked"):
        run("revoke_key", issued.api_key.key_id, "--reason", "second")
