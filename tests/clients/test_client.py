"""The agent client library (clients/python/modeloman_client) against real servers: gunicorn as
deployed and `manage.py grpcserve`, both requiring signed high-risk writes.

The same agent story through `Client.rest` and `Client.grpc` gives the same typed results; a write
whose response is lost is retried with the same idempotency key and replays instead of counting
twice; signed writes are signed by the client and refused without the signing secret."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from modeloman_client import Admission, Client, Identity, ModeloManError, Run

from apps.policy.models import Policy
from apps.telemetry.models import Run as RunRow
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

    admission = client.admit(model=MODEL, estimated_input_tokens=2000, estimated_output_tokens=1000)
    assert isinstance(admission, Admission) and admission.reservation_id
    seen.append((admission.allowed, admission.reasons, admission.estimated_cost_usd,
                 [(c.metric, c.limit, c.reserved, c.remaining) for c in admission.caps]))
    run = client.start_run(task="story", metadata={"ticket": "T-1"})
    assert isinstance(run, Run)
    seen.append((run.status, run.finished_at, run.metadata))
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
    assert seen[1][:3] == (True, [], Decimal("0.004"))  # 2000 x $1 + 1000 x $2 per million tokens
    assert seen[6] == ("succeeded", 2, 2000, 1000, Decimal("0.004"))
    assert seen[7] == [("cost_usd", "day", Decimal("10"), Decimal("0.004"))]
    assert seen[-3][0] == "INVALID_ARGUMENT"


class DropFirstResponse:
    """Wraps a transport: the first write reaches the server and is done, but its answer is lost."""

    def __init__(self, transport) -> None:
        self.transport, self.keys = transport, list[str]()

    def send(self, method, payload, *, idempotency_key):
        answer = self.transport.send(method, payload, idempotency_key=idempotency_key)
        self.keys.append(idempotency_key)
        if len(self.keys) == 1:
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
        client.transport = dropping = DropFirstResponse(client.transport)
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
