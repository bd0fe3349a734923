"""`manage.py grpcserve` as agents meet it: a real server process on a loopback port."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import uuid

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2 as pb
from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2_grpc as pb_grpc
from apps.keys import services, tokens
from apps.keys.models import ApiKey
from tests.factories import TEST_ACTOR, issue_key
from tests.gateway.certs import make_ca, make_leaf
from tests.processes import database_url, grpcserve

pytestmark = pytest.mark.django_db(transaction=True)


@contextlib.contextmanager
def channel(address: str, credentials: grpc.ChannelCredentials | None = None):
    if credentials is None:
        with grpc.insecure_channel(address) as ch:
            yield ch
    else:  # the test certificates name localhost and 127.0.0.1
        with grpc.secure_channel(address, credentials) as ch:
            yield ch


def whoami(ch: grpc.Channel, token: str | None = None, *, timeout: float = 5, metadata=()):
    call_metadata = [*metadata] + ([("authorization", f"Bearer {token}")] if token else [])
    return pb_grpc.ControlPlaneStub(ch).WhoAmI.with_call(pb.WhoAmIRequest(), metadata=call_metadata, timeout=timeout)


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def error_code(error: grpc.RpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get("error-code")


def health_status(ch: grpc.Channel, service: str = "") -> int:
    return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


# --- the default server ----------------------------------------------------------------------------


def test_health_is_serving_for_the_server_and_the_control_plane(server):
    with channel(server) as ch:
        assert health_status(ch) == health_pb2.HealthCheckResponse.SERVING
        assert health_status(ch, "modeloman.v1.ControlPlane") == health_pb2.HealthCheckResponse.SERVING


def test_whoami_with_a_valid_key_answers_with_the_key_and_echoes_the_request_id(server):
    issued = issue_key(scopes=("tasks:write", "telemetry:write"))
    with channel(server) as ch:
        response, call = whoami(ch, issued.token, metadata=[("x-request-id", "req-0123456789")])
    agent = issued.api_key.agent
    assert agent is not None
    assert response.key_id == issued.api_key.key_id
    assert (response.agent, response.project) == (agent.name, agent.project.slug)
    assert list(response.scopes) == ["tasks:write", "telemetry:write"]
    assert not response.HasField("expires_at")
    assert dict(call.trailing_metadata())["x-request-id"] == "req-0123456789"


def test_whoami_without_a_key_or_with_a_bad_one_is_unauthenticated(server):
    issued = issue_key()
    with channel(server) as ch:
        cases = {
            "not_authenticated": lambda: whoami(ch),
            "token_malformed": lambda: whoami(ch, "not-a-token"),
            "token_invalid": lambda: whoami(ch, tokens.token_for(issued.api_key.key_id, "x" * 32)),
        }
        for expected, call in cases.items():
            error = refused(call)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, expected
            assert error_code(error) == expected
            assert error.details().startswith(f"{expected}: ")
        basic = refused(lambda: pb_grpc.ControlPlaneStub(ch).WhoAmI(
            pb.WhoAmIRequest(), metadata=[("authorization", f"Basic {issued.token}")], timeout=5))
        assert (basic.code(), error_code(basic)) == (grpc.StatusCode.UNAUTHENTICATED, "token_malformed")


def test_a_revoked_key_is_refused_by_the_running_server_within_a_second(server):
    issued = issue_key()
    with channel(server) as ch:
        assert whoami(ch, issued.token)[0].key_id == issued.api_key.key_id  # now cached in the server
        services.api_key_revoke(actor=TEST_ACTOR, api_key=issued.api_key, reason="leaked")
        start = time.monotonic()
        while True:
            try:
                whoami(ch, issued.token)
            except grpc.RpcError as error:
                assert (error.code(), error_code(error)) == (grpc.StatusCode.UNAUTHENTICATED, "key_revoked")
                break
            assert time.monotonic() - start < 1.0, "the revoked key was still accepted after 1 s"
            time.sleep(0.02)


def test_scope_is_checked_from_the_access_table(server):
    reader = issue_key(scopes=("tasks:write",))
    admin = issue_key(scopes=("admin:read",))
    with channel(server) as ch:
        stub = pb_grpc.ControlPlaneStub(ch)

        def export(token):
            return list(stub.ExportState(pb.ExportStateRequest(), metadata=[("authorization", f"Bearer {token}")],
                                         timeout=5))

        error = refused(lambda: export(reader.token))
        assert (error.code(), error_code(error)) == (grpc.StatusCode.PERMISSION_DENIED, "missing_scope")
        records = export(admin.token)
    assert records[0].WhichOneof("record") == "header"
    assert {r.api_key.key_id for r in records if r.WhichOneof("record") == "api_key"} == {
        reader.api_key.key_id, admin.api_key.key_id}


def test_reflection_is_off_by_default(server):
    with channel(server) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        error = refused(lambda: list(stub.ServerReflectionInfo(iter([request]), timeout=5)))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_message_over_one_mebibyte_is_resource_exhausted(server):
    def batch(size: int) -> pb.RecordPromptAttemptsRequest:
        attempt = pb.PromptAttempt(model="gpt-test", input_tokens=1, output_tokens=1, attributes={"pad": "x" * 1000})
        count = size // attempt.ByteSize()
        return pb.RecordPromptAttemptsRequest(attempts=[attempt] * count)

    with channel(server) as ch:
        stub = pb_grpc.ControlPlaneStub(ch)
        near = batch(1000 * 1024)
        assert 1000 * 1024 - 1100 < near.ByteSize() < 1024 * 1024
        error = refused(lambda: stub.RecordPromptAttempts(near, timeout=5))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED  # under the limit: it reached the guard
        error = refused(lambda: stub.RecordPromptAttempts(batch(2 * 1024 * 1024), timeout=5))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- reflection, TLS ------------------------------------------------------------------------------


def test_reflection_lists_the_services_when_enabled(django_db_setup):
    with grpcserve(env={"ENABLE_REFLECTION": "true"}) as (_, address), channel(address) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    names = {service.name for service in answer.list_services_response.service}
    assert {"modeloman.v1.ControlPlane", "grpc.health.v1.Health"} <= names


@pytest.fixture
def pki(tmp_path):
    ca = make_ca()
    server_cert, server_key = make_leaf(ca, "localhost", server=True).write(tmp_path, "server")
    ca_path = tmp_path / "ca.crt"
    ca_path.write_bytes(ca.cert)
    return {"ca": ca, "ca_path": str(ca_path), "cert": server_cert, "key": server_key}


def test_tls_serves_tls_clients_only(pki):
    issued = issue_key()
    env = {"GRPC_TLS_CERT": pki["cert"], "GRPC_TLS_KEY": pki["key"]}
    with grpcserve(env=env) as (_, address):
        with channel(address, grpc.ssl_channel_credentials(root_certificates=pki["ca"].cert)) as ch:
            assert whoami(ch, issued.token)[0].key_id == issued.api_key.key_id
        with channel(address) as plain:
            assert refused(lambda: whoami(plain, issued.token, timeout=3)).code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_clients_without_a_certificate_from_the_configured_ca(pki):
    issued = issue_key()
    client = make_leaf(pki["ca"], "agent-1", server=False)
    stranger = make_leaf(make_ca("Another CA"), "agent-2", server=False)
    env = {"GRPC_TLS_CERT": pki["cert"], "GRPC_TLS_KEY": pki["key"], "GRPC_TLS_CLIENT_CA": pki["ca_path"]}
    root = pki["ca"].cert
    with grpcserve(env=env) as (_, address):
        for credentials in (grpc.ssl_channel_credentials(root_certificates=root),
                            grpc.ssl_channel_credentials(root, stranger.key, stranger.cert)):
            with channel(address, credentials) as ch:
                assert refused(lambda ch=ch: whoami(ch, issued.token, timeout=3)).code() == grpc.StatusCode.UNAVAILABLE
        with channel(address, grpc.ssl_channel_credentials(root, client.key, client.cert)) as ch:
            assert whoami(ch, issued.token)[0].key_id == issued.api_key.key_id


# --- a stuck key lookup, the concurrency bound, the drain on SIGTERM ---------------------------------


@contextlib.contextmanager
def api_keys_locked():
    """Hold an exclusive lock on the API key table: a key lookup that misses the server's cache
    waits for it, which makes a call as slow as the test wants."""
    with psycopg.connect(database_url()) as conn:
        conn.execute(f"LOCK TABLE {ApiKey._meta.db_table} IN ACCESS EXCLUSIVE MODE")
        yield
        conn.commit()


def waiting_on_locks() -> int:
    with psycopg.connect(database_url(), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND wait_event_type = 'Lock'").fetchone()
        assert row is not None  # count(*) always has one row
        return row[0]


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def in_background(call) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = call()
        except grpc.RpcError as error:
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_stuck_key_lookups_hold_up_no_other_call_and_calls_beyond_the_bound_are_resource_exhausted(django_db_setup):
    keys = [issue_key() for _ in range(2)]
    with grpcserve(env={"GRPC_MAX_CONCURRENT_RPCS": "2"}) as (_, address), channel(address) as ch:
        with api_keys_locked():
            calls = [in_background(lambda k=k: whoami(ch, k.token, timeout=15)) for k in keys]
            wait_for(lambda: waiting_on_locks() == 2)
            # Both lookups are stuck in worker threads; a third call is over the bound at once.
            start = time.monotonic()
            error = refused(lambda: health_status(ch))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() - start < 1.0
        for thread, outcome in calls:
            thread.join(10)
            assert "result" in outcome
        assert health_status(ch) == health_pb2.HealthCheckResponse.SERVING


def test_one_stuck_key_lookup_does_not_hold_up_other_calls(django_db_setup):
    issued = issue_key()
    with grpcserve() as (_, address), channel(address) as ch:
        with api_keys_locked():
            thread, outcome = in_background(lambda: whoami(ch, issued.token, timeout=15))
            wait_for(lambda: waiting_on_locks() == 1)
            start = time.monotonic()
            assert health_status(ch) == health_pb2.HealthCheckResponse.SERVING
            assert refused(lambda: whoami(ch, "mmk_bad")).code() == grpc.StatusCode.UNAUTHENTICATED
            assert time.monotonic() - start < 1.0
            assert "result" not in outcome and "error" not in outcome  # still stuck
        thread.join(10)
    assert outcome["result"][0].key_id == issued.api_key.key_id


def test_four_calls_whose_key_lookups_take_half_a_second_finish_in_under_a_second_together(django_db_setup):
    """Key lookups run in the calls' worker threads, side by side: four lookups held for 0.5 s
    each end together, not one after another (SPEC §9)."""
    keys = [issue_key() for _ in range(4)]
    with grpcserve() as (_, address), channel(address) as ch:
        start = time.monotonic()
        with api_keys_locked():
            calls = [in_background(lambda k=k: whoami(ch, k.token, timeout=15)) for k in keys]
            wait_for(lambda: waiting_on_locks() == 4)
            time.sleep(max(0.0, 0.5 - (time.monotonic() - start)))  # each lookup has waited 0.5 s
        for thread, _ in calls:
            thread.join(10)
        elapsed = time.monotonic() - start
    assert [outcome["result"][0].key_id for _, outcome in calls] == [k.api_key.key_id for k in keys]
    assert elapsed < 1.0, elapsed


def test_an_exception_inside_authentication_is_a_status_never_unknown(django_db_setup):
    """A key lookup that fails (here: it waits past the lock timeout) leaves with a mapped status
    and a stable code, not grpc's UNKNOWN."""
    issued = issue_key()
    with grpcserve(env={"DB_LOCK_TIMEOUT_MS": "200"}) as (_, address), channel(address) as ch:
        with api_keys_locked():
            error = refused(lambda: whoami(ch, issued.token, timeout=10))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error_code(error) == "database_timeout"


@pytest.mark.parametrize("processes", ["1", "2"])  # 2: the deployed default (a supervisor, two servers)
def test_sigterm_drains_health_goes_not_serving_the_call_in_flight_completes_new_calls_fail_and_it_exits_0(
        django_db_setup, processes):
    issued = issue_key()
    grace = 10.0
    env = {"GRPC_GRACE_SECONDS": str(grace), "GRPC_PROCESSES": processes}
    with grpcserve(env=env, stop=False) as (process, address):
        with channel(address) as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            with api_keys_locked():
                thread, outcome = in_background(lambda: whoami(ch, issued.token, timeout=30))
                wait_for(lambda: waiting_on_locks() == 1)

                signalled = time.monotonic()
                process.send_signal(signal.SIGTERM)
                assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
                watch.cancel()

                def new_call_unavailable() -> bool:
                    with channel(address) as fresh:
                        try:
                            whoami(fresh, f"mmk_{uuid.uuid4().hex}", timeout=2)
                        except grpc.RpcError as error:
                            return error.code() == grpc.StatusCode.UNAVAILABLE
                    return False

                wait_for(new_call_unavailable, timeout=3)
                assert "result" not in outcome and "error" not in outcome  # still in flight
            thread.join(10)
        assert outcome["result"][0].key_id == issued.api_key.key_id
        assert process.wait(timeout=grace) == 0
        assert time.monotonic() - signalled < grace


def test_each_call_leaves_the_database_connection_as_the_request_cycle_does(django_db_setup):
    """With CONN_MAX_AGE=0 a worker thread's connection is closed when its call ends (as Django
    closes a view's): only the invalidation listener stays connected."""
    issued = issue_key()
    name = f"grpcserve-{uuid.uuid4().hex[:8]}"

    def connections() -> int:
        with psycopg.connect(database_url(), autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name]).fetchone()
            assert row is not None  # count(*) always has one row
            return row[0]

    url = database_url()
    env = {"DATABASE_URL": f"{url}{'&' if '?' in url else '?'}application_name={name}", "CONN_MAX_AGE": "0"}
    with grpcserve(env=env) as (_, address), channel(address) as ch:
        wait_for(lambda: connections() == 1)  # the listener
        with api_keys_locked():
            thread, outcome = in_background(lambda: whoami(ch, issued.token, timeout=15))
            wait_for(lambda: connections() == 2)  # the call's, waiting for the lock
        thread.join(10)
        assert outcome["result"][0].key_id == issued.api_key.key_id
        wait_for(lambda: connections() == 1)


def test_calls_reuse_their_worker_threads_cache_connections(django_db_setup):
    """grpcio gives every call a fresh contextvars context; the cache (rate-limit counts) must still
    be one connection per worker thread, not a new Redis connection per call."""
    import redis
    from django.conf import settings

    issued = issue_key()
    server_redis = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])

    def connections_received() -> int:
        return int(server_redis.info("stats")["total_connections_received"])  # type: ignore[index]  # sync client

    with grpcserve(env={"GRPC_MAX_WORKERS": "2"}) as (_, address), channel(address) as ch:
        whoami(ch, issued.token)
        before = connections_received()
        for _ in range(60):
            whoami(ch, issued.token)
        opened = connections_received() - before
    assert opened <= 2, f"60 calls opened {opened} Redis connections"
