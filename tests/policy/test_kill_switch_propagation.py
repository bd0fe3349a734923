"""A kill switch engaged by an operator stops admissions in other running processes within 1 s."""

import time
from typing import Any

import pytest

from apps.keys.models import Agent
from apps.policy import services
from tests.factories import TEST_ACTOR, issue_key, make_price
from tests.processes import gunicorn_server, http

BODY = {"model": "gpt-test", "estimated_input_tokens": 10, "estimated_output_tokens": 10}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("level", ["global", "project", "agent"])
def test_kill_switch_reaches_other_processes_within_one_second(level):
    make_price("gpt-test")
    issued = issue_key(scopes=["tasks:write"])
    agent = Agent.objects.select_related("project").get(api_keys=issued.api_key)
    subjects: dict[str, dict[str, Any]] = {
        "global": {}, "project": {"project": agent.project}, "agent": {"agent": agent}}
    subject = subjects[level]
    with gunicorn_server(workers=2) as base:
        url = f"{base}/api/v1/admissions"
        for _ in range(10):  # both workers load (and cache) the effective policy
            status, body = http("POST", url, token=issued.token, body=BODY)
            assert (status, body["allowed"]) == (200, True)

        services.policy_set(actor=TEST_ACTOR, subject_type=level, kill_switch=True, reason="runaway", **subject)
        start = time.monotonic()
        while True:
            status, body = http("POST", url, token=issued.token, body=BODY)
            if body.get("reasons") == ["kill_switch"]:
                break
            assert time.monotonic() - start < 1.0, "kill switch did not propagate within 1 s"
            time.sleep(0.02)
        answers = [http("POST", url, token=issued.token, body=BODY)[1]["reasons"] for _ in range(10)]
        assert answers == [["kill_switch"]] * 10
