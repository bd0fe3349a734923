import datetime as dt
import hashlib
import hmac
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.gateway.auth import authenticate_token
from apps.gateway.errors import AuthenticationFailed
from apps.keys import services, tokens
from apps.keys.models import Agent, ApiKey
from modeloman.invalidation import clear_local_caches
from tests.factories import TEST_ACTOR, AgentFactory, issue_key
from tests.keys.test_tokens import single_character_mutations

pytestmark = pytest.mark.django_db
WHOAMI = "/api/v1/whoami"


def tables_containing(text: str) -> list[str]:
    """Every table whose rows, cast to text, contain `text` anywhere."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            query = f"SELECT count(*) FROM {connection.ops.quote_name(table)} t WHERE t::text LIKE %s"  # noqa: S608  # introspected names
            cursor.execute(query, [f"%{text}%"])
            if cursor.fetchone()[0]:
                found.append(table)
    return found


def test_whoami_returns_the_principal(api_client, bearer):
    agent = AgentFactory.create(name="scout")
    issued = issue_key(agent, scopes=["tasks:write", "policy:read"])
    response = api_client.get(WHOAMI, **bearer(issued.token))
    assert response.status_code == 200
    assert response.json() == {
        "key_id": issued.api_key.key_id,
        "agent": "scout",
        "project": agent.project.slug,
        "scopes": ["policy:read", "tasks:write"],
        "expires_at": None,
    }


def test_no_column_of_any_table_contains_the_secret():
    issued = issue_key()
    parsed = tokens.parse(issued.token)
    assert parsed is not None
    secret = parsed.secret
    assert tables_containing(issued.api_key.key_id)  # the search itself works
    assert tables_containing(secret) == []


def test_key_digest_is_peppered_hmac_sha256(settings):
    issued = issue_key()
    parsed = tokens.parse(issued.token)
    assert parsed is not None
    expected = hmac.new(settings.KEY_PEPPER.encode(), f"{parsed.key_id}.{parsed.secret}".encode(),
                        hashlib.sha256).hexdigest()
    assert ApiKey.objects.get(pk=issued.api_key.pk).digest == expected


def test_every_single_character_mutation_gets_401_without_touching_the_database(
        api_client, bearer, django_assert_num_queries):
    issued = issue_key()
    mutations = list(single_character_mutations(issued.token))
    with django_assert_num_queries(0):
        statuses = {}
        for mutated in mutations:
            response = api_client.get(WHOAMI, **bearer(mutated))
            statuses[response.status_code] = response.json()["code"]
    assert statuses == {401: "token_malformed"}


def test_well_formed_token_for_unknown_key_or_wrong_secret_is_401_token_invalid(api_client, bearer):
    issued = issue_key()
    unknown = tokens.token_for("A" * 12, "B" * 32)
    wrong_secret = tokens.token_for(issued.api_key.key_id, "C" * 32)
    for token in (unknown, wrong_secret):
        response = api_client.get(WHOAMI, **bearer(token))
        assert response.status_code == 401
        assert response["Content-Type"] == "application/problem+json"
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["code"] == "token_invalid"


@pytest.mark.parametrize("header", ["", "Basic abc", "Bearer", "Bearer    "])
def test_missing_or_wrong_authorization_header_is_401(api_client, header):
    response = api_client.get(WHOAMI, HTTP_AUTHORIZATION=header) if header else api_client.get(WHOAMI)
    assert response.status_code == 401
    assert response.json()["code"] in {"not_authenticated", "token_malformed"}


def test_expired_key_is_401(api_client, bearer):
    issued = issue_key(expires_at=timezone.now() + dt.timedelta(hours=1))
    assert api_client.get(WHOAMI, **bearer(issued.token)).status_code == 200
    with pytest.raises(AuthenticationFailed) as failure:
        authenticate_token(issued.token, now=timezone.now() + dt.timedelta(hours=2))
    assert failure.value.code == "key_expired"

    ApiKey.objects.filter(pk=issued.api_key.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    clear_local_caches()  # the raw UPDATE above bypassed the service's broadcast
    response = api_client.get(WHOAMI, **bearer(issued.token))
    assert response.status_code == 401
    assert response.json()["code"] == "key_expired"


def test_revocation_and_expiry_change_take_effect_immediately_in_this_process(api_client, bearer):
    revoked, shortened = issue_key(), issue_key()
    for issued in (revoked, shortened):  # warm the cache
        assert api_client.get(WHOAMI, **bearer(issued.token)).status_code == 200

    services.api_key_revoke(actor=TEST_ACTOR, api_key=revoked.api_key, reason="leaked in a log")
    response = api_client.get(WHOAMI, **bearer(revoked.token))
    assert (response.status_code, response.json()["code"]) == (401, "key_revoked")

    services.api_key_set_expiry(actor=TEST_ACTOR, api_key=shortened.api_key,
                                expires_at=timezone.now() + dt.timedelta(milliseconds=200))
    time.sleep(0.3)
    response = api_client.get(WHOAMI, **bearer(shortened.token))
    assert (response.status_code, response.json()["code"]) == (401, "key_expired")


def test_disabled_agent_keys_are_refused(api_client, bearer):
    issued = issue_key()
    assert api_client.get(WHOAMI, **bearer(issued.token)).status_code == 200
    agent = issued.api_key.agent
    assert agent is not None
    agent.status = Agent.Status.DISABLED
    services.agent_save(actor=TEST_ACTOR, agent=agent)
    response = api_client.get(WHOAMI, **bearer(issued.token))
    assert (response.status_code, response.json()["code"]) == (401, "agent_disabled")
    assert AuditEvent.objects.filter(action="agent.update", target_id=str(agent.pk)).exists()


def test_rotation_keeps_both_keys_until_grace_then_only_the_new_one(api_client, bearer):
    old = issue_key(scopes=["tasks:write", "telemetry:write"])
    new = services.api_key_rotate(actor=TEST_ACTOR, api_key=old.api_key, grace=dt.timedelta(hours=1))

    for issued in (old, new):
        response = api_client.get(WHOAMI, **bearer(issued.token))
        assert response.status_code == 200
        assert response.json()["scopes"] == ["tasks:write", "telemetry:write"]

    after_grace = timezone.now() + dt.timedelta(hours=1, seconds=1)
    with pytest.raises(AuthenticationFailed) as failure:
        authenticate_token(old.token, now=after_grace)
    assert failure.value.code == "key_rotated"
    assert authenticate_token(new.token, now=after_grace).key_id == new.api_key.key_id

    assert AuditEvent.objects.filter(action="api_key.rotate", api_key=old.api_key).count() == 1
    created = AuditEvent.objects.get(action="api_key.create", api_key=new.api_key)
    assert created.after is not None
    assert created.after["key_id"] == new.api_key.key_id
    assert new.api_key.rotated_from_id == old.api_key.pk


def test_unrevoking_is_a_validation_error_and_the_database_refuses_it_too():
    from django.core.exceptions import ValidationError
    from django.db import IntegrityError, transaction

    issued = issue_key()
    key = services.api_key_revoke(actor=TEST_ACTOR, api_key=issued.api_key, reason="compromised")
    key.revoked_at = None
    with pytest.raises(ValidationError) as error:
        key.full_clean()
    assert "revoked_at" in error.value.message_dict

    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE keys_apikey SET revoked_at = NULL WHERE id = %s", [key.pk])
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None


def test_key_referenced_by_audit_rows_cannot_be_hard_deleted():
    from django.db import IntegrityError, transaction
    from django.db.models import ProtectedError

    issued = issue_key()
    assert AuditEvent.objects.filter(api_key=issued.api_key).exists()
    with pytest.raises(ProtectedError):
        issued.api_key.delete()
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # what COMMIT would check
        cursor.execute("DELETE FROM keys_apikey WHERE id = %s", [issued.api_key.pk])
    assert ApiKey.objects.filter(pk=issued.api_key.pk).exists()


def test_last_used_at_is_written_at_most_once_a_minute(api_client, bearer):
    issued = issue_key()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            assert api_client.get(WHOAMI, **bearer(issued.token)).status_code == 200
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 1
    assert ApiKey.objects.get(pk=issued.api_key.pk).last_used_at is not None


def test_previous_pepper_still_verifies_and_the_digest_is_upgraded(settings, api_client, bearer):
    settings.KEY_PEPPER = "old-pepper-0123456789abcdefghijkl"
    issued = issue_key()
    settings.KEY_PEPPER, settings.KEY_PEPPER_PREVIOUS = "new-pepper-0123456789abcdefghijkl", settings.KEY_PEPPER
    assert api_client.get(WHOAMI, **bearer(issued.token)).status_code == 200
    parsed = tokens.parse(issued.token)
    assert parsed is not None
    assert ApiKey.objects.get(pk=issued.api_key.pk).digest == tokens.digest(
        parsed.key_id, parsed.secret, "new-pepper-0123456789abcdefghijkl")

    settings.KEY_PEPPER_PREVIOUS = ""
    assert api_client.get(WHOAMI, **bearer(issued.token)).status_code == 200
