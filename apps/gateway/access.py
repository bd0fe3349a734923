"""The access table: every operation, its access class and the scope it needs.

Both transports enforce from this one table: a REST view names its operation with an `Op`
member (`operation = Op.WHO_AM_I`, or `operations = {"GET": ..., "PUT": ...}`) and the REST
adapter looks it up; the gRPC servicer methods carry the same names. Anything not listed here
is denied, every `write` runs under an idempotency key (`apps.gateway.idempotency`), every
`signed` write must carry a request signature (`apps.gateway.signing`) when REQUIRE_SIGNED_WRITES
is on, and each operation's rate class picks the limit it counts against
(`apps.gateway.ratelimits`). Pure Python: no DRF, no grpc.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from apps.gateway.errors import Forbidden, MissingScope, NotAuthenticated


class AccessClass(StrEnum):
    PUBLIC_READ = "public_read"
    PRIVATE_READ = "private_read"
    WRITE = "write"


class Scope(StrEnum):
    TASKS_WRITE = "tasks:write"
    TELEMETRY_WRITE = "telemetry:write"
    POLICY_READ = "policy:read"
    POLICY_WRITE = "policy:write"
    ADMIN_READ = "admin:read"


ALL_SCOPES: frozenset[str] = frozenset(s.value for s in Scope)


class RateClass(StrEnum):
    """Which limit a call counts against: RATE_LIMIT_GET (reads, whatever the transport) or
    RATE_LIMIT_MUTATION (writes), each overridable per key (ApiKey.rate_limit_get / _mutation)."""

    GET = "get"
    MUTATION = "mutation"


class Op(StrEnum):
    """Operation names: the gRPC method names of `modeloman.v1.ControlPlane` (and Health)."""

    HEALTH = "Health"
    GET_LEADERBOARD = "GetLeaderboard"
    WHO_AM_I = "WhoAmI"
    GET_RUN = "GetRun"
    GET_POLICY = "GetPolicy"
    LIST_POLICY_CAPS = "ListPolicyCaps"
    EXPORT_STATE = "ExportState"
    ADMIT = "Admit"
    START_RUN = "StartRun"
    FINISH_RUN = "FinishRun"
    RECORD_RUN_EVENT = "RecordRunEvent"
    RECORD_PROMPT_ATTEMPT = "RecordPromptAttempt"
    RECORD_PROMPT_ATTEMPTS = "RecordPromptAttempts"
    RECORD_BENCHMARK = "RecordBenchmark"
    SET_POLICY = "SetPolicy"
    UPSERT_POLICY_CAP = "UpsertPolicyCap"
    DELETE_POLICY_CAP = "DeletePolicyCap"


@dataclass(frozen=True)
class Operation:
    name: Op
    access: AccessClass
    scope: Scope | None = None
    # Not served over REST (yet), and why; the route test accepts its absence. Everything else
    # must have a route.
    rest_pending: str = ""
    # High risk: the request must be signed with the key's signing secret (apps.gateway.signing).
    signed: bool = False
    # Reads count against the GET limit and writes against the mutation limit unless a row says
    # otherwise.
    rate: RateClass | None = None

    def __post_init__(self) -> None:
        if self.rate is None:
            object.__setattr__(self, "rate", RateClass.MUTATION if self.is_write else RateClass.GET)

    @property
    def is_write(self) -> bool:
        return self.access is AccessClass.WRITE


_PUBLIC, _PRIVATE, _WRITE = AccessClass.PUBLIC_READ, AccessClass.PRIVATE_READ, AccessClass.WRITE

OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation(Op.HEALTH, _PUBLIC),
        Operation(Op.GET_LEADERBOARD, _PUBLIC),
        Operation(Op.WHO_AM_I, _PRIVATE),
        Operation(Op.GET_RUN, _PRIVATE),
        Operation(Op.GET_POLICY, _PRIVATE, Scope.POLICY_READ),
        Operation(Op.LIST_POLICY_CAPS, _PRIVATE, Scope.POLICY_READ),
        Operation(Op.EXPORT_STATE, _PRIVATE, Scope.ADMIN_READ),
        Operation(Op.ADMIT, _WRITE, Scope.TASKS_WRITE),
        Operation(Op.START_RUN, _WRITE, Scope.TASKS_WRITE),
        Operation(Op.FINISH_RUN, _WRITE, Scope.TASKS_WRITE),
        Operation(Op.RECORD_RUN_EVENT, _WRITE, Scope.TELEMETRY_WRITE),
        # REST takes one attempt or a batch on one route (RecordPromptAttempts); gRPC has both methods.
        Operation(Op.RECORD_PROMPT_ATTEMPT, _WRITE, Scope.TELEMETRY_WRITE,
                  rest_pending="REST serves single attempts through RecordPromptAttempts"),
        Operation(Op.RECORD_PROMPT_ATTEMPTS, _WRITE, Scope.TELEMETRY_WRITE),
        Operation(Op.RECORD_BENCHMARK, _WRITE, Scope.TELEMETRY_WRITE),
        Operation(Op.SET_POLICY, _WRITE, Scope.POLICY_WRITE, signed=True),
        Operation(Op.UPSERT_POLICY_CAP, _WRITE, Scope.POLICY_WRITE, signed=True),
        Operation(Op.DELETE_POLICY_CAP, _WRITE, Scope.POLICY_WRITE, signed=True),
    )
}
assert set(OPERATIONS) == set(Op), "every Op has exactly one row"  # noqa: S101  # import-time invariant
assert all(op.is_write for op in OPERATIONS.values() if op.signed), "only writes are signed"  # noqa: S101


class Caller(Protocol):
    """What the access check needs to know about an authenticated caller (a `Principal`)."""

    # Read-only members, so the frozen `Principal` dataclass satisfies the protocol.
    @property
    def scopes(self) -> frozenset[str]: ...
    @property
    def agent_status(self) -> str | None: ...


QUARANTINED = "quarantined"  # apps.keys.models.Agent.Status.QUARANTINED (no app import here)


def operation_named(name: str) -> Operation:
    operation = OPERATIONS.get(name)
    if operation is None:
        raise Forbidden(f"Operation {name!r} is not in the access table.")
    return operation


def require_access(operation_name: str, principal: Caller | None) -> Operation:
    """Raise unless `principal` may call the operation; return its row. Unknown operations are denied."""
    operation = operation_named(operation_name)
    if operation.access is AccessClass.PUBLIC_READ:
        return operation
    if principal is None:
        raise NotAuthenticated("A valid API key is required.")
    if operation.scope is not None and operation.scope not in principal.scopes:
        raise MissingScope(f"This key lacks the `{operation.scope}` scope.", scope=operation.scope)
    if (operation.is_write and operation.scope is not Scope.TELEMETRY_WRITE
            and principal.agent_status == QUARANTINED):
        raise Forbidden("A quarantined agent may read and report telemetry, nothing else.", code="agent_quarantined")
    return operation
