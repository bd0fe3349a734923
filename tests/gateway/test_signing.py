"""Signed high-risk writes (issue 14), over REST: status codes, codes, rows and audit rows.

Policy and cap writes must carry X-MM-Timestamp, X-MM-Nonce and X-MM-Signature when
REQUIRE_SIGNED_WRITES is on; a nonce is accepted once. The gunicorn test replays a nonce to the
other worker; tests/gateway/test_grpc_signing.py covers the gRPC guard.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from apps.audit.models import AuditEvent
from apps.gateway.access import OPERATIONS, Scope
from apps.gateway.models import IdempotencyRecord, SignedWriteNonce
from apps.gateway.signature import sign_request
from apps.gateway.signing import MAX_SKEW_SECONDS, signing_secret_for
from apps.policy.models import Policy, PolicyCap
from tests.factories import AgentFactory, issue_key, make_cap
from tests.processes import gunicorn_server, http

pytestmark = pytest.mark.django_db
POLICY, CAPS = "/api/v1/policy", "/api/v1/policy/caps"
SCOPES = ["policy:read", "policy:write"]
KILL = json.dumps({"subject": "agent", "kill_switch": True}).encode()


@pytest.fixture
def required(settings):
    settings.REQUIRE_SIGNED_WRITES = True


@pytest.fixture
def writer():
    return issue_key(AgentFactory.create(), scopes=SCOPES)


def as_meta(headers: dict[str, str]) -> dict[str, str]:
    return {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}


def send(api_client, issued, method: str, path: str, body: bytes = b"", *, signature: dict | None = None,
         idempotency_key: str | None = None):
    headers = {"Authorization": f"Bearer {issued.token}", "Idempotency-Key": idempotency_key or uuid.uuid4().hex,
               **(signature or {})}
    return api_client.generic(method, path, body, content_type="application/json", **as_meta(headers))


def signed(issued, method: str, path: str, body: bytes = b"", **overrides) -> dict[str, str]:
    return sign_request(signing_secret=issued.signing_secret, method=method, path=path, body=body, **overrides)


def rows() -> tuple:
    """Everything a policy write (or a refusal) could leave behind."""
    return (tuple(Policy.objects.values_list("subject_type", "kill_switch").order_by("pk")),
            tuple(PolicyCap.objects.values_list("pk", "limit").order_by("pk")),
            AuditEvent.objects.count(), IdempotencyRecord.objects.count())


def agent_kill_switch(issued) -> bool | None:
    policy = Policy.objects.filter(subject_type="agent", agent=issued.api_key.agent).first()
    return policy.kill_switch if policy else None


# --- the access table ---------------------------------------------------------------------------


def test_every_policy_write_is_signed_and_nothing_else_is():
    signed_ops = {op.name for op in OPERATIONS.values() if op.signed}
    policy_writes = {op.name for op in OPERATIONS.values() if op.is_write and op.scope is Scope.POLICY_WRITE}
    assert signed_ops == policy_writes == {"SetPolicy", "UpsertPolicyCap", "DeletePolicyCap"}


# --- accepted -------------------------------------------------------------------------------------


def test_a_correctly_signed_write_succeeds_and_is_audited(api_client, writer, required):
    audit_before = AuditEvent.objects.count()
    response = send(api_client, writer, "PUT", POLICY, KILL, signature=signed(writer, "PUT", POLICY, KILL))
    assert response.status_code == 200, response.json()
    assert agent_kill_switch(writer) is True
    assert AuditEvent.objects.count() == audit_before + 1
    assert SignedWriteNonce.objects.filter(key_id=writer.api_key.key_id).count() == 1


def test_every_signed_operation_accepts_a_signature_over_its_own_method_and_path(api_client, writer, required):
    body = json.dumps({"subject": "agent", "metric": "tokens", "window": "day", "limit": "10"}).encode()
    created = send(api_client, writer, "POST", CAPS, body, signature=signed(writer, "POST", CAPS, body))
    assert created.status_code == 201, created.json()
    cap_path = f"{CAPS}/{created.json()['id']}"
    tighter = json.dumps({"metric": "tokens", "window": "day", "limit": "5"}).encode()
    changed = send(api_client, writer, "PUT", cap_path, tighter, signature=signed(writer, "PUT", cap_path, tighter))
    assert changed.status_code == 200, changed.json()
    assert PolicyCap.objects.get(pk=created.json()["id"]).limit == 5
    deleted = send(api_client, writer, "DELETE", cap_path, signature=signed(writer, "DELETE", cap_path))
    assert deleted.status_code == 204
    assert not PolicyCap.objects.filter(pk=created.json()["id"]).exists()


def test_the_previous_server_signing_key_is_accepted_during_its_rotation(api_client, writer, settings, required):
    old_secret = writer.signing_secret
    settings.REQUEST_SIGNING_KEY_PREVIOUS = settings.REQUEST_SIGNING_KEY
    settings.REQUEST_SIGNING_KEY = "a-new-request-signing-key-0123456789abcdefghij"
    assert signing_secret_for(writer.api_key.key_id) != old_secret
    headers = sign_request(signing_secret=old_secret, method="PUT", path=POLICY, body=KILL)
    assert send(api_client, writer, "PUT", POLICY, KILL, signature=headers).status_code == 200

    settings.REQUEST_SIGNING_KEY_PREVIOUS = ""  # rotation finished: the old secret no longer signs
    headers = sign_request(signing_secret=old_secret, method="PUT", path=POLICY, body=KILL)
    response = send(api_client, writer, "PUT", POLICY, KILL, signature=headers)
    assert (response.status_code, response.json()["code"]) == (401, "signature_invalid")


# --- refused, with nothing written ------------------------------------------------------------------


def _wrong_secret(issued):
    return sign_request(signing_secret=signing_secret_for("AAAAAAAAAAAA"), method="PUT", path=POLICY, body=KILL)


def _other_body(issued):
    return signed(issued, "PUT", POLICY, json.dumps({"subject": "project", "kill_switch": True}).encode())


def _other_path(issued):
    return signed(issued, "PUT", CAPS, KILL)


def _other_method(issued):
    return signed(issued, "POST", POLICY, KILL)


def _stale(issued):
    return signed(issued, "PUT", POLICY, KILL, timestamp=int(time.time()) - MAX_SKEW_SECONDS - 5)


def _future(issued):
    return signed(issued, "PUT", POLICY, KILL, timestamp=int(time.time()) + MAX_SKEW_SECONDS + 5)


def _upper_case_signature(issued):
    headers = signed(issued, "PUT", POLICY, KILL)
    return {**headers, "X-MM-Signature": headers["X-MM-Signature"].upper()}


def _short_nonce(issued):
    return signed(issued, "PUT", POLICY, KILL, nonce="short")


def _signature_only(issued):
    return {"X-MM-Signature": signed(issued, "PUT", POLICY, KILL)["X-MM-Signature"]}


@pytest.mark.parametrize(("make_headers", "code"), [
    (_wrong_secret, "signature_invalid"),
    (_other_body, "signature_invalid"),
    (_other_path, "signature_invalid"),
    (_other_method, "signature_invalid"),
    (_stale, "signature_expired"),
    (_future, "signature_expired"),
    (_upper_case_signature, "signature_malformed"),
    (_short_nonce, "signature_malformed"),
    (_signature_only, "signature_malformed"),
])
@pytest.mark.parametrize("require", [True, False], ids=["required", "optional"])
def test_a_bad_signature_is_401_with_its_code_and_writes_nothing(api_client, writer, settings, make_headers, code,
                                                                  require):
    """Whether or not signing is required, a request that sends a signature gets it checked."""
    settings.REQUIRE_SIGNED_WRITES = require
    before = rows()
    response = send(api_client, writer, "PUT", POLICY, KILL, signature=make_headers(writer))
    assert (response.status_code, response.json()["code"]) == (401, code)
    assert response["Content-Type"] == "application/problem+json"
    assert rows() == before and agent_kill_switch(writer) is None
    assert not SignedWriteNonce.objects.exists()  # only a valid signature uses up its nonce


def test_a_reused_nonce_is_401_nonce_reused_and_writes_nothing(api_client, writer, required):
    headers = signed(writer, "PUT", POLICY, KILL)
    assert send(api_client, writer, "PUT", POLICY, KILL, signature=headers).status_code == 200
    before = rows()
    replay = send(api_client, writer, "PUT", POLICY, KILL, signature=headers)
    assert (replay.status_code, replay.json()["code"]) == (401, "nonce_reused")
    assert rows() == before


def test_nonces_are_per_key(api_client, writer, required):
    other = issue_key(AgentFactory.create(), scopes=SCOPES)
    nonce = uuid.uuid4().hex
    for issued in (writer, other):
        response = send(api_client, issued, "PUT", POLICY, KILL, signature=signed(issued, "PUT", POLICY, KILL,
                                                                                  nonce=nonce))
        assert response.status_code == 200


def test_bad_signature_stale_timestamp_and_reused_nonce_have_three_distinct_codes(api_client, writer, required):
    reused = signed(writer, "PUT", POLICY, KILL)
    send(api_client, writer, "PUT", POLICY, KILL, signature=reused)
    codes = [send(api_client, writer, "PUT", POLICY, KILL, signature=headers).json()["code"]
             for headers in (_wrong_secret(writer), _stale(writer), reused)]
    assert codes == ["signature_invalid", "signature_expired", "nonce_reused"]


@pytest.mark.parametrize(("method", "path", "body"), [
    ("PUT", POLICY, KILL),
    ("POST", CAPS, json.dumps({"subject": "agent", "metric": "tokens", "window": "day", "limit": "1"}).encode()),
    ("PUT", "{cap}", json.dumps({"metric": "tokens", "window": "day", "limit": "1"}).encode()),
    ("DELETE", "{cap}", b""),
])
def test_an_unsigned_high_risk_write_is_refused_when_signing_is_required(api_client, writer, required, method,
                                                                         path, body):
    cap = make_cap(subject=writer.api_key.agent, metric="tokens", limit="5")
    path = path.format(cap=f"{CAPS}/{cap.pk}")
    before = rows()
    response = send(api_client, writer, method, path, body)
    assert (response.status_code, response.json()["code"]) == (401, "signature_required")
    assert rows() == before


def test_an_unsigned_high_risk_write_is_accepted_when_signing_is_not_required(api_client, writer, settings):
    settings.REQUIRE_SIGNED_WRITES = False
    response = send(api_client, writer, "PUT", POLICY, KILL)
    assert response.status_code == 200 and agent_kill_switch(writer) is True


def test_other_writes_need_no_signature(api_client, required):
    issued = issue_key(AgentFactory.create(), scopes=["tasks:write"])
    response = send(api_client, issued, "POST", "/api/v1/runs", json.dumps({"task": "t"}).encode())
    assert response.status_code == 201, response.json()


def test_scope_is_checked_before_the_signature(api_client, required):
    reader = issue_key(AgentFactory.create(), scopes=["policy:read"])
    response = send(api_client, reader, "PUT", POLICY, KILL)
    assert (response.status_code, response.json()["code"]) == (403, "missing_scope")


def test_when_the_nonce_store_fails_signed_writes_fail_closed_with_503(api_client, writer, required):
    with connection.cursor() as cursor:  # undone with the test's transaction
        cursor.execute("ALTER TABLE gateway_signedwritenonce RENAME TO gateway_signedwritenonce_gone")
    before = rows()
    response = send(api_client, writer, "PUT", POLICY, KILL, signature=signed(writer, "PUT", POLICY, KILL))
    assert (response.status_code, response.json()["code"]) == (503, "nonce_store_unavailable")
    assert response["Retry-After"]
    assert rows() == before


# --- idempotency ------------------------------------------------------------------------------------


def test_an_idempotent_retry_needs_a_fresh_nonce_and_then_replays_the_stored_answer(api_client, writer, required):
    key = uuid.uuid4().hex
    first = send(api_client, writer, "PUT", POLICY, KILL, idempotency_key=key,
                 signature=signed(writer, "PUT", POLICY, KILL))
    assert first.status_code == 200
    audit_rows = AuditEvent.objects.count()

    retry = send(api_client, writer, "PUT", POLICY, KILL, idempotency_key=key,
                 signature=signed(writer, "PUT", POLICY, KILL, nonce="n" * 16))
    assert retry.status_code == 200
    assert retry["Idempotent-Replayed"] == "true" and retry.json() == first.json()

    reused = send(api_client, writer, "PUT", POLICY, KILL, idempotency_key=key,  # the retry's nonce again
                  signature=signed(writer, "PUT", POLICY, KILL, nonce="n" * 16))
    assert (reused.status_code, reused.json()["code"]) == (401, "nonce_reused")
    assert AuditEvent.objects.count() == audit_rows  # the write happened once


# --- the documented algorithm -------------------------------------------------------------------------


def test_sign_request_follows_the_documented_canonical_string():
    secret, body = "mms_" + "ab" * 32, b'{"subject": "agent"}'
    headers = sign_request(signing_secret=secret, method="put", path="/api/v1/policy", body=body,
                           timestamp=1767225600, nonce="0123456789abcdef")
    canonical = "\n".join(["MM-HMAC-SHA256-v1", "PUT", "/api/v1/policy", "1767225600", "0123456789abcdef",
                           hashlib.sha256(body).hexdigest()])
    expected = hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    assert headers == {"X-MM-Timestamp": "1767225600", "X-MM-Nonce": "0123456789abcdef", "X-MM-Signature": expected}
    assert sign_request(signing_secret=secret, method="PUT", path="/api/v1/policy")["X-MM-Nonce"] != \
        sign_request(signing_secret=secret, method="PUT", path="/api/v1/policy")["X-MM-Nonce"]


# --- across processes ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_nonce_replayed_to_the_other_gunicorn_worker_is_refused(tmp_path):
    """Real gunicorn, two workers, each with its own database connection; the access log names the
    worker (pid) that answered each request, so the test knows the replay reached the other one."""
    issued = issue_key(AgentFactory.create(), scopes=SCOPES)
    access_log = tmp_path / "access.log"
    env = {"REQUIRE_SIGNED_WRITES": "true",
           "GUNICORN_CMD_ARGS": f"--access-logfile {access_log} --access-logformat '%(p)s %(m)s %(s)s'"}
    body = {"subject": "agent", "kill_switch": True}
    headers = signed(issued, "PUT", POLICY, json.dumps(body).encode())

    def answered_by() -> list[tuple[str, str]]:  # (pid, status) of each PUT, in order
        lines = access_log.read_text().splitlines()
        return [(pid, status) for pid, method, status in (line.split() for line in lines) if method == "PUT"]

    with gunicorn_server(workers=2, env=env) as base:
        url = f"{base}{POLICY}"
        status, answer = http("PUT", url, token=issued.token, body=body)
        assert (status, answer["code"]) == (401, "signature_required")
        status, _ = http("PUT", url, token=issued.token, body=body, headers=headers)
        assert status == 200
        first_worker = answered_by()[-1][0]

        replays: list[tuple[int, str | None]] = []

        def replay(_: int) -> tuple[int, str | None]:
            status, answer = http("PUT", url, token=issued.token, body=body, headers=headers)
            return status, answer.get("code")

        # Four at once: a sync worker accepts a connection only when it is free, so requests sent one
        # after another may all go to the same worker.
        with ThreadPoolExecutor(max_workers=4) as pool:
            for _ in range(25):
                replays.extend(pool.map(replay, range(4)))
                if any(pid != first_worker for pid, _ in answered_by()[2:]):
                    break
        workers = {pid for pid, _ in answered_by()[2:]}

    assert workers - {first_worker}, "no replay reached the other worker"
    assert set(replays) == {(401, "nonce_reused")}
    assert agent_kill_switch(issued) is True
    assert AuditEvent.objects.filter(action__startswith="policy.").count() == 1
    assert SignedWriteNonce.objects.filter(key_id=issued.api_key.key_id).count() == 1
