"""The OpenAPI document, generated from what enforces it (drf-spectacular).

- Every `write` of the access table declares the required `Idempotency-Key` header, with the
  pattern `apps.gateway.idempotency` checks.
- Every operation declares the problem responses (`Problem`, application/problem+json) that the
  gateway can give it: 401/403 from its access class and scope, 400/409/422 from idempotency,
  413/415 where it takes a body, 404 where its path names a resource or its service looks up
  the calling agent, 429/503 from rate limiting.
- Request schemas say no more than the server accepts: strict serializers forbid unknown
  fields (`additionalProperties: false`), strict text states its blank and NUL rules, strict
  decimals publish the pattern they are matched against.

A test (tests/gateway/test_openapi.py) holds the document to these rules, and Schemathesis
(.ci/schemathesis.sh) holds the live server to the document.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework import serializers

from apps.gateway.access import OPERATIONS, AccessClass, Op, Operation
from apps.gateway.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    RateLimited,
    Unavailable,
)
from apps.gateway.idempotency import KEY_RE
from apps.gateway.rest.auth import operation_of
from apps.gateway.rest.problems import PROBLEM_CONTENT_TYPE
from apps.gateway.rest.serializers import (
    BLANK_CHARACTERS,
    JSONObjectField,
    StrictCharField,
    StrictDecimalField,
    StrictSerializer,
    StrictUUIDField,
)
from apps.gateway.rest.views import IDEMPOTENCY_HEADER
from apps.gateway.signature import (
    NONCE_HEADER,
    NONCE_RE,
    SIGNATURE_HEADER,
    SIGNATURE_RE,
    TIMESTAMP_HEADER,
    TIMESTAMP_RE,
)

# Operations whose service looks up the calling agent: a key without one is refused (403
# not_an_agent) and a deleted agent is not found (404). WhoAmI and ExportState need neither.
AGENT_OPERATIONS = frozenset(OPERATIONS) - {Op.HEALTH, Op.GET_LEADERBOARD, Op.WHO_AM_I, Op.EXPORT_STATE}

def _signature_header(name: str, pattern: str, description: str) -> dict[str, Any]:
    return {"in": "header", "name": name, "required": False, "description": description,
            "schema": {"type": "string", "pattern": f"^{pattern}$"}}


# Required when the server sets REQUIRE_SIGNED_WRITES (the document describes every deployment).
SIGNATURE_PARAMETERS = [
    _signature_header(TIMESTAMP_HEADER, TIMESTAMP_RE.pattern, "Unix time in whole seconds (±300 s)."),
    _signature_header(NONCE_HEADER, NONCE_RE.pattern, "Fresh for every request (accepted once)."),
    _signature_header(SIGNATURE_HEADER, SIGNATURE_RE.pattern,
                      "Hex HMAC-SHA256 of the canonical request under the key's signing secret "
                      "(README, \"Signed writes\"). Required when the server sets REQUIRE_SIGNED_WRITES."),
]

_UNSUPPORTED_MEDIA_TYPE = 415  # DRF's UnsupportedMediaType; the gateway has no domain error for it

_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem document. Branch on `code`, never on `detail`.",
    "properties": {
        "type": {"type": "string", "description": "urn:modeloman:problem:<code>"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "Stable, machine-readable reason."},
        "request_id": {"type": "string"},
        "errors": {"type": "object", "description": "Field → messages (validation_error)."},
    },
    "required": ["type", "title", "status", "detail", "code"],
    "additionalProperties": True,  # codes add their own members (scope, index, field, limit, ...)
}

# ECMA-262 spellings of the strict text rules (apps.gateway.rest.serializers.StrictCharField).
_NO_NUL = r"^[^\u0000]*$"
_BLANK_CLASS = "".join(f"\\u{ord(c):04x}" for c in BLANK_CHARACTERS)
_NOT_BLANK = rf"^[^\u0000]*[^\u0000{_BLANK_CLASS}][^\u0000]*$"


def problem_statuses(operation: Operation, *, takes_body: bool, has_parameters: bool,
                     names_resource: bool) -> dict[int, type[DomainError] | None]:
    """The problem responses an operation can give, each with the error class that gives it
    (None: DRF's own). Derived from the access table row and the shape of the route."""
    statuses: dict[int, type[DomainError] | None] = {RateLimited.status: RateLimited}
    if takes_body or has_parameters or operation.is_write:
        statuses[InvalidInput.status] = InvalidInput
    if takes_body:
        statuses[PayloadTooLarge.status] = PayloadTooLarge
        statuses[_UNSUPPORTED_MEDIA_TYPE] = None
    if operation.access is not AccessClass.PUBLIC_READ:
        statuses[NotAuthenticated.status] = NotAuthenticated
        if operation.scope is not None or operation.name in AGENT_OPERATIONS:
            statuses[Forbidden.status] = Forbidden
    if names_resource or operation.name in AGENT_OPERATIONS:
        statuses[NotFound.status] = NotFound
    if operation.is_write:
        # idempotency: in flight (409), reused with another body (422); writes fail closed (503)
        # when the rate limiter's shared cache is down.
        statuses[Conflict.status] = Conflict
        statuses[PreconditionFailed.status] = PreconditionFailed
        statuses[Unavailable.status] = Unavailable
    return dict(sorted(statuses.items()))


class AutoSchema(SpectacularAutoSchema):
    """Views keep small nested `InputSerializer`/`OutputSerializer` classes; name their schema
    components after the view (`AdmissionsInput`, `WhoAmIOutput`) so they do not collide. The
    rest of this class adds what the gateway enforces (see the module docstring)."""

    def _get_serializer_name(self, serializer, direction, bypass_extensions=False):
        name = super()._get_serializer_name(serializer, direction, bypass_extensions)
        outer, _, inner = type(serializer).__qualname__.rpartition(".")
        if outer and name == inner.removesuffix("Serializer"):
            return outer.removesuffix("Api") + name
        return name

    def _operation_row(self) -> Operation | None:
        return OPERATIONS.get(operation_of(self.view, self.method))

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        row = self._operation_row()
        if operation is None or row is None:
            return operation
        if row.is_write:
            operation.setdefault("parameters", []).append({
                "in": "header", "name": IDEMPOTENCY_HEADER, "required": True,
                "description": "A fresh key per write. The same key with the same request replays the stored "
                               "response; with another request it is refused (422); while the first is still "
                               "running, 409. Keys are kept at least 24 hours, per agent.",
                "schema": {"type": "string", "pattern": f"^{KEY_RE.pattern}$"},
            })
        if row.signed:  # the request signature (apps.gateway.signing; README, "Signed writes")
            operation.setdefault("parameters", []).extend(SIGNATURE_PARAMETERS)
        if "requestBody" in operation:
            operation["requestBody"]["required"] = True  # no operation takes an empty body
        parameters = operation.get("parameters", [])
        statuses = problem_statuses(
            row, takes_body="requestBody" in operation,
            has_parameters=any(p["in"] == "query" for p in parameters),
            names_resource=any(p["in"] == "path" for p in parameters),
        )
        problem = self._problem_component()
        for status, error in statuses.items():
            response: dict[str, Any] = {
                "description": error.title if error else "Unsupported media type",
                "content": {PROBLEM_CONTENT_TYPE: {"schema": problem.ref}},
            }
            if status in (401, 429, 503):
                header = "WWW-Authenticate" if status == 401 else "Retry-After"
                response["headers"] = {header: {"schema": {"type": "string"}}}
            operation["responses"].setdefault(str(status), response)
        return operation

    def _problem_component(self) -> ResolvedComponent:
        component = ResolvedComponent(name="Problem", type=ResolvedComponent.SCHEMA, object="Problem",
                                      schema=_PROBLEM_SCHEMA)
        self.registry.register_on_missing(component)
        return component

    def _json_value_component(self) -> ResolvedComponent:
        """Any JSON value without NUL in its strings or keys (what jsonb stores); recursive."""
        ref = {"$ref": "#/components/schemas/JsonValue"}
        component = ResolvedComponent(name="JsonValue", type=ResolvedComponent.SCHEMA, object="JsonValue", schema={
            "anyOf": [
                {"type": "string", "pattern": _NO_NUL},
                {"type": ["number", "boolean", "null"]},
                {"type": "array", "items": ref},
                {"type": "object", "propertyNames": {"pattern": _NO_NUL}, "additionalProperties": ref},
            ],
        })
        self.registry.register_on_missing(component)
        return component

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if isinstance(serializer, StrictSerializer):
            schema["additionalProperties"] = False
            schema.pop("description", None)  # StrictSerializer's docstring, not the body's
        return schema

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if isinstance(field, StrictDecimalField | StrictUUIDField):
            schema["pattern"] = _ecma(field.pattern)
        elif isinstance(field, JSONObjectField):
            schema.update({"type": "object", "maxProperties": field.max_properties,
                           "propertyNames": {"pattern": _NO_NUL},
                           "additionalProperties": self._json_value_component().ref})
        elif isinstance(field, StrictCharField) and direction == "request":
            schema["pattern"] = _text_pattern(field)
        elif isinstance(field, serializers.CharField) and field.allow_blank:
            pattern = _regex_pattern(field)
            if pattern:
                schema["pattern"] = _optional(pattern)
        return schema


def _ecma(pattern: str) -> str:
    """A Python pattern as JSON Schema (ECMA-262) writes it: `\\A`/`\\Z` become `^`/`$`."""
    return pattern.replace(r"\A", "^").replace(r"\Z", "$")


def _regex_pattern(field: serializers.CharField) -> str | None:
    regexes = [_ecma(re.compile(v.regex).pattern) for v in field.validators if isinstance(v, RegexValidator)]
    if len(regexes) > 1:
        raise ValueError(f"{field.field_name}: one regex validator per field, so the schema can state it")
    return regexes[0] if regexes else None


def _optional(pattern: str) -> str:
    """DRF skips a field's validators for an allowed blank: "" is accepted whatever the regex."""
    return f"^(?:{pattern.removeprefix('^').removesuffix('$')})?$"


def _text_pattern(field: StrictCharField) -> str:
    """The one pattern a strict text field's value matches: its own regex validator if it has one,
    else the NUL and blank rules."""
    pattern = _regex_pattern(field)
    if pattern is None:
        return _NO_NUL if field.allow_blank else _NOT_BLANK
    return _optional(pattern) if field.allow_blank else pattern


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "apps.gateway.rest.auth.ApiKeyAuthentication"
    name = "agentKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "mmk_<key_id>_<secret><checksum>"}
