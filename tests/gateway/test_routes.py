"""The URL resolver against the access table, both ways, and every write route against the
idempotency rule. New routes are covered without touching these tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.converters import IntConverter, UUIDConverter
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from apps.audit.models import AuditEvent
from apps.gateway.access import OPERATIONS, AccessClass, Op
from apps.gateway.auth import authenticate_token
from apps.gateway.models import IdempotencyRecord
from apps.gateway.rest.auth import OperationPermission, operation_of
from apps.policy.models import Policy, PolicyCap
from apps.telemetry.models import Run
from tests.factories import issue_key

AGENT_DOORS = ("api/v1/", "healthz", "readyz")  # the admin and the schema are not agent operations


@dataclass(frozen=True)
class Route:
    path: str  # with <converters>
    view: object
    method: str
    operation: str
    url: str  # a concrete URL for it


def _example(converter: object) -> str:
    if isinstance(converter, UUIDConverter):
        return str(uuid.uuid4())
    if isinstance(converter, IntConverter):
        return "1"
    raise AssertionError(f"no example value for {converter!r}: extend _example")


def _walk(patterns, prefix="", converters=None):
    for pattern in patterns:
        here = {**(converters or {}), **getattr(pattern.pattern, "converters", {})}
        path = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, path, here)
        elif isinstance(pattern, URLPattern):
            yield path, pattern.callback, here


def agent_routes() -> list[Route]:
    routes = []
    for path, callback, converters in _walk(get_resolver().url_patterns):
        if not path.startswith(AGENT_DOORS):
            continue
        url = "/" + path
        for name, converter in converters.items():
            url = url.replace(f"<{converter.__class__.__name__.removesuffix('Converter').lower()}:{name}>",
                              _example(converter))
        view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
        if view_class is None:  # a plain Django view (health): GET only
            routes.append(Route(path, callback, "GET", getattr(callback, "operation", ""), url))
            continue
        for method in view_class.http_method_names:
            if method in ("options", "head") or not hasattr(view_class, method):
                continue
            routes.append(Route(path, view_class, method.upper(), operation_of(view_class, method.upper()), url))
    return routes


def test_every_route_names_a_listed_operation():
    routes = agent_routes()
    assert len(routes) > 10
    unlisted = [(r.path, r.method, r.operation) for r in routes if r.operation not in OPERATIONS]
    assert unlisted == []


def test_every_listed_operation_is_served_or_marked_pending():
    served = {route.operation for route in agent_routes()}
    missing = [op.name for op in OPERATIONS.values() if op.name not in served and not op.rest_pending]
    assert missing == []
    assert set(OPERATIONS) == set(Op)


def test_routes_and_table_agree_on_what_a_write_is():
    """A write operation is never served by GET, and a GET never names a write."""
    for route in agent_routes():
        write = OPERATIONS[route.operation].access is AccessClass.WRITE
        assert write == (route.method != "GET"), route


@pytest.mark.django_db
def test_every_write_route_refuses_a_request_without_an_idempotency_key(api_client):
    token = issue_key(scopes=sorted({op.scope for op in OPERATIONS.values() if op.scope})).token
    writes = [r for r in agent_routes() if OPERATIONS[r.operation].access is AccessClass.WRITE]
    assert {r.operation for r in writes} >= {Op.ADMIT, Op.START_RUN, Op.SET_POLICY, Op.DELETE_POLICY_CAP}
    counts = [model.objects.count() for model in (Run, AuditEvent, IdempotencyRecord, Policy, PolicyCap)]
    for route in writes:
        response = api_client.generic(route.method, route.url, "{}", content_type="application/json",
                                      HTTP_AUTHORIZATION=f"Bearer {token}")
        assert (response.status_code, response.json()["code"]) == (400, "idempotency_key_missing"), route
    assert [model.objects.count() for model in (Run, AuditEvent, IdempotencyRecord, Policy, PolicyCap)] == counts


@pytest.mark.django_db
def test_a_write_view_outside_the_gateway_base_is_refused():
    """A view that names a write but does not derive from GatewayApi cannot run without a key:
    the default permission class refuses to serve it."""

    class Sneaky(APIView):
        operation = Op.START_RUN

        def post(self, request):
            return Response(status=201)  # pragma: no cover

    principal = authenticate_token(issue_key(scopes=["tasks:write"]).token)
    request = APIRequestFactory().post("/sneaky")
    request.auth = principal
    with pytest.raises(ImproperlyConfigured):
        OperationPermission().has_permission(request, Sneaky())
