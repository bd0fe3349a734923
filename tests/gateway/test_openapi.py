"""The OpenAPI document is a contract a generated client can trust: it is derived from the access
table, the gateway's errors and the validating serializers and structs, and the server keeps it.
(.ci/schemathesis.sh fuzzes a live server against it; these are the rules and the regressions it
found, each as a plain request.)"""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse

from apps.gateway.access import OPERATIONS, AccessClass
from apps.gateway.idempotency import KEY_RE
from apps.policy.models import Policy
from apps.telemetry.models import Run
from tests.factories import AgentFactory, issue_key

HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
PROBLEM = "application/problem+json"
pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    from django.test import Client

    with django_db_blocker.unblock():
        return Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def access_row(path: str, method: str):
    """The access table row of a documented operation, found through the URL resolver."""
    from django.urls import resolve

    from apps.gateway.rest.auth import operation_of

    concrete = path.replace("{run_id}", str(uuid.uuid4())).replace("{cap_id}", "1")
    view = resolve(concrete).func.view_class  # type: ignore[attr-defined]  # set by as_view(); untyped in the stubs
    return OPERATIONS[operation_of(view, method.upper())]


def test_every_write_declares_its_required_idempotency_key(schema):
    seen = 0
    for path, method, operation in operations(schema):
        row = access_row(path, method)
        headers = [p for p in operation.get("parameters", []) if p["in"] == "header" and p["name"] == "Idempotency-Key"]
        if row.is_write:
            seen += 1
            assert len(headers) == 1 and headers[0]["required"] is True, (method, path)
            assert headers[0]["schema"]["pattern"] == f"^{KEY_RE.pattern}$"
        else:
            assert headers == [], (method, path)
    assert seen == 10  # the write routes (UpsertPolicyCap has two: POST and PUT)


def test_every_operation_declares_its_problem_responses(schema):
    assert set(schema["components"]["schemas"]["Problem"]["required"]) >= {"type", "title", "status", "code"}
    for path, method, operation in operations(schema):
        row = access_row(path, method)
        problems = {int(status) for status, response in operation["responses"].items()
                    if PROBLEM in response.get("content", {})}
        for status in problems:
            content = operation["responses"][str(status)]["content"][PROBLEM]
            assert content["schema"] == {"$ref": "#/components/schemas/Problem"}
        assert 429 in problems, (method, path)
        if row.access is AccessClass.PUBLIC_READ:
            assert not problems & {401, 403}, (method, path)
        else:
            assert 401 in problems, (method, path)
        if row.scope is not None:
            assert 403 in problems, (method, path)
        if row.is_write:
            assert problems >= {400, 409, 422, 503}, (method, path)
        if "requestBody" in operation:
            assert operation["requestBody"]["required"] is True
            assert problems >= {400, 413, 415}, (method, path)
        if "{" in path:
            assert 404 in problems, (method, path)


def test_request_bodies_forbid_unknown_fields(schema):
    components = schema["components"]["schemas"]
    for path, method, operation in operations(schema):
        if "requestBody" not in operation:
            continue
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        for variant in body.get("oneOf", [body]):
            if "$ref" in variant:
                variant = components[variant["$ref"].rsplit("/", 1)[1]]
            assert variant["additionalProperties"] is False, (method, path)


def test_get_policy_is_documented_as_the_object_it_returns(schema, api_client, bearer):
    documented = schema["paths"]["/api/v1/policy"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    component = schema["components"]["schemas"][documented["$ref"].rsplit("/", 1)[1]]
    assert component["type"] == "object"
    assert set(component["required"]) == {"agent", "project", "effective", "levels", "caps"}

    token = issue_key(scopes=["policy:read"]).token
    body = api_client.get(reverse("api:policy"), **bearer(token)).json()
    assert set(body) == set(component["properties"])
    effective = schema["components"]["schemas"]["EffectivePolicy"]["properties"]
    assert set(body["effective"]) == set(effective)


# --- what the fuzzer found: the server now refuses what the schema refuses, and accepts what it allows


@pytest.mark.parametrize("body", [
    {"subject": "agent", "max_cost_per_attempt": ""},  # DRF read "" as null
    {"subject": "agent", "max_cost_per_attempt": "0"},  # the model refused 0 only after the serializer
    {"subject": "agent", "max_cost_per_attempt": 0.5},  # amounts are decimal strings
    {"subject": "agent", "max_cost_per_attempt": "01"},
    {"subject": "agent", "max_cost_per_attempt": " 1"},
    {"subject": "agent", "max_cost_per_attempt": "1e3"},
    {"subject": "agent", "reason": "a\u0000b"},
])
def test_policy_input_outside_the_schema_is_400_and_writes_nothing(api_client, bearer, body):
    writer = issue_key(scopes=["policy:write"]).token
    response = api_client.put(reverse("api:policy"), body, format="json", **bearer(writer))
    assert (response.status_code, response.json()["code"]) == (400, "validation_error")
    assert not Policy.objects.filter(subject_type="agent").exists()


def test_an_admission_may_name_its_run(schema):
    """SPEC §5: an optional run id (tests/policy/test_admission_run.py: the reservation records it)."""
    body = schema["paths"]["/api/v1/admissions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    request = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert "run_id" not in request["required"]
    assert request["properties"]["run_id"]["format"] == "uuid"
    assert request["properties"]["run_id"]["type"] == ["string", "null"]  # OpenAPI 3.1: null is no run


@pytest.mark.parametrize(("task", "status"), [
    ("   ", 400),  # blank
    ("x" * 200 + " ", 400),  # the length limit is on what was sent, not on what trimming left
    ("\tsummarize\n", 201),  # taken as sent
])
def test_a_run_task_is_text_taken_as_sent(api_client, bearer, task, status):
    token = issue_key(AgentFactory.create(), scopes=["tasks:write"]).token
    response = api_client.post(reverse("api:runs"), {"task": task}, format="json", **bearer(token))
    assert response.status_code == status
    assert list(Run.objects.values_list("task", flat=True)) == ([task] if status == 201 else [])


def test_integers_written_with_a_zero_fraction_are_integers(api_client, bearer):
    # JSON Schema's `integer` includes 5.0: the fuzzer sends it, and so may a generated client.
    token = issue_key(AgentFactory.create(), scopes=["tasks:write", "telemetry:write"]).token
    admitted = api_client.post(reverse("api:admissions"), {"model": "m", "estimated_input_tokens": 5.0,
                                                           "estimated_output_tokens": 0, "estimated_cost_usd": "1"},
                               format="json", **bearer(token))
    assert admitted.status_code == 200, admitted.json()
    bench = api_client.post(reverse("api:benchmarks"), {"suite": "s", "model": "m", "score": 1, "passed": 3.0,
                                                        "total": 4},
                            format="json", **bearer(token))
    assert (bench.status_code, bench.json()) == (201, {"accepted": 1})
    fraction = api_client.post(reverse("api:benchmarks"), {"suite": "s", "model": "m", "score": 1, "passed": 2.5},
                               format="json", **bearer(token))
    assert (fraction.status_code, fraction.json()["field"]) == (400, "passed")


def test_a_request_without_a_body_is_refused_as_the_schema_says(api_client, bearer):
    token = issue_key(AgentFactory.create(), scopes=["telemetry:write"]).token
    response = api_client.post(reverse("api:benchmarks"), **bearer(token))
    assert response.status_code == 400
