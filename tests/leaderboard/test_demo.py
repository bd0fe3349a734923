"""seed_demo data on every public page and the JSON: what must never leak does not, and
--clear takes the demo off the board."""

from __future__ import annotations

import re
from decimal import Decimal
from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection

from apps.keys.models import Agent, ApiKey, Project
from apps.leaderboard.models import DemoProject
from apps.telemetry.models import Run

pytestmark = pytest.mark.django_db

LINK = re.compile(r'href="(/(?:models|prompts|suites)/[^"?]*/)[^"]*"')


@pytest.fixture
def demo():
    out = StringIO()
    call_command("seed_demo", "--days", "30", "--attempts-per-day", "300", stdout=out)
    assert "Loaded demo data" in out.getvalue()
    cache.clear()
    return out.getvalue()


def _private_strings() -> set[str]:
    demo_ids = list(DemoProject.objects.values_list("project_id", flat=True))
    secrets = set()
    secrets |= {agent.name for agent in Agent.objects.filter(project_id__in=demo_ids)}
    secrets |= {key.key_id for key in ApiKey.objects.filter(agent__project_id__in=demo_ids)}
    for run in Run.objects.filter(project_id__in=demo_ids):
        secrets |= {str(run.pk), run.pk.hex}
    for project in Project.objects.filter(pk__in=demo_ids):
        secrets.add(project.slug)  # no slug is public, opted in or not
        if not project.leaderboard_opt_in:
            secrets |= {project.name, project.public_name}
    with connection.cursor() as cursor:
        cursor.execute("SELECT agent_id, sum(cost_usd) FROM prompt_attempts WHERE project_id = ANY(%s) "
                       "GROUP BY agent_id", [demo_ids])
        for _, cost in cursor.fetchall():
            cost = Decimal(cost)
            # As a page or the JSON would print money. A bare two-decimal "13.09" is left out: it turns
            # up by chance among the public figures (rates, latencies) and made this scan flaky.
            secrets |= {str(cost), f"{cost:.4f}", f"${cost:,.2f}", f"${cost:.2f}"}
        # The private project's prompt name only exists in its own attempts.
        cursor.execute("SELECT DISTINCT prompt_name FROM prompt_attempts a JOIN keys_project p ON p.id = a.project_id "
                       "WHERE NOT p.leaderboard_opt_in AND a.project_id = ANY(%s)", [demo_ids])
        secrets |= {name for (name,) in cursor.fetchall() if name}
    return secrets


def test_no_page_and_no_json_reveals_private_data(client, demo):
    secrets = _private_strings()
    assert {"demo-planner", "demo-skunkworks", "Skunkworks", "secret-sauce"} <= secrets  # the scan looks for them
    assert len([s for s in secrets if re.fullmatch(r"[0-9A-Za-z]{12}", s)]) >= 5  # key ids

    # Every board; every page they link to, in the board's window, where it must be shown; and the same
    # page in the other windows, where it may be too small to show (a 404 "Not on the board", which
    # depends on the hour the data was seeded at) but must leak nothing either.
    windows = ("24h", "7d", "30d")
    boards = {f"{page}?window={window}" for page in ("/", "/prompts/", "/suites/") for window in windows}
    pages, linked_in_window = set(boards), set()
    statuses: dict[str, int] = {}
    bodies: dict[str, str] = {}
    while pages - statuses.keys():
        path = sorted(pages - statuses.keys())[0]
        response = client.get(path)
        statuses[path], bodies[path] = response.status_code, response.content.decode()
        shown_in = path.rsplit("?window=", 1)[1]
        for link in LINK.findall(bodies[path]) if response.status_code == 200 else ():
            linked_in_window.add(f"{link}?window={shown_in}")
            pages |= {f"{link}?window={window}" for window in windows}
    for path, status in statuses.items():
        if path in boards or path in linked_in_window:
            assert status == 200, path
        else:
            assert status == 200 or (status == 404 and "Not on the board" in bodies[path]), path
    for kind in ("models", "prompts", "suites"):
        for window in windows:
            path = f"/api/v1/leaderboard?kind={kind}&window={window}"
            response = client.get(path)
            assert response.status_code == 200
            bodies[path] = response.content.decode()
    assert any("/models/" in path for path in bodies) and any(re.match(r"/prompts/\d+/", path) for path in bodies)
    assert any("/suites/" in path and path.count("/") > 2 for path in bodies)

    leaks = {(path, secret) for path, body in bodies.items() for secret in secrets if secret in body}
    assert leaks == set()
    # The demo is there and says so.
    overview = bodies["/?window=30d"]
    assert "Demo data" in overview and "claude-3-5-sonnet" in overview
    assert "Acme Research" in bodies["/prompts/?window=30d"]
    assert "phi-3-mini" not in overview  # too few attempts
    assert "not yet distinguishable" in "".join(bodies.values())


def test_clear_removes_the_demo_and_make_run_seeds_only_an_empty_database(client, demo):
    assert client.get("/api/v1/leaderboard").json()["entries"]
    out = StringIO()
    call_command("seed_demo", "--clear", stdout=out)
    assert "Removed demo data" in out.getvalue()
    cache.clear()
    body = client.get("/api/v1/leaderboard?window=30d").json()
    assert body["entries"] == [] and body["demo"] is False
    demo_ids = list(DemoProject.objects.values_list("project_id", flat=True))
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM prompt_attempts WHERE project_id = ANY(%s)", [demo_ids])
        assert cursor.fetchone()[0] == 0
    assert not ApiKey.objects.filter(agent__project_id__in=demo_ids, revoked_at__isnull=True).exists()

    quiet = StringIO()
    call_command("seed_demo", "--if-empty", stdout=quiet)  # projects exist: nothing happens
    assert quiet.getvalue() == ""
    assert client.get("/api/v1/leaderboard?window=30d").json()["entries"] == []
