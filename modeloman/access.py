"""The access table: every operation, its access class and the scope it needs.

Both transports enforce from this one table: DRF views name their operation
(`operation = "WhoAmI"`) and `OperationPermission` looks it up; the gRPC servicers use the
same names. Anything not listed here is denied.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from modeloman.problems import Forbidden


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


@dataclass(frozen=True)
class Operation:
    name: str
    access: AccessClass
    scope: Scope | None = None


_PUBLIC, _PRIVATE, _WRITE = AccessClass.PUBLIC_READ, AccessClass.PRIVATE_READ, AccessClass.WRITE

OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation("Health", _PUBLIC),
        Operation("GetLeaderboard", _PUBLIC),
        Operation("WhoAmI", _PRIVATE),
        Operation("GetRun", _PRIVATE),
        Operation("GetPolicy", _PRIVATE, Scope.POLICY_READ),
        Operation("ListPolicyCaps", _PRIVATE, Scope.POLICY_READ),
        Operation("ExportState", _PRIVATE, Scope.ADMIN_READ),
        Operation("Admit", _WRITE, Scope.TASKS_WRITE),
        Operation("StartRun", _WRITE, Scope.TASKS_WRITE),
        Operation("FinishRun", _WRITE, Scope.TASKS_WRITE),
        Operation("RecordRunEvent", _WRITE, Scope.TELEMETRY_WRITE),
        Operation("RecordPromptAttempt", _WRITE, Scope.TELEMETRY_WRITE),
        Operation("RecordPromptAttempts", _WRITE, Scope.TELEMETRY_WRITE),
        Operation("RecordBenchmark", _WRITE, Scope.TELEMETRY_WRITE),
        Operation("SetPolicy", _WRITE, Scope.POLICY_WRITE),
        Operation("UpsertPolicyCap", _WRITE, Scope.POLICY_WRITE),
        Operation("DeletePolicyCap", _WRITE, Scope.POLICY_WRITE),
    )
}


class MissingScope(Forbidden):
    code = "missing_scope"


QUARANTINED = "quarantined"  # apps.keys.models.Agent.Status.QUARANTINED (no app import here)


def require_access(operation_name: str, principal: Any) -> None:
    """Raise unless `principal` may call the operation. Unknown operations are denied."""
    operation = OPERATIONS.get(operation_name)
    if operation is None:
        raise Forbidden(f"Operation {operation_name!r} is not in the access table.")
    if operation.access is AccessClass.PUBLIC_READ:
        return
    if principal is None:
        from rest_framework.exceptions import NotAuthenticated

        raise NotAuthenticated("A valid API key is required.")
    if operation.scope is not None and operation.scope not in principal.scopes:
        raise MissingScope(f"This key lacks the `{operation.scope}` scope.", scope=operation.scope)
    if (operation.access is AccessClass.WRITE and operation.scope is not Scope.TELEMETRY_WRITE
            and getattr(principal, "agent_status", None) == QUARANTINED):
        raise Forbidden("A quarantined agent may read and report telemetry, nothing else.", code="agent_quarantined")


class OperationPermission(BasePermission):
    """DRF permission: the view's `operation` (or `operations[method]`) is looked up in the access table."""

    def has_permission(self, request: Request, view: Any) -> bool:
        name = getattr(view, "operations", {}).get(request.method) or getattr(view, "operation", "")
        require_access(name, request.auth)
        return True
