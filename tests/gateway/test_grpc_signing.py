"""The signing step of the gRPC per-call guard, against a real `manage.py grpcserve`.

SetPolicy is not served over gRPC yet (it answers UNIMPLEMENTED), but every ControlPlane call passes
the guard first: a refusal is UNAUTHENTICATED with its `error-code`, and a call that gets as far as
UNIMPLEMENTED was let through by the guard. The signature covers the method path and the request
bytes as received, so it does not depend on which RPC methods exist.
"""

from __future__ import annotations

import time

import grpc
import pytest

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
    metadata = [("authorization", f"Bearer {token}"), ("idempotency-key", "k1")]
    metadata += [(name.lower(), value) for name, value in (signature or {}).items()]
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.ControlPlaneStub(channel).SetPolicy(request, metadata=metadata, timeout=10)
    error = caught.value
    return error.code(), dict(error.trailing_metadata() or ()).get("error-code")


def sign(issued, request: pb.SetPolicyRequest, *, path: str = SET_POLICY, **overrides) -> dict[str, str]:
    return sign_request(signing_secret=issued.signing_secret, method="POST", path=path,
                        body=request.SerializeToString(), **overrides)


def test_the_guard_checks_the_signature_of_a_signed_rpc(server):
    issued = issue_key(AgentFactory(), scopes=["policy:read", "policy:write"])
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

    good = sign(issued, request)
    assert set_policy(server, issued.token, request, good) == (grpc.StatusCode.UNIMPLEMENTED, "not_implemented")
    assert SignedWriteNonce.objects.filter(key_id=issued.api_key.key_id, nonce=good["X-MM-Nonce"]).count() == 1
    assert set_policy(server, issued.token, request, good) == (unauthenticated, "nonce_reused")
    assert not Policy.objects.exists()


def test_unsigned_rpcs_that_are_not_signed_operations_pass_the_guard(server):
    issued = issue_key(AgentFactory(), scopes=["policy:read"])
    with grpc.insecure_channel(server) as channel:
        response = pb_grpc.ControlPlaneStub(channel).WhoAmI(
            pb.WhoAmIRequest(), metadata=[("authorization", f"Bearer {issued.token}")], timeout=10)
    assert response.key_id == issued.api_key.key_id
