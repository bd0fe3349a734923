"""The guard every ControlPlane call passes: request context, access table, authentication, scope,
error mapping, database connection hygiene.

grpcio's sync server calls `intercept_service` on its one polling thread, before a worker thread
takes the call, so anything slow there (a key lookup that misses the cache, a database round trip)
holds up every other call on the server (SPEC §9). `GatewayInterceptor.intercept_service` therefore
only looks the operation up in the access table (a dict) and wraps the method's behaviour; the
wrapper, and so the key lookup, runs in the worker thread with the call.

The servicer reads the authenticated key with `current_principal()`.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import grpc
from django.db import close_old_connections

from apps.gateway import metrics
from apps.gateway.access import OPERATIONS, AccessClass, Operation, require_access
from apps.gateway.auth import Principal, authenticate_token
from apps.gateway.grpc.errors import Failure, failure_for
from apps.gateway.identity import client_address, new_request_id, request_context
from apps.gateway.observe import request_finished, request_started

logger = logging.getLogger(__name__)

SERVICE = "modeloman.v1.ControlPlane"
AUTHORIZATION = "authorization"
REQUEST_ID = "x-request-id"
ERROR_CODE = "error-code"

_principal_var: ContextVar[Principal | None] = ContextVar("grpc_principal", default=None)


def current_principal() -> Principal:
    """The key that authenticated the current call (only inside a guarded, non-public method)."""
    principal = _principal_var.get()
    if principal is None:
        raise RuntimeError("No authenticated principal: the method is not behind GatewayInterceptor.")
    return principal


class CallRefused(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.details)
        self.failure = failure


def _refuse(status: grpc.StatusCode, code: str, detail: str) -> CallRefused:
    return CallRefused(Failure(status, code, detail))


def peer_ip(context: grpc.ServicerContext) -> str | None:
    """The direct peer's address from `context.peer()` ("ipv4:1.2.3.4:5", "ipv6:[::1]:5")."""
    kind, _, rest = context.peer().partition(":")
    if kind == "ipv4":
        host = rest.rpartition(":")[0]
    elif kind == "ipv6":
        host = rest.rpartition(":")[0].strip("[]")
    else:
        return None  # unix sockets
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _bearer_token(metadata: dict[str, str]) -> str:
    header = metadata.get(AUTHORIZATION, "")
    if not header:
        raise _refuse(grpc.StatusCode.UNAUTHENTICATED, "not_authenticated", "A valid API key is required.")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        metrics.auth_failed("token_malformed")
        raise _refuse(grpc.StatusCode.UNAUTHENTICATED, "token_malformed",
                      "Send the key as metadata `authorization: Bearer <token>`.")
    return token.strip()


def _authorize(operation: Operation, metadata: dict[str, str]) -> Principal | None:
    """Authentication and the access table; runs in the worker thread."""
    if operation.access is AccessClass.PUBLIC_READ:
        return None
    token = _bearer_token(metadata)
    principal = authenticate_token(token)  # AuthenticationFailed: UNAUTHENTICATED with its code
    require_access(operation.name, principal)  # MissingScope / Forbidden: PERMISSION_DENIED
    return principal


class _Observed:
    """What the call's metrics sample and log line say (apps.gateway.observe): filled in as the
    guard learns it, reported once when the call ends, however it ends."""

    def __init__(self, name: str, request_id: str) -> None:
        self.name, self.request_id = name, request_id
        self.status = "OK"
        self.key_id: str | None = None
        self.client: str | None = None
        self.started = time.perf_counter()
        request_started("grpc")

    def finish(self) -> None:
        request_finished(transport="grpc", operation=self.name, status=self.status,
                         seconds=time.perf_counter() - self.started, request_id=self.request_id,
                         key_id=self.key_id, client=self.client)


@contextmanager
def _guarded_call(operation: Operation | None, name: str, context: grpc.ServicerContext) -> Iterator[None]:
    """Everything around one call, as Django's request cycle does around a view: fresh database
    connection state before and after (the framework's own signals fire too, but only around the
    creation of a response stream, not its iteration), the request id and client address for
    audit rows and logs, then access checks, then errors mapped to statuses."""
    metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
    request_id = new_request_id(metadata.get(REQUEST_ID))
    close_old_connections()
    principal_token = None
    observed = _Observed(name, request_id)
    try:
        # The client's identity: the peer, or what a trusted proxy forwarded (as REST does).
        client_ip = observed.client = client_address(peer_ip(context) or "", metadata.get("x-forwarded-for", ""))
        with request_context(client_ip=client_ip, request_id=request_id):
            try:
                if operation is None:  # not in the access table: denied
                    raise _refuse(grpc.StatusCode.PERMISSION_DENIED, "permission_denied",
                                  f"Operation {name!r} is not in the access table.")
                principal = _authorize(operation, metadata)
                observed.key_id = principal.key_id if principal else None
                principal_token = _principal_var.set(principal)
                yield
            except Exception as exc:  # noqa: BLE001  # every failure leaves with a status, never UNKNOWN
                _abort(context, exc, request_id, observed)
            else:
                context.set_trailing_metadata(((REQUEST_ID, request_id),))
    finally:
        if principal_token is not None:
            _principal_var.reset(principal_token)
        close_old_connections()
        observed.finish()


def _abort(context: grpc.ServicerContext, exc: Exception, request_id: str, observed: _Observed) -> None:
    if isinstance(exc, CallRefused):
        failure: Failure | None = exc.failure
    elif isinstance(exc, NotImplementedError):
        failure = Failure(grpc.StatusCode.UNIMPLEMENTED, "not_implemented", "This method is not served yet.")
    else:
        failure = failure_for(exc)
    if failure is None:
        if context.code() is not None:  # the method set its own status (context.abort): keep it
            observed.status = getattr(context.code(), "name", str(context.code()))
            raise exc
        logger.exception("gRPC call failed", extra={"request_id": request_id})
        failure = Failure(grpc.StatusCode.INTERNAL, "internal_error",
                          f"Something went wrong (request id {request_id}).")
    observed.status = failure.status.name
    context.set_trailing_metadata(((REQUEST_ID, request_id), (ERROR_CODE, failure.code)))
    context.abort(failure.status, failure.details)


Behaviour = Callable[[Any, grpc.ServicerContext], Any]


def _guard_unary(operation: Operation | None, name: str, behaviour: Behaviour) -> Behaviour:
    def guarded(request: Any, context: grpc.ServicerContext) -> Any:
        with _guarded_call(operation, name, context):
            return behaviour(request, context)
        return None  # not reached: a failure aborts the call

    return guarded


def _guard_stream(operation: Operation | None, name: str, behaviour: Behaviour) -> Behaviour:
    def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        with _guarded_call(operation, name, context):
            yield from behaviour(request, context)

    return guarded


class GatewayInterceptor(grpc.ServerInterceptor):
    """Wraps each ControlPlane method (health and reflection pass through untouched)."""

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        service, _, name = handler_call_details.method.rpartition("/")
        if handler is None or service != f"/{SERVICE}":
            return handler
        operation = OPERATIONS.get(name)
        codec = {"request_deserializer": handler.request_deserializer,
                 "response_serializer": handler.response_serializer}
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(_guard_unary(operation, name, handler.unary_unary), **codec)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(_guard_stream(operation, name, handler.unary_stream), **codec)
        return handler  # the contract has no client-streaming methods
