"""Revocation reaches other, already-running processes within a second."""

import time

import pytest

from apps.keys import services
from tests.factories import TEST_ACTOR, issue_key
from tests.processes import gunicorn_server, http


def first_refusal_after(url: str, token: str, *, limit: float = 1.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit + 1.0:
        status, body = http("GET", url, token=token)
        if status == 401:
            return time.monotonic() - start
        time.sleep(0.02)
    return float("inf")


@pytest.mark.django_db(transaction=True)
def test_revocation_is_refused_by_other_running_processes_within_one_second():
    issued = issue_key()
    with gunicorn_server(workers=2) as base:
        whoami = f"{base}/api/v1/whoami"
        for _ in range(20):  # both workers verify (and cache) the key
            assert http("GET", whoami, token=issued.token)[0] == 200

        services.api_key_revoke(actor=TEST_ACTOR, api_key=issued.api_key, reason="leaked")
        assert first_refusal_after(whoami, issued.token) < 1.0
        answers = {http("GET", whoami, token=issued.token) [1]["code"] for _ in range(10)}
        assert answers == {"key_revoked"}
