"""A write whose transaction is run again (after a serialization failure or deadlock) answers with
what the committed run did, not with what the rolled-back run did — on both transports."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from rest_framework.test import APIClient

from tests.factories import issue_key

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def first_stored_response_fails():
    """The first storing of a write's response (the UPDATE of its idempotency record, after the
    write itself ran) fails as a serialization failure would; later ones pass. A sequence counts
    the tries: nextval is not undone by the rollback it causes."""
    with connection.cursor() as cursor:
        cursor.execute("""
            CREATE SEQUENCE test_store_tries;
            CREATE FUNCTION test_fail_first_store() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('test_store_tries') = 1 THEN
                    RAISE EXCEPTION 'first try fails' USING ERRCODE = '40001';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER test_fail_first_store BEFORE UPDATE ON telemetry_idempotencyrecord
                FOR EACH ROW EXECUTE FUNCTION test_fail_first_store();
        """)
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER test_fail_first_store ON telemetry_idempotencyrecord; "
                       "DROP FUNCTION test_fail_first_store(); DROP SEQUENCE test_store_tries;")


def test_a_rest_write_run_again_answers_with_the_committed_run(first_stored_response_fails):
    issued = issue_key(scopes=["tasks:write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.token}")
    started = client.post("/api/v1/runs", {"task": "retry"}, format="json", HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)
    assert started.status_code == 201, started.json()
    run_id = started.json()["id"]
    # The run the agent was told about is the one that exists.
    assert client.get(f"/api/v1/runs/{run_id}").status_code == 200


def test_a_grpc_write_run_again_answers_with_the_committed_run(first_stored_response_fails):
    import grpc

    from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2 as pb
    from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2_grpc as pb_grpc
    from tests.processes import grpcserve

    issued = issue_key(scopes=["tasks:write"])
    auth = [("authorization", f"Bearer {issued.token}")]
    with grpcserve() as (_, address), grpc.insecure_channel(address) as channel:
        stub = pb_grpc.ControlPlaneStub(channel)
        started = stub.StartRun(pb.StartRunRequest(task="retry"), timeout=10,
                                metadata=[*auth, ("idempotency-key", uuid.uuid4().hex)])
        assert stub.GetRun(pb.GetRunRequest(run_id=started.id), metadata=auth, timeout=10).id == started.id
