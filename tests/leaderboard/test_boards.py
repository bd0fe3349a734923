"""The public rules of the board, through real HTTP requests on real rollups: ranking, minimum
samples, opt-in, operator hiding, prompt version comparisons, caching and the JSON."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.audit.models import AuditEvent
from apps.keys import services as key_services
from apps.leaderboard.models import HiddenEntry
from apps.leaderboard.services import hidden_entry_delete, hidden_entry_save
from tests.factories import TEST_ACTOR
from tests.leaderboard.conftest import bench, publisher, record, refresh

pytestmark = pytest.mark.django_db

RAW_TABLE = re.compile(r"\b(prompt_attempts|run_events|benchmarks)\b", re.IGNORECASE)


def entries(client, kind="models", window="7d"):
    response = client.get("/api/v1/leaderboard", {"kind": kind, "window": window})
    assert response.status_code == 200, response.content
    return response.json()["entries"]


def test_three_of_three_ranks_below_950_of_1000(client, settings):
    settings.LEADERBOARD_MIN_SAMPLES = 1
    _, principal = publisher()
    record(principal, model="perfect-but-tiny", successes=3)
    record(principal, model="proven", successes=950, failures=50)
    refresh()
    board = entries(client)
    assert [(e["rank"], e["name"]) for e in board] == [(1, "proven"), (2, "perfect-but-tiny")]
    assert board[1]["success_rate"] == 1.0 and board[1]["success_rate_ci95"] == [0.4385, 1.0]
    html = client.get("/").content.decode()
    assert html.index("proven") < html.index("perfect-but-tiny")


def test_entries_under_the_minimum_sample_size_are_hidden(client, settings):
    settings.LEADERBOARD_MIN_SAMPLES = 30
    _, principal = publisher()
    record(principal, model="twenty-nine", successes=29)
    record(principal, model="thirty", successes=20, failures=10)
    refresh()
    assert [e["name"] for e in entries(client)] == ["thirty"]
    assert "twenty-nine" not in client.get("/").content.decode()
    assert client.get("/models/twenty-nine/").status_code == 404
    assert client.get("/models/thirty/").status_code == 200


def test_only_opted_in_projects_appear_and_opting_out_removes_them(client):
    project, principal = publisher(public_name="Open Lab")
    _, private = publisher(public_name="Closed Lab", opt_in=False)
    record(principal, model="shared-model", successes=40, prompt="greet", version="v1")
    record(private, model="private-model", successes=40, prompt="hush", version="v1")
    refresh()
    assert [e["name"] for e in entries(client)] == ["shared-model"]
    prompts = entries(client, "prompts")
    assert [(e["name"], e["project"]) for e in prompts] == [("greet", "Open Lab")]
    assert "Closed Lab" not in client.get("/prompts/").content.decode()

    project.leaderboard_opt_in = False
    key_services.project_save(actor=TEST_ACTOR, project=project)
    refresh()  # the cache would expire within LEADERBOARD_CACHE_SECONDS; a test does not wait
    assert entries(client) == []
    page = client.get("/").content.decode()
    assert "shared-model" not in page and "Nothing to rank" in page


def test_a_hidden_model_disappears_everywhere_and_the_change_is_audited(client, settings):
    settings.LEADERBOARD_MIN_SAMPLES = 10
    _, principal = publisher()
    record(principal, model="embarrassing", successes=10, failures=5, prompt="p", version="v1")
    record(principal, model="fine", successes=15, prompt="p", version="v1")
    bench(principal, suite="suite-a", model="embarrassing", passed=40, total=50)
    refresh()
    assert {e["name"] for e in entries(client)} == {"embarrassing", "fine"}

    entry = hidden_entry_save(actor=TEST_ACTOR, entry=HiddenEntry(kind="model", name="embarrassing",
                                                                  reason="mislabelled traffic"))
    audit = AuditEvent.objects.get(action="leaderboard_hidden.create")
    assert audit.after == {"kind": "model", "name": "embarrassing", "reason": "mislabelled traffic"}
    refresh()
    assert [e["name"] for e in entries(client)] == ["fine"]
    assert [e["attempts"] for e in entries(client, "prompts")] == [15]  # its attempts left the prompt too
    assert entries(client, "suites") == []
    assert client.get("/models/embarrassing/").status_code == 404
    for path in ("/", "/prompts/", "/suites/"):
        assert "embarrassing" not in client.get(path).content.decode()

    hidden_entry_delete(actor=TEST_ACTOR, entry=entry)
    assert AuditEvent.objects.filter(action="leaderboard_hidden.delete").exists()
    refresh()
    assert {e["name"] for e in entries(client)} == {"embarrassing", "fine"}


def test_prompt_versions_are_compared_with_newcombe_intervals(client, settings):
    settings.LEADERBOARD_MIN_SAMPLES = 30
    project, principal = publisher(public_name="Prompt Shop")
    record(principal, model="m", prompt="answer", version="v1", successes=48, failures=32)
    record(principal, model="m", prompt="answer", version="v2", successes=56, failures=14)
    record(principal, model="m", prompt="answer", version="v10", successes=57, failures=13)
    record(principal, model="m", prompt="answer", version="v3", successes=5, failures=5)  # too few: skipped
    refresh()
    response = client.get(f"/prompts/{project.pk}/answer/")
    assert response.status_code == 200
    html = response.content.decode()
    rows = re.findall(r'<th scope="row" data-label="Version">([^<]+)</th>', html)
    assert rows == ["v1", "v2", "v10"]  # natural version order; v3 is under the minimum
    # v2 vs v1 is Newcombe's example (a): 0.8 - 0.6 = +0.2, 95% interval 0.0524 to 0.3339.
    assert "+20.0 pts" in html and "+5.2 pts to +33.4 pts" in html and "better than v1" in html
    assert "not yet distinguishable from v2" in html
    assert '<svg class="chart"' in html and "<title" in html


def test_pages_run_few_queries_and_none_on_raw_telemetry(client, django_assert_max_num_queries, settings):
    settings.LEADERBOARD_MIN_SAMPLES = 5
    project, principal = publisher()
    for model in ("a", "b", "c", "d"):
        record(principal, model=model, successes=8, failures=2, prompt="p", version="v1")
        bench(principal, suite="s", model=model, passed=8, total=10)
    refresh()
    paths = [f"{page}?window={window}" for page in ("/", "/prompts/", "/suites/") for window in ("24h", "7d", "30d")]
    paths += ["/models/a/", "/models/a/?window=24h", f"/prompts/{project.pk}/p/", "/suites/s/",
              "/api/v1/leaderboard?kind=prompts&window=30d", "/api/v1/leaderboard?kind=suites"]
    for path in paths:
        with CaptureQueriesContext(connection) as queries, django_assert_max_num_queries(2):
            assert client.get(path).status_code == 200, path
        raw = [query["sql"] for query in queries if RAW_TABLE.search(query["sql"])]
        assert raw == [], path
        assert any("prompt_attempts_hourly" in q["sql"] or "leaderboard_attempts_daily" in q["sql"]
                   or "benchmarks_daily" in q["sql"] for q in queries), path
    with django_assert_max_num_queries(0):  # cached
        assert client.get("/").status_code == 200


def test_etag_and_cache_control_and_304_without_a_body(client, settings):
    settings.LEADERBOARD_MIN_SAMPLES = 1
    _, principal = publisher()
    record(principal, model="m", successes=3)
    refresh()
    for path in ("/", "/api/v1/leaderboard"):
        first = client.get(path)
        assert first.status_code == 200
        etag = first["ETag"]
        assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
        assert first["Cache-Control"] == f"public, max-age={settings.LEADERBOARD_CACHE_SECONDS}"
        again = client.get(path, HTTP_IF_NONE_MATCH=etag)
        assert again.status_code == 304
        assert again.content == b""
        assert again["ETag"] == etag
        assert client.get(path, HTTP_IF_NONE_MATCH='"something-else"').status_code == 200


def test_windows_are_plain_links_and_bad_parameters_are_clear_400s(client):
    html = client.get("/").content.decode()
    for window in ("24h", "7d", "30d"):
        assert f'href="?window={window}"' in html
    assert client.get("/?window=1y").status_code == 400
    # An empty value is not the default (the OpenAPI enum does not list it; Schemathesis checks that).
    for query, code in (({"window": "1y"}, "invalid_window"), ({"kind": "agents"}, "invalid_kind"),
                        ({"window": ""}, "invalid_window"), ({"kind": ""}, "invalid_kind")):
        response = client.get("/api/v1/leaderboard", query)
        assert response.status_code == 400
        assert response["Content-Type"].startswith("application/problem+json")
        assert response.json()["code"] == code


def test_empty_board_explains_itself(client):
    html = client.get("/?window=24h").content.decode()
    assert "Nothing to rank in the last 24 hours yet" in html
    assert "<footer" in html and "Wilson" in html


def test_the_json_is_in_the_openapi_schema_with_its_parameters(client):
    schema = client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/leaderboard"]["get"]
    parameters = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert sorted(parameters["window"]["enum"]) == ["24h", "30d", "7d"]
    assert sorted(parameters["kind"]["enum"]) == ["models", "prompts", "suites"]
    assert not any("agentKey" in requirement for requirement in operation.get("security", []))  # public
    assert "security" not in schema


def test_suites_rank_models_by_pass_rate(client, settings):
    settings.LEADERBOARD_MIN_SAMPLES = 30
    _, principal = publisher()
    bench(principal, suite="humaneval", model="steady", passed=180, total=200)  # 95% low end 0.851
    bench(principal, suite="humaneval", model="lucky", passed=10, total=10)
    bench(principal, suite="humaneval", model="lucky", passed=28, total=30)  # 38/40: low end 0.835
    refresh()
    board = entries(client, "suites")
    assert [(e["name"], e["model"], e["rank"]) for e in board] == [("humaneval", "steady", 1),
                                                                    ("humaneval", "lucky", 2)]
    assert board[1]["tasks"] == 40 and board[1]["runs"] == 2
    assert client.get("/suites/humaneval/").status_code == 200
