"""The leaderboard on the real TimescaleDB engine (tools/timescale): its boards come from the
continuous aggregates, the new daily one included."""

from __future__ import annotations

import datetime as dt
import io
import uuid

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.keys.models import Project
from apps.leaderboard import selectors
from tests.telemetry.timeseries_data import attempt, insert_attempts

pytestmark = [pytest.mark.timescale, pytest.mark.django_db(transaction=True)]


def test_boards_from_continuous_aggregates(settings):
    settings.LEADERBOARD_MIN_SAMPLES = 5
    project = Project.objects.create(slug=f"ts-{uuid.uuid4().hex[:8]}", name="TS", public_name="TS Lab",
                                     leaderboard_opt_in=True)
    model = f"ts-model-{uuid.uuid4().hex[:8]}"
    now = timezone.now()
    rows = [attempt(now - dt.timedelta(hours=2, minutes=i), project_id=project.pk, model=model, success=i % 4 != 0,
                    latency_ms=100 + i) for i in range(20)]
    rows += [attempt(now - dt.timedelta(days=3, minutes=i), project_id=project.pk, model=model) for i in range(10)]
    insert_attempts(rows)

    def entry(window: str) -> selectors.Entry:
        (found,) = [e for e in selectors.board(kind="models", window_key=window).entries if e.name == model]
        return found

    # Rows older than an aggregate's watermark (an earlier test refreshed it) are seen once
    # refreshed, which is what telemetry_maintenance does every few minutes.
    call_command("telemetry_maintenance", "--full", stdout=io.StringIO())
    assert (entry("24h").attempts, entry("24h").successes) == (20, 15)
    assert (entry("7d").attempts, entry("7d").successes) == (30, 25)
    assert entry("7d").p50_ms is not None
