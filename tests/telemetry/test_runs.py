import uuid

import pytest

from apps.gateway.auth import authenticate_token
from apps.policy import services as policy_services
from apps.telemetry.models import Run
from tests.factories import TEST_ACTOR, AgentFactory, issue_key

pytestmark = pytest.mark.django_db
RUNS = "/api/v1/runs"


def test_start_get_and_finish_a_run(api_client, bearer):
    token = issue_key(scopes=["tasks:write"]).token
    started = api_client.post(RUNS, {"task": "summarize", "metadata": {"branch": "main"}}, format="json",
                              **bearer(token))
    assert started.status_code == 201
    run_id = started.json()["id"]
    assert api_client.get(f"{RUNS}/{run_id}", **bearer(token)).json()["status"] == "running"
    finished = api_client.post(f"{RUNS}/{run_id}/finish", {"status": "succeeded", "metadata": {"pr": "7"}},
                               format="json", **bearer(token))
    assert finished.status_code == 200
    assert finished.json()["status"] == "succeeded"
    assert finished.json()["metadata"] == {"branch": "main", "pr": "7"}
    again = api_client.post(f"{RUNS}/{run_id}/finish", {"status": "failed"}, format="json", **bearer(token))
    assert (again.status_code, again.json()["code"]) == (409, "run_already_finished")


def test_agents_only_see_and_finish_their_own_runs(api_client, bearer):
    mine, theirs = issue_key(AgentFactory.create()).token, issue_key(AgentFactory.create()).token
    run_id = api_client.post(RUNS, {"task": "t"}, format="json", **bearer(mine)).json()["id"]
    assert api_client.get(f"{RUNS}/{run_id}", **bearer(theirs)).status_code == 404
    response = api_client.post(f"{RUNS}/{run_id}/finish", {"status": "failed"}, format="json", **bearer(theirs))
    assert response.status_code == 404
    assert Run.objects.get(pk=run_id).status == "running"
    auditor = issue_key(AgentFactory.create(), scopes=["admin:read"]).token
    assert api_client.get(f"{RUNS}/{run_id}", **bearer(auditor)).status_code == 200


def test_finish_takes_the_same_queries_with_1_or_1000_runs(django_assert_num_queries):
    from apps.telemetry import services

    principal = authenticate_token(issue_key().token)
    first, second = (services.run_start(principal=principal, task="t", metadata={}) for _ in range(2))
    # The conditional UPDATE by primary key and the run by primary key; inside the test's transaction
    # the service joins it (no SAVEPOINT, no RELEASE), as inside an idempotent write's.
    with django_assert_num_queries(2):
        services.run_finish(principal=principal, run_id=first.pk, status="succeeded", metadata=None)
    assert principal.agent_id is not None and principal.project_id is not None
    Run.objects.bulk_create([Run(agent_id=principal.agent_id, project_id=principal.project_id, task="x")
                             for _ in range(1000)])
    with django_assert_num_queries(2):
        services.run_finish(principal=principal, run_id=second.pk, status="failed", metadata={"k": "v"})
    assert list(Run.objects.filter(pk__in=[first.pk, second.pk]).order_by("status").values_list("status", flat=True)) \
        == ["failed", "succeeded"]


def test_max_concurrent_runs_and_kill_switch_gate_new_runs(api_client, bearer):
    issued = issue_key()
    agent = issued.api_key.agent
    assert agent is not None
    policy_services.policy_set(actor=TEST_ACTOR, subject_type="agent", agent=agent, max_concurrent_runs=2)
    codes = [api_client.post(RUNS, {"task": "t"}, format="json", **bearer(issued.token)).status_code
             for _ in range(3)]
    assert codes == [201, 201, 409]
    policy_services.policy_set(actor=TEST_ACTOR, subject_type="global", kill_switch=True, reason="stop")
    blocked = api_client.post(RUNS, {"task": "t"}, format="json", **bearer(issued.token))
    assert (blocked.status_code, blocked.json()["code"]) == (403, "kill_switch")


@pytest.mark.parametrize("body", [
    {"task": ""}, {"task": "x" * 201}, {"task": 5}, {"task": "t", "metadata": [1]},
    {"task": "t", "metadata": {f"k{i}": i for i in range(40)}}, {"task": "t", "extra": 1},
])
def test_bad_run_input_is_400_and_writes_nothing(api_client, bearer, body):
    token = issue_key().token
    response = api_client.post(RUNS, body, format="json", **bearer(token))
    assert (response.status_code, response.json()["code"]) == (400, "validation_error")
    assert not Run.objects.exists()


def test_unknown_or_malformed_run_ids_are_404(api_client, bearer):
    token = issue_key().token
    assert api_client.get(f"{RUNS}/{uuid.uuid4()}", **bearer(token)).status_code == 404
    assert api_client.get(f"{RUNS}/not-a-uuid", **bearer(token)).status_code == 404
