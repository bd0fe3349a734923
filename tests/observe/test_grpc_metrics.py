"""The gRPC process's metrics reach /metrics: grpcserve and gunicorn share the metrics directory,
and the web's scrape merges the gRPC process's samples with its own."""

from __future__ import annotations

import urllib.request

import grpc
import pytest

from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2 as pb
from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2_grpc as pb_grpc
from tests.factories import issue_key
from tests.observe.metrics_text import value
from tests.processes import grpcserve, gunicorn_server

pytestmark = pytest.mark.django_db(transaction=True)


def test_grpc_calls_are_counted_and_scraped_through_the_web(tmp_path):
    token = issue_key(scopes=["tasks:write"]).token
    stale = tmp_path / "counter_grpc-999999.db"  # a previous gRPC server's: cleaned when grpcserve starts
    stale.write_bytes(b"\0" * 8)
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with grpcserve(env=env) as (_, address), grpc.insecure_channel(address) as channel:
        assert not stale.exists()
        stub = pb_grpc.ControlPlaneStub(channel)
        for _ in range(3):
            stub.WhoAmI(pb.WhoAmIRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=5)
        with pytest.raises(grpc.RpcError) as refused:
            mistyped = token[:-1] + ("x" if token[-1] != "x" else "y")  # never the token itself
            stub.WhoAmI(pb.WhoAmIRequest(), metadata=[("authorization", f"Bearer {mistyped}")], timeout=5)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with gunicorn_server(workers=1, env=env) as base:
            with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:  # noqa: S310  # loopback
                text = response.read().decode()
    assert value(text, "modeloman_requests_total", transport="grpc", operation="WhoAmI", status="OK") == 3
    assert value(text, "modeloman_requests_total", transport="grpc", operation="WhoAmI",
                 status="UNAUTHENTICATED") == 1
    assert value(text, "modeloman_request_duration_seconds_count", transport="grpc", operation="WhoAmI") == 4
    assert value(text, "modeloman_auth_failures_total", reason="token_malformed") == 1  # its checksum fails
