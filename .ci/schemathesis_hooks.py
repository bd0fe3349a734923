"""Schemathesis hooks for .ci/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

Three rules of the API are beyond what a JSON Schema can state; the hooks supply them and leave
everything else as Schemathesis generated it:

- Every write needs an Idempotency-Key, and a key reused with another body is a 422 by design.
  Two cases may draw the same key, so every request that carries a *valid* key gets a fresh one.
  A value that breaks the header's pattern (a negative case) and a missing header are sent as
  generated: they test that the server refuses them.
- Telemetry timestamps must lie between now minus the retention period and now plus five
  minutes (apps.telemetry.validation.TimeWindow). In a body generated as valid, every `time`
  is moved to now; bodies generated as invalid keep theirs. The window itself is tested in
  tests/telemetry/test_ingest.py.
- A benchmark's `passed` is at most its `total` (a relation between two fields). In a body
  generated as valid, `passed` is lowered to `total`.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import schemathesis
from schemathesis.core.parameters import ParameterLocation

HEADER = "Idempotency-Key"
# apps.gateway.idempotency.KEY_RE (not imported: the hooks run in the fuzzer's process, without Django).
VALID_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
TELEMETRY_PATHS = re.compile(r"^/api/v1/(attempts|benchmarks|runs/[^/]+/events)$")


def _generated_as_valid(case: Any, location: ParameterLocation) -> bool:
    info = case.meta.components.get(location) if case.meta is not None else None
    return info is not None and info.mode.is_positive


def _items(body: Any) -> list[dict]:
    if not isinstance(body, dict):
        return []
    for plural in ("attempts", "events"):
        if isinstance(body.get(plural), list):
            return [item for item in body[plural] if isinstance(item, dict)]
    return [body]


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    headers = case.headers or {}
    value = headers.get(HEADER)
    if isinstance(value, str) and VALID_KEY.fullmatch(value):
        headers[HEADER] = f"st-{uuid.uuid4().hex}"
        case.headers = headers
    if TELEMETRY_PATHS.match(case.formatted_path) and _generated_as_valid(case, ParameterLocation.BODY):
        now = dt.datetime.now(dt.UTC).isoformat()
        for item in _items(case.body):
            if isinstance(item.get("time"), str):
                item["time"] = now
            passed, total = item.get("passed"), item.get("total")
            if isinstance(passed, int | float) and isinstance(total, int | float) and passed > total:
                item["passed"] = total
