"""Typed results of the ModeloMan agent API, the same whichever transport carried them.

Money is `Decimal` (the wire carries decimal strings), times are aware `datetime`s, ids of runs and
reservations are strings (canonical UUIDs), cap ids are ints.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from decimal import Decimal
from typing import Any


class ModeloManError(Exception):
    """Any refusal or failure, from either transport.

    `code` is the server's stable problem code (e.g. `missing_scope`, `cap_exceeded`; `None` when the
    server never answered); `status` is the gRPC status name, also for REST (the server's one
    HTTP→gRPC table); `http_status` is REST's status (None over gRPC). From `record_attempts` and
    `record_run_events`, `accepted` counts the items stored before the refused call (parts of a batch
    split into several calls; 0 for a batch sent as one call); None from other calls."""

    def __init__(self, message: str, *, code: str | None, status: str, http_status: int | None = None,
                 request_id: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" if code else f"{status}: {message}")
        self.message = message
        self.code = code
        self.status = status
        self.http_status = http_status
        self.request_id = request_id
        self.retry_after = retry_after
        self.accepted: int | None = None


@dataclasses.dataclass(frozen=True)
class Identity:
    key_id: str
    agent: str | None
    project: str | None
    scopes: list[str]
    expires_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class CapStatus:
    cap_id: int
    metric: str
    window: str
    window_start: dt.datetime | None
    mode: str
    limit: Decimal
    used: Decimal
    reserved: Decimal
    remaining: Decimal


@dataclasses.dataclass(frozen=True)
class Admission:
    allowed: bool
    reasons: list[str]
    reservation_id: str | None
    dry_run_would_deny: list[str]
    estimated_cost_usd: Decimal | None
    caps: list[CapStatus]


@dataclasses.dataclass(frozen=True)
class Run:
    id: str
    task: str
    status: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    attempts: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    metadata: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Recorded:
    accepted: int


@dataclasses.dataclass(frozen=True)
class Cap:
    id: int
    level: str
    metric: str
    window: str
    limit: Decimal
    model: str
    mode: str
    enabled: bool
    used: Decimal | None = None
    reserved: Decimal | None = None


@dataclasses.dataclass(frozen=True)
class PolicyLevel:
    level: str
    kill_switch: bool
    dry_run: bool
    allowed_models: list[str]
    allow_unpriced_models: bool | None
    max_tokens_per_attempt: int | None
    max_cost_per_attempt: Decimal | None
    max_concurrent_runs: int | None


@dataclasses.dataclass(frozen=True)
class EffectivePolicy:
    kill_switch: bool
    kill_switch_levels: list[str]
    dry_run_levels: list[str]
    allowed_models: list[str] | None  # None: any priced model
    allow_unpriced_models: bool | None
    max_tokens_per_attempt: int | None
    max_cost_per_attempt: Decimal | None
    max_concurrent_runs: int | None


@dataclasses.dataclass(frozen=True)
class Policy:
    agent: str
    project: str
    effective: EffectivePolicy
    levels: list[PolicyLevel]
    caps: list[Cap]


def build(cls: type, data: dict[str, Any]) -> Any:
    """`cls` from a response as plain data (REST's JSON, or a gRPC message as a dict with the
    .proto field names), coercing each field to its annotated type; absent fields are None."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _coerce(hints[f.name], data.get(f.name)) for f in dataclasses.fields(cls)})


def _coerce(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _coerce(args[0], value)
    origin = typing.get_origin(hint)
    if origin is list:
        if isinstance(value, dict) and "models" in value:  # gRPC's ModelList wrapper
            value = value["models"]
        return [_coerce(args[0], item) for item in value]
    if origin is dict:
        return dict(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build(hint, value)
    if hint is Decimal:
        return Decimal(str(value))
    if hint is int:
        return int(value)
    if hint is dt.datetime:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    return value
