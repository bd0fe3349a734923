"""Leaderboard test helpers: publish a project, record attempts through the real ingest
service, refresh the rollups."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.cache import cache

from apps.gateway.auth import authenticate_token
from apps.keys.models import Project
from apps.telemetry import services as telemetry
from apps.telemetry.rollups import rollups_refresh
from apps.telemetry.validation import AttemptIn, BenchmarkIn
from tests.factories import AgentFactory, ProjectFactory, issue_key


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Pages are cached in the shared Redis; every test starts from a cold cache."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def client(client):
    client.defaults["HTTP_HOST"] = "localhost"
    return client


def publisher(*, public_name: str = "Public Project", opt_in: bool = True, **project_fields):
    project = ProjectFactory.create(public_name=public_name, leaderboard_opt_in=opt_in, **project_fields)
    issued = issue_key(AgentFactory.create(project=project), scopes=["telemetry:write", "tasks:write"])
    return project, authenticate_token(issued.token)


def record(principal, *, model: str, successes: int, failures: int = 0, prompt: str = "", version: str = "",
           latency_ms: int = 400, when: dt.datetime | None = None) -> None:
    items = [AttemptIn(model=model, success=index < successes, input_tokens=100, output_tokens=50,
                       latency_ms=latency_ms, prompt_name=prompt, prompt_version=version, time=when)
             for index in range(successes + failures)]
    for start in range(0, len(items), 1000):
        telemetry.attempts_record(principal=principal, items=items[start:start + 1000], batch=True)


def bench(principal, *, suite: str, model: str, passed: int, total: int) -> None:
    telemetry.benchmark_record(principal=principal, item=BenchmarkIn(suite=suite, model=model, score=passed / total,
                                                                    passed=passed, total=total))


def refresh() -> None:
    rollups_refresh(full=True, retention=dt.timedelta(days=90))
    cache.clear()


__all__ = ["Project", "bench", "publisher", "record", "refresh"]
