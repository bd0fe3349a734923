"""The base view of the REST door.

Every API view derives from `GatewayApi` and names its operation (`operation = Op.START_RUN`,
or `operations = {"GET": Op.GET_POLICY, "PUT": Op.SET_POLICY}`). The permission class enforces
the access table on every DRF view (it is the default); `GatewayApi` runs each method whose
operation is a `write` under the request's Idempotency-Key. A write view that does not derive
from `GatewayApi` is refused by the permission class, so no write can go without a key.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.gateway.access import OPERATIONS, Op, operation_named
from apps.gateway.idempotency import idempotent
from apps.gateway.rest.auth import operation_of
from apps.gateway.rest.request import AgentRequest

IDEMPOTENCY_HEADER = "Idempotency-Key"


def _request_bytes(request: Request) -> bytes:
    """What makes two requests the same for the idempotency key: method, path and body bytes."""
    return f"{request.method}\n{request.path}\n".encode() + request.body


def _idempotent_method(method: Callable[..., Response], operation: Op) -> Callable[..., Response]:
    @functools.wraps(method)
    def write(self: APIView, request: AgentRequest, *args: Any, **kwargs: Any) -> Response:
        responses: list[Response] = []

        def run() -> tuple[int, Any]:
            response = method(self, request, *args, **kwargs)
            responses.append(response)
            return response.status_code, response.data

        # A view may also offer the write as one statement (AdmissionsApi): tried first, `run` otherwise.
        fast = getattr(self, "write_in_one_statement", None)
        outcome = idempotent(principal=request.auth, key=request.headers.get(IDEMPOTENCY_HEADER),
                             operation=operation, request=_request_bytes(request), run=run,
                             in_one_statement=functools.partial(fast, request) if fast else None)
        if outcome.replayed:
            return Response(outcome.body, status=outcome.status, headers={"Idempotent-Replayed": "true"})
        if not responses:  # written in one statement: the answer is the stored response
            return Response(outcome.body, status=outcome.status)
        return responses[-1]  # the run that committed: an earlier one may have been rolled back and retried

    return write


# Base of every agent API view. Subclasses set `operation` or `operations`; every handler whose
# operation is a `write` in the access table is wrapped at class creation, so it runs under the
# request's Idempotency-Key (no decorator to forget). No docstring: views without their own would
# inherit it as their OpenAPI description.
class GatewayApi(APIView):

    operation: ClassVar[Op | None] = None
    operations: ClassVar[dict[str, Op]] = {}
    writes_are_idempotent: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.http_method_names:
            handler = cls.__dict__.get(name)
            if handler is None:
                continue
            operation = operation_of(cls, name.upper())
            if not operation:
                continue  # denied at request time by OperationPermission
            if operation_named(operation).is_write:
                setattr(cls, name, _idempotent_method(handler, OPERATIONS[operation].name))
