"""The signing step of the gRPC per-call guard, against a real `manage.py grpcserve`.

A refusal is UNAUTHENTICATED with its `error-code` and writes nothing; a correctly signed SetPolicy
engages the kill switch (one policy row, one audit row). The signature covers the method path and
the request bytes as received.
"""

from __future__ import annotations

import time
import uuid

import grpc
import pytest

from apps.audit.models import AuditEvent
from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2 as pb
from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2_grpc as pb_grpc
from apps.gateway.models import SignedWriteNonce
from apps.gateway.signature import sign_request
from apps.gateway.signing import MAX_SKEW_SECONDS
from apps.policy.models import Policy
from tests.factories import AgentFactory, issue_key
from tests.processes import grpcserve

pytestmark = pytest.mark.django_db(transaction=True)
SET_POLICY = "/modeloman.v1.ControlPlane/SetPolicy"


@pytest.fixture(scope="module")
def server(django_db_setup):
    with grpcserve(env={"REQUIRE_SIGNED_WRITES": "true"}) as (_, address):
        yield address


def set_policy(address: str, token: str, request: pb.SetPolicyRequest, signature: dict[str, str] | None = None):
    """(status, error code) of one SetPolicy call."""
    metadata = [("authorization", f"Bearer {token}"), ("idempotency-key", uuid.uuid4().hex)]
    metadata += [(name.lower(), value) for name, value in (signature or {}).items()]
    with grpc.insecure_channel(address) as channel:
        try:
            pb_grpc.ControlPlaneStub(channel).SetPolicy(request, metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            return error.code(), dict(error.trailing_metadata() or ()).get("error-code")
    return grpc.StatusCode.OK, None


def sign(issued, request: pb.SetPolicyRequest, *, path: str = SET_POLICY, **overrides) -> dict[str, str]:
    return sign_request(signing_secret=issued.signing_secret, method="POST", path=path,
                        body=request.SerializeToString(), **overrides)


def test_the_guard_checks_the_signature_of_a_signed_rpc(server):
    issued = issue_key(AgentFactory.create(), scopes=["policy:read", "policy:write"])
    request = pb.SetPolicyRequest(subject="agent", kill_switch=True, reason="incident")
    other = pb.SetPolicyRequest(subject="project", kill_switch=True, reason="incident")
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED

    assert set_policy(server, issued.token, request) == (unauthenticated, "signature_required")
    assert set_policy(server, issued.token, request, sign(issued, other)) == (unauthenticated, "signature_invalid")
    assert set_policy(server, issued.token, request, sign(issued, request, path="/api/v1/policy")) == (
        unauthenticated, "signature_invalid")
    stale = sign(issued, request, timestamp=int(time.time()) - MAX_SKEW_SECONDS - 5)
    assert set_policy(server, issued.token, request, stale) == (unauthenticated, "signature_expired")
    assert not SignedWriteNonce.objects.exists()

    assert not Policy.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="policy.").exists()

    good = sign(issued, request)
    assert set_policy(server, issued.token, request, good) == (grpc.StatusCode.OK, None)
    assert SignedWriteNonce.objects.filter(key_id=issued.api_key.key_id, nonce=good["X-MM-Nonce"]).count() == 1
    assert Policy.objects.get(agent=issued.api_key.agent).kill_switch is True
    assert AuditEvent.objects.filter(action__startswith="policy.").count() == 1
    assert set_policy(server, issued.token, request, good) == (unauthenticated, "nonce_reused")
    assert AuditEvent.objects.filter(action__startswith="policy.").count() == 1


def test_unsigned_rpcs_that_are_not_signed_operations_pass_the_guard(server):
    issued = issue_key(AgentFactory.create(), scopes=["policy:read"])
    with grpc.insecure_channel(server) as channel:
        response = pb_grpc.ControlPlaneStub(channel).WhoAmI(
            pb.WhoAmIRequest(), metadata=[("authorization", f"Bearer {issued.token}")], timeout=10)
    assert response.key_id == issued.api_key.key_id
