"""Observability through real gunicorn workers: metrics summed across processes (multiprocess
mode), /metrics closed to the public, and production's request log — one JSON line per request
with its request id — with no token in any log line, problem body or audit row."""

from __future__ import annotations

import glob
import json
import os
import secrets
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings
from prometheus_client.multiprocess import MultiProcessCollector

from apps.audit.models import AuditEvent
from tests.factories import AgentFactory, issue_key
from tests.observe.metrics_text import value
from tests.processes import gunicorn_server, http

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC = "203.0.113.9"


def _get(url: str, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310  # loopback test server
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310  # loopback test server
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _whoami_per_worker(directory: Path) -> dict[str, float]:
    """Each worker's own count of served WhoAmI calls, read from its own counter file."""
    return {Path(path).name: sum(s.value for m in MultiProcessCollector.merge([path]) for s in m.samples
                                 if s.name == "modeloman_requests_total" and s.labels.get("operation") == "WhoAmI")
            for path in glob.glob(str(directory / "counter_web-*.db"))}


def test_metrics_sum_every_gunicorn_worker_and_stay_hidden_from_the_public(tmp_path):
    token = issue_key(scopes=["tasks:write"]).token
    metrics_token = secrets.token_urlsafe(32)
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "METRICS_TOKEN": metrics_token}
    stale = tmp_path / "counter_web-999999.db"  # a previous server's worker: cleaned on start
    stale.write_bytes(b"\0" * 8)
    with gunicorn_server(workers=2, env=env) as base:
        assert not stale.exists()
        sent = 0
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(10):  # until both workers have served some (sync workers share one socket)
                statuses = list(pool.map(lambda _: http("GET", f"{base}/api/v1/whoami", token=token)[0], range(40)))
                assert statuses == [200] * 40
                sent += 40
                if len([c for c in _whoami_per_worker(tmp_path).values() if c > 0]) >= 2:
                    break
        per_worker = _whoami_per_worker(tmp_path)
        assert len([c for c in per_worker.values() if c > 0]) == 2, per_worker
        assert sum(per_worker.values()) == sent

        # A public client (relayed by the trusted local proxy) without the token sees nothing.
        relayed = {"X-Forwarded-For": PUBLIC}
        assert _get(f"{base}/metrics", relayed)[0] == 404
        assert _get(f"{base}/metrics", {**relayed, "Authorization": "Bearer not-the-token"})[0] == 404
        status, text = _get(f"{base}/metrics", {**relayed, "Authorization": f"Bearer {metrics_token}"})
        assert status == 200
        assert value(text, "modeloman_requests_total", transport="rest", operation="WhoAmI", status="200") == sent
        assert value(text, "modeloman_request_duration_seconds_count", transport="rest", operation="WhoAmI") == sent
        assert value(text, "modeloman_requests_total", transport="rest", operation="metrics", status="404") == 2
        # Loopback clients (Prometheus on the same host) need no token.
        status, _ = _get(f"{base}/metrics", {})
        assert status == 200


def test_gunicorn_stops_cleanly_when_all_its_workers_exit_at_once(tmp_path):
    """On SIGTERM every worker exits together, and the master runs its `child_exit` hook (which marks
    the worker's gauges dead) once per worker, from the SIGCHLD handler, which the next worker's
    signal can re-enter. The master must still exit 0 (gunicorn_server checks), or systemd marks
    that stop of the web service as failed."""
    for _ in range(5):  # each stop is a race; before the fix, most runs of this test failed
        with gunicorn_server(workers=8, env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}) as base:
            assert http("GET", f"{base}/healthz")[0] == 200


def test_production_logs_one_json_line_per_request_and_never_a_token(tmp_path):
    issued = issue_key(scopes=["tasks:write"])
    token = issued.token
    writer = issue_key(AgentFactory.create(), scopes=["policy:write"])
    wrong = token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]  # well-formed, wrong secret
    secrets_sent = [token, writer.token, wrong]
    log = tmp_path / "gunicorn.log"
    env = {
        "DJANGO_SETTINGS_MODULE": "modeloman.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(60), "KEY_PEPPER": settings.KEY_PEPPER,
        "REQUEST_SIGNING_KEY": secrets.token_urlsafe(40),
        "REQUIRE_SIGNED_WRITES": "false",  # this test is about logs; signing has its own (tests/gateway)
        "ALLOWED_HOSTS": "127.0.0.1", "SECURE_SSL_REDIRECT": "false",
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    if len(settings.KEY_PEPPER) < 32:
        pytest.skip("production needs a pepper of 32+ characters: set KEY_PEPPER")
    bodies: list[str] = []
    with gunicorn_server(workers=1, env=env, log_path=log) as base:
        status, body = http("GET", f"{base}/api/v1/whoami", token=token, headers={"X-Request-ID": "observe-0001-ok"})
        assert status == 200 and body["key_id"] == issued.api_key.key_id
        for headers, path in (({"Authorization": f"Bearer {wrong}"}, "/api/v1/whoami"),
                              ({"Authorization": f"Basic {token}"}, "/api/v1/whoami"),
                              ({}, f"/api/v1/whoami?token={token}"),
                              ({"Accept": "application/json"}, f"/{token}"),
                              ({"Authorization": f"Bearer {wrong}", "X-Request-ID": token}, "/api/v1/whoami")):
            status, text = _get(base + path, headers)
            assert status in (200, 401, 404), (path, status)
            bodies.append(text)
        status, body = http("PUT", f"{base}/api/v1/policy", token=writer.token,
                            body={"subject": "agent", "max_tokens_per_attempt": 5000},
                            headers={"X-Request-ID": "observe-0002-audited"})
        assert status == 200, body
        bodies.append(json.dumps(body))
        status, body = http("PUT", f"{base}/api/v1/policy", token=writer.token,
                            body={"subject": "agent", "max_tokens_per_attempt": 4000},
                            headers={"X-Request-ID": writer.token})  # a request id is never a token
        assert status == 200, body
        status, body = http("POST", f"{base}/api/v1/admissions", token=token,
                            body={"model": "m", "estimated_input_tokens": -1, "estimated_output_tokens": 0})
        assert status == 400 and body["request_id"]  # every problem names its request
        bodies.append(json.dumps(body))

    lines = [line for line in log.read_text().splitlines() if line.strip()]
    non_json = [line for line in lines if not line.startswith("{")]
    assert not non_json, non_json
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    [line] = [r for r in records if r.get("request_id") == "observe-0001-ok"]
    assert line["level"] == "INFO" and line["logger"] == "modeloman.requests" and line["time"]
    assert (line["operation"], line["status"], line["key_id"], line["client"]) == (
        "WhoAmI", 200, issued.api_key.key_id, "127.0.0.1")
    assert line["duration_ms"] > 0 and line["method"] == "GET" and line["path"] == "/api/v1/whoami"
    requests = [r for r in records if r.get("logger") == "modeloman.requests"]
    assert len(requests) >= 8  # one per request (health checks included)
    assert all(r["request_id"] for r in requests)

    [audit] = AuditEvent.objects.filter(request_id="observe-0002-audited")
    assert audit.actor_key_id == writer.api_key.key_id
    audit_rows = json.dumps(list(AuditEvent.objects.values()), default=str)
    for secret in secrets_sent:
        hidden = secret.split("_")[2]  # the secret part: what must never be written anywhere
        assert not [n for n, text in enumerate(lines) if hidden in text], "a token in a log line"
        assert not [text for text in bodies if hidden in text], "a token in a response body"
        assert hidden not in audit_rows, "a token in an audit row"
