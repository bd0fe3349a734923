"""Rate limits over gRPC: the same module as REST, from the per-call guard."""

from __future__ import annotations

import grpc
import pytest

from tests.factories import issue_key
from tests.gateway.test_grpc_server import channel, error_code, refused, whoami
from tests.gateway.test_rate_limits import fresh_window
from tests.processes import grpcserve

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def limited_server(django_db_setup):
    with grpcserve(env={"RATE_LIMIT_GET": "3/m", "RATE_LIMIT_AUTH_FAILURES": "2/m"}) as (_, address):
        yield address


def test_over_the_limit_a_call_is_resource_exhausted_with_a_retry_delay(limited_server):
    issued = issue_key()
    fresh_window("gateway:get", "3/m", f"key:{issued.api_key.key_id}")
    with channel(limited_server) as ch:
        for _ in range(3):
            whoami(ch, issued.token)
        error = refused(lambda: whoami(ch, issued.token))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_code(error) == "rate_limited"
    trailing = dict(error.trailing_metadata())
    assert 1 <= int(trailing["retry-after"]) <= 60
    assert (trailing["ratelimit-limit"], trailing["ratelimit-remaining"]) == ("3", "0")
