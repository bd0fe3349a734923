"""The JSON parsers: `JSONParser` for every DRF endpoint that takes a JSON object, `RawJSONParser`
for the telemetry endpoints, which decode their bodies themselves (apps.telemetry.validation).

Nesting is bounded: a body nested thousands deep makes the decoder raise RecursionError, and one
nested a few hundred deep decodes but then exhausts the stack in whatever walks it next
(validators, json.dumps, the renderer). Both are a 400 `malformed_request`, never a 500.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser
from rest_framework.request import Request

# Far deeper than any of our request bodies or run metadata needs, far below the stack limit.
MAX_JSON_DEPTH = 32


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether containers in `value` nest deeper than `limit` (iteratively: no recursion)."""
    stack = [(value, 1)]
    children: Iterable[Any]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class JSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        # Django's `body`, not `stream.read()`: it enforces DATA_UPLOAD_MAX_MEMORY_SIZE (413).
        body = parser_context["request"].body
        try:
            data = json.loads(body, parse_constant=_refuse_constant)
        except RecursionError:
            raise ParseError("The body is nested too deeply.") from None
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
            raise ParseError(f"JSON parse error - {error}") from None
        if nesting_exceeds(data, MAX_JSON_DEPTH):
            raise ParseError(f"The body is nested more than {MAX_JSON_DEPTH} levels deep.")
        return data


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")  # NaN, Infinity: DRF's STRICT_JSON behaviour


class RawJSONParser(BaseParser):
    """Hands telemetry views the JSON body as bytes: they decode it straight into typed items
    (apps.telemetry.validation), which is many times faster than parsing to dicts first."""

    media_type = "application/json"

    # DRF hands views whatever `parse` returns as request.data; these views want the bytes.
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> bytes:  # type: ignore[override]
        # Django's `body`, not `stream.read()`: it enforces DATA_UPLOAD_MAX_MEMORY_SIZE.
        return parser_context["request"].body


def json_body(request: Request) -> bytes:
    """The body after content negotiation (415 unless JSON). DRF does not call the parser for an
    empty body; that comes back as b"" and fails decoding like any other non-JSON."""
    data = request.data
    return data if isinstance(data, bytes) else b""
