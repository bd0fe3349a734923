"""The agent client library (clients/python/modeloman_client) against real servers: gunicorn as
deployed and `manage.py grpcserve`, both requiring signed high-risk writes.

The same agent story through `Client.rest` and `Client.grpc` gives the same typed results; a write
whose response is lost is retried with the same idempotency key and replays instead of counting
twice; signed writes are signed by the client and refused without the signing secret."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from modeloman_client import Admission, Client, Identity, ModeloManError, Run
from modeloman_client import client as client_module

from apps.gateway.grpc.server import MAX_RECEIVE_BYTES
from apps.gateway.models import IdempotencyRecord
from apps.policy.models import Policy, Reservation
from apps.telemetry.models import Run as RunRow
from apps.telemetry.validation import MAX_BATCH
from tests.factories import AgentFactory, issue_key, make_cap, make_price
from tests.processes import grpcserve, gunicorn_server

pytestmark = pytest.mark.django_db(transaction=True)

SCOPES = ["tasks:write", "telemetry:write", "policy:read", "policy:write"]
SIGNED = {"REQUIRE_SIGNED_WRITES": "true"}
MODEL = "client-model"


@pytest.fixture(scope="module")
def servers(django_db_setup):
    with gunicorn_server(workers=1, env=SIGNED) as base_url, grpcserve(env=SIGNED) as (_, address):
        yield base_url, address


def connect(servers, transport: str, issued, *, signed: bool = True, **options) -> Client:
    base_url, address = servers
    secret = issued.signing_secret if signed else None
    if transport == "rest":
        return Client.rest(base_url, issued.token, secret, **options)
    return Client.grpc(address, issued.token, secret, **options)


def story(client: Client, agent) -> list:
    """An agent's loop; returns what it could observe, with the ids that differ per run left out."""
    seen: list = []
    me = client.whoami()
    assert isinstance(me, Identity)
    seen.append((me.agent == agent.name, me.project == agent.project.slug, me.scopes))

    run = client.start_run(task="story", metadata={"ticket": "T-1"})
    assert isinstance(run, Run)
    seen.append((run.status, run.finished_at, run.metadata))
    admission = client.admit(model=MODEL, estimated_input_tokens=2000, estimated_output_tokens=1000, run_id=run.id)
    assert isinstance(admission, Admission) and admission.reservation_id
    seen.append((admission.allowed, admission.reasons, admission.estimated_cost_usd,
                 [(c.metric, c.limit, c.reserved, c.remaining) for c in admission.caps]))
    assert str(Reservation.objects.get(id=admission.reservation_id).run_id) == run.id
    seen.append(client.record_run_events(run_id=run.id, events=[{"kind": "plan", "message": "go"}]).accepted)
    now = dt.datetime.now(dt.UTC)
    seen.append(client.record_attempts([
        {"model": MODEL, "success": True, "input_tokens": 1000, "output_tokens": 500, "latency_ms": 40,
         "run_id": run.id, "reservation_id": admission.reservation_id, "time": now},
        {"model": MODEL, "success": False, "input_tokens": 1000, "output_tokens": 500, "latency_ms": 60,
         "run_id": run.id},
    ]).accepted)
    seen.append(client.record_benchmark({"suite": "s", "model": MODEL, "score": 0.7}).accepted)
    finished = client.finish_run(run_id=run.id, status="succeeded")
    got = client.get_run(run_id=run.id)
    assert got.finished_at is not None and got.finished_at == finished.finished_at
    seen.append((got.status, got.attempts, got.input_tokens, got.output_tokens, got.cost_usd))
    seen.append([(c.metric, c.window, c.limit, c.used) for c in client.list_caps()])  # server-computed cost

    level = client.set_policy(subject="agent", max_tokens_per_attempt=50000, reason="story")
    seen.append((level.level, level.max_tokens_per_attempt))
    policy = client.get_policy()
    seen.append((policy.effective.max_tokens_per_attempt, policy.effective.kill_switch,
                 [(lv.level, lv.max_tokens_per_attempt) for lv in policy.levels]))
    cap = client.upsert_cap(subject="agent", metric="requests", window="hour", limit="100")
    cap = client.upsert_cap(cap_id=cap.id, metric="requests", window="hour", limit=Decimal("50"))
    seen.append((cap.level, cap.metric, cap.limit, cap.mode, cap.enabled))
    with pytest.raises(ModeloManError) as refused:
        client.upsert_cap(subject="agent", metric="requests", window="hour", limit="-1")
    seen.append((refused.value.status, refused.value.code))
    client.delete_cap(cap_id=cap.id)
    with pytest.raises(ModeloManError) as gone:
        client.delete_cap(cap_id=cap.id)
    seen.append((gone.value.status, gone.value.code))
    with pytest.raises(ModeloManError) as finished_twice:
        client.finish_run(run_id=run.id, status="failed")
    seen.append((finished_twice.value.status, finished_twice.value.code))
    return seen


def test_the_same_story_gives_the_same_typed_results_over_rest_and_grpc(servers):
    make_price(MODEL)
    outcomes = {}
    for transport in ("rest", "grpc"):
        agent = AgentFactory.create()
        make_cap(subject=agent, metric="cost_usd", window="day", limit="10")
        with connect(servers, transport, issue_key(agent, scopes=SCOPES)) as client:
            outcomes[transport] = story(client, agent)
    assert outcomes["rest"] == outcomes["grpc"]
    seen = outcomes["grpc"]
    assert seen[2][:3] == (True, [], Decimal("0.004"))  # 2000 x $1 + 1000 x $2 per million tokens
    assert seen[6] == ("succeeded", 2, 2000, 1000, Decimal("0.004"))
    assert seen[7] == [("cost_usd", "day", Decimal("10"), Decimal("0.004"))]
    assert seen[-3][0] == "INVALID_ARGUMENT"


class Recording:
    """Wraps a transport: records each call that reached the server (its idempotency key and number
    of items); the answers of the calls numbered in `lose` are lost (the call was done, the client
    sees a reset connection)."""

    def __init__(self, transport, *, lose=()) -> None:
        self.transport, self.lose = transport, set(lose)
        self.keys: list[str] = []
        self.items: list[int] = []

    def send(self, method, payload, *, idempotency_key):
        answer = self.transport.send(method, payload, idempotency_key=idempotency_key)
        self.keys.append(idempotency_key)
        self.items.append(len(payload.get("attempts") or payload.get("events") or ()))
        if len(self.keys) in self.lose:
            raise ConnectionError("connection reset by peer (simulated)")
        return answer

    def close(self) -> None:
        self.transport.close()


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_a_retry_after_a_lost_response_replays_and_does_not_charge_twice(servers, transport):
    make_price(MODEL)
    agent = AgentFactory.create()
    make_cap(subject=agent, metric="cost_usd", window="day", limit="10")
    with connect(servers, transport, issue_key(agent, scopes=SCOPES)) as client:
        run = client.start_run(task="retry")
        client.transport = dropping = Recording(client.transport, lose={1})
        recorded = client.record_attempts([{"model": MODEL, "success": True, "input_tokens": 1000,
                                            "output_tokens": 500, "latency_ms": 5, "run_id": run.id}])
        assert recorded.accepted == 1
        assert len(dropping.keys) == 2 and dropping.keys[0] == dropping.keys[1]  # the same key, retried
        client.transport = dropping.transport
        assert client.get_run(run_id=run.id).attempts == 1
        assert [c.used for c in client.list_caps()] == [Decimal("0.002")]
        # The same logical call made again by hand with its key replays too; a new call is new.
        again = client.record_attempts([{"model": MODEL, "success": True, "input_tokens": 1000,
                                         "output_tokens": 500, "latency_ms": 5, "run_id": run.id}],
                                        idempotency_key=dropping.keys[0])
        assert again == recorded
        assert client.get_run(run_id=run.id).attempts == 1
    assert RunRow.objects.get(pk=run.id).attempts == 1


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_signed_writes_are_signed_and_refused_without_the_secret(servers, transport):
    agent = AgentFactory.create()
    issued = issue_key(agent, scopes=SCOPES)
    calls: list[float] = []
    with connect(servers, transport, issued, signed=False, sleep=calls.append) as unsigned:
        with pytest.raises(ModeloManError) as refused:
            unsigned.set_policy(subject="agent", kill_switch=True, reason="incident")
    assert (refused.value.status, refused.value.code) == ("UNAUTHENTICATED", "signature_required")
    assert calls == []  # a refusal is not retried
    assert not Policy.objects.filter(agent=agent).exists()

    with connect(servers, transport, issued) as client:
        level = client.set_policy(subject="agent", kill_switch=True, reason="incident")
        assert level.kill_switch is True
        assert client.get_policy().effective.kill_switch is True
    assert Policy.objects.get(agent=agent).kill_switch is True


def test_only_transient_failures_are_retried_with_backoff_and_a_bound(servers):
    issued = issue_key(scopes=["tasks:write"])
    waits: list[float] = []
    dead = Client.rest("http://127.0.0.1:9", issued.token, max_attempts=3, sleep=waits.append)
    with pytest.raises(ModeloManError) as unreachable:
        dead.start_run(task="t")
    assert (unreachable.value.status, unreachable.value.code) == ("UNAVAILABLE", None)
    assert len(waits) == 2  # two backoffs for three attempts, doubling (with ±50 % jitter)
    assert 0.05 <= waits[0] <= 0.15 and 0.1 <= waits[1] <= 0.3
    waits.clear()
    with connect(servers, "grpc", issued, sleep=waits.append) as client, pytest.raises(ModeloManError) as denied:
        client.get_policy()
    assert (denied.value.status, denied.value.code, waits) == ("PERMISSION_DENIED", "missing_scope", [])


# --- batches bigger than one call --------------------------------------------------------------------


def test_the_clients_batch_limits_are_the_servers():
    assert client_module.MAX_BATCH_ITEMS == MAX_BATCH
    assert client_module.GRPC_MAX_REQUEST_BYTES == MAX_RECEIVE_BYTES
    assert client_module.REST_MAX_REQUEST_BYTES == settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def attempts(count: int, **fields) -> list[dict]:
    return [{"model": MODEL, "success": True, "input_tokens": 10, "output_tokens": 5, "latency_ms": i % 100,
             **fields} for i in range(count)]


def stored(table: str, **where) -> int:
    column, value = next(iter(where.items()))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table} WHERE {column} = %s", [value])  # noqa: S608  # test names
        return cursor.fetchone()[0]


def part_keys(agent) -> list[str]:
    return sorted(IdempotencyRecord.objects.filter(principal=f"agent:{agent.pk}", key__contains=".")
                  .values_list("key", flat=True))


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_a_batch_over_the_request_size_limit_is_sent_in_parts_each_with_its_own_key(servers, transport):
    """1,000 events with 4,000-character messages: ~8 MB of protobuf (over gRPC's 1 MiB) and ~24 MB
    of JSON (non-ASCII text is escaped; over REST's 8 MiB). Each part fits; together they are the
    batch; the same call again with its key replays every part."""
    agent = AgentFactory.create()
    events = [{"kind": "log", "message": "é" * 4000, "attributes": {"n": str(i)}} for i in range(1000)]
    with connect(servers, transport, issue_key(agent, scopes=SCOPES)) as client:
        run = client.start_run(task="big")
        client.transport = recording = Recording(client.transport)
        recorded = client.record_run_events(run_id=run.id, events=events, idempotency_key="big-batch")
        assert recorded.accepted == 1000 == stored("run_events", run_id=run.id)
        parts = len(recording.keys)
        assert recording.keys == [f"big-batch.{n}" for n in range(1, parts + 1)]
        assert sum(recording.items) == 1000
        assert parts == (8 if transport == "grpc" else 3)  # ~8.0 MB in parts of 1 MiB; ~24 MB in 8 MiB
        assert client.record_run_events(run_id=run.id, events=events, idempotency_key="big-batch") == recorded
        assert stored("run_events", run_id=run.id) == 1000
        assert client.get_run(run_id=run.id).status == "running"


def test_attempts_with_large_attributes_are_split_under_grpcs_receive_limit(servers):
    """The case the docs warn about: 300 attempts with attributes near their 4 KB limit are ~1.2 MB
    as one message, which grpcserve refuses (RESOURCE_EXHAUSTED); the client sends two."""
    make_price(MODEL)
    agent = AgentFactory.create()
    batch = attempts(300, attributes={f"k{i:02}": "x" * 110 for i in range(30)})
    with connect(servers, "grpc", issue_key(agent, scopes=SCOPES)) as client:
        run = client.start_run(task="attributes")
        client.transport = recording = Recording(client.transport)
        assert client.record_attempts([{**a, "run_id": run.id} for a in batch]).accepted == 300
        assert len(recording.keys) == 2 and recording.items[0] > recording.items[1] > 0
        assert stored("prompt_attempts", run_id=run.id) == 300


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_more_than_1000_items_go_in_parts_and_a_lost_answer_retries_its_own_part(servers, transport):
    make_price(MODEL)
    agent = AgentFactory.create()
    with connect(servers, transport, issue_key(agent, scopes=SCOPES)) as client:
        run = client.start_run(task="many")
        client.transport = recording = Recording(client.transport, lose={2})  # part 2 is stored, its answer lost
        recorded = client.record_attempts([{**a, "run_id": run.id} for a in attempts(2500)])
        assert recorded.accepted == 2500 == stored("prompt_attempts", run_id=run.id)
        key = recording.keys[0].rpartition(".")[0]
        assert recording.keys == [f"{key}.1", f"{key}.2", f"{key}.2", f"{key}.3"]  # the retry reused its key
        assert recording.items == [1000, 1000, 1000, 500]
        assert client.get_run(run_id=run.id).attempts == 2500
    assert part_keys(agent) == [f"{key}.1", f"{key}.2", f"{key}.3"]


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_a_refused_part_leaves_the_parts_before_it_and_says_how_many(servers, transport):
    make_price(MODEL)
    agent = AgentFactory.create()
    batch = attempts(1500)
    batch[1200]["input_tokens"] = -1
    with connect(servers, transport, issue_key(agent, scopes=SCOPES)) as client:
        run = client.start_run(task="partial")
        with pytest.raises(ModeloManError) as refused:
            client.record_attempts([{**a, "run_id": run.id} for a in batch])
        assert (refused.value.status, refused.value.code, refused.value.accepted) == ("INVALID_ARGUMENT",
                                                                                      "invalid_item", 1000)
        assert "item 200, field `input_tokens`" in refused.value.message  # counted from `accepted`
        assert stored("prompt_attempts", run_id=run.id) == 1000
        with pytest.raises(ModeloManError) as whole:
            client.record_attempts([{**batch[1200], "run_id": run.id}])
        assert whole.value.accepted == 0  # a batch sent as one call: all or nothing


def test_parts_are_as_large_as_the_limits_allow():
    assert client_module._parts([10] * 2500, 10**9) == [(0, 1000), (1000, 2000), (2000, 2500)]
    assert client_module._parts([4, 4, 4, 4, 4], 8) == [(0, 2), (2, 4), (4, 5)]
    assert client_module._parts([4, 9, 4, 4], 8) == [(0, 1), (1, 2), (2, 4)]  # too big alone: the server says so
    assert client_module._part_key("k", 3) == "k.3"
    long_key = "x" * 128
    assert len(client_module._part_key(long_key, 12)) <= 128 and client_module._part_key(long_key, 12).endswith(".12")


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_the_sizes_the_client_splits_by_are_exact(transport):
    """A part's request is exactly the bytes the client counted for it: at the limit, not over."""
    events = [{"kind": "log", "message": "é" * (3000 + i % 1000), "attributes": {"i": str(i)}} for i in range(600)]
    payload = {"run_id": "8f0c1f9e-5a7b-4c3d-9e2f-0a1b2c3d4e5f", "events": events}
    grpc_sender = client_module.GrpcTransport("127.0.0.1:9", "t", None, tls=False, timeout=1)
    rest_sender = client_module.RestTransport("http://127.0.0.1:9", "t", None, timeout=1)
    sender = grpc_sender if transport == "grpc" else rest_sender
    limit = client_module.GRPC_MAX_REQUEST_BYTES if transport == "grpc" else client_module.REST_MAX_REQUEST_BYTES

    def size(part: dict) -> int:
        if transport == "grpc":
            return grpc_sender._message("RecordRunEvent", part).ByteSize()
        return len(json.dumps({"events": part["events"]}, separators=(",", ":")).encode())

    with pytest.raises(client_module._TooLarge) as too_large:
        sender.send("RecordRunEvent", payload, idempotency_key="k")
    sizes, room = too_large.value.sizes, too_large.value.room
    for start, stop in client_module._parts(sizes, room):
        part = {**payload, "events": events[start:stop]}
        assert size(part) == limit - room + sum(sizes[start:stop]) <= limit
    grpc_sender.close()
