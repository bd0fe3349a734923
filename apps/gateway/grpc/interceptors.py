"""The guard every ControlPlane call passes, in this order:

1. call scope: database connection hygiene, request id, client address; failures → status (`_call_scope`)
2-5. access table, authentication (failed ones rate limited per address), scope and agent status,
     the rate limit (apps.gateway.ratelimits) and a `signed` write's signature (`_admit_caller`)
6. idempotency for every `write` of the access table (`_once`)
7. the method itself, which reads the caller with `current_principal()`

grpcio's sync server calls `intercept_service` on its one polling thread, before a worker thread
takes the call, so anything slow there (a key lookup that misses the cache, a database round trip)
holds up every other call on the server (SPEC §9). `GatewayInterceptor.intercept_service` therefore
only looks the operation up in the access table (a dict) and wraps the method's behaviour; the
wrapper, and so the key lookup, runs in the worker thread with the call.

A `signed` operation (policy and cap writes) also needs a valid request signature in the metadata
(`x-mm-timestamp`, `x-mm-nonce`, `x-mm-signature`) over its method path and the request bytes as
received: its deserializer is wrapped to keep those bytes (`_keeping_bytes`), and the guard's
`_check_signature` step verifies them (apps.gateway.signing) after authentication, scope and rate limit.

The servicer reads the authenticated key with `current_principal()`.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import grpc
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections
from google.protobuf import json_format, message_factory
from google.protobuf.message import Message

from apps.gateway import metrics, ratelimits
from apps.gateway.access import OPERATIONS, AccessClass, Operation, require_access
from apps.gateway.auth import Principal
from apps.gateway.grpc.errors import Failure, failure_for
from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2
from apps.gateway.idempotency import Claim, OneStatementWrite, Outcome, idempotent
from apps.gateway.identity import client_address, new_request_id, request_context
from apps.gateway.observe import request_finished, request_started
from apps.gateway.signing import check_signed_write

logger = logging.getLogger(__name__)

SERVICE = "modeloman.v1.ControlPlane"
AUTHORIZATION = "authorization"
REQUEST_ID = "x-request-id"
ERROR_CODE = "error-code"
IDEMPOTENCY_KEY = "idempotency-key"
REPLAYED = "idempotent-replayed"

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


@dataclass(frozen=True, slots=True)
class _Received:
    """A signed operation's request: the message, and the bytes it was decoded from (signed)."""

    message: Any
    raw: bytes


def _keeping_bytes(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], _Received]:
    def deserialize(raw: bytes) -> _Received:
        return _Received(deserializer(raw) if deserializer else raw, raw)

    return deserialize


def _check_signature(operation: Operation, principal: Principal, metadata: dict[str, str], request: Any) -> None:
    """The signing step (apps.gateway.signing): a gRPC call is an HTTP/2 POST to its method path."""
    raw = request.raw if isinstance(request, _Received) else b""
    check_signed_write(operation=operation, principal=principal, method="POST",
                       path=f"/{SERVICE}/{operation.name}", body=lambda: raw,
                       header=lambda name: metadata.get(name.lower()))


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


@dataclass
class Call:
    """What the guard knows about one call: its metadata, request id, and trailing metadata to send."""

    metadata: dict[str, str]
    request_id: str
    observed: _Observed
    trailing: list[tuple[str, str]] = field(default_factory=list)


@contextmanager
def _call_scope(context: grpc.ServicerContext, name: str) -> Iterator[Call]:
    """Step 1, around everything else, as Django's request cycle does around a view: fresh database
    connection state before and after (the framework's own receivers for that are disconnected:
    see servicer.py), the request id and client address for audit
    rows and logs; on the way out, every failure mapped to a status (never UNKNOWN), and one metrics
    sample and log line for the call (apps.gateway.observe)."""
    metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
    request_id = new_request_id(metadata.get(REQUEST_ID))
    call = Call(metadata, request_id, _Observed(name, request_id))
    call.trailing.append((REQUEST_ID, call.request_id))
    close_old_connections()
    try:
        # The client's identity: the peer, or what a trusted proxy forwarded (as REST does).
        client_ip = call.observed.client = client_address(peer_ip(context) or "", metadata.get("x-forwarded-for", ""))
        with request_context(client_ip=client_ip, request_id=call.request_id):
            try:
                yield call
            except Exception as exc:  # noqa: BLE001  # every failure leaves with a status, never UNKNOWN
                _abort(context, exc, call.request_id, call.observed)
            else:
                context.set_trailing_metadata(tuple(call.trailing))
    finally:
        close_old_connections()
        call.observed.finish()


def _admit_caller(operation: Operation | None, name: str, call: Call, request: Any) -> Principal | None:
    """Steps 2-5: the access table (unlisted methods are denied), authentication (in this worker
    thread), scope and agent status, the rate limit, and the signature of a signed write. None for
    a public operation (rate limited by client address)."""
    if operation is None:
        raise _refuse(grpc.StatusCode.PERMISSION_DENIED, "permission_denied",
                      f"Operation {name!r} is not in the access table.")
    principal = None
    if operation.access is not AccessClass.PUBLIC_READ:
        # AuthenticationFailed: UNAUTHENTICATED with its code; too many failures from this address:
        # RESOURCE_EXHAUSTED before the key is looked up.
        principal = ratelimits.authenticate(_bearer_token(call.metadata))
        require_access(operation.name, principal)  # MissingScope / Forbidden: PERMISSION_DENIED
    ratelimits.check(operation, principal)  # RESOURCE_EXHAUSTED (+ retry-after), or UNAVAILABLE for writes
    if principal is not None:
        _check_signature(operation, principal, call.metadata, request)  # UNAUTHENTICATED with its code
    return principal


@contextmanager
def _acting_as(principal: Principal | None) -> Iterator[None]:
    token = _principal_var.set(principal)
    try:
        yield
    finally:
        _principal_var.reset(token)


def _once(operation: Operation, principal: Principal, call: Call, request: Message,
          behaviour: Callable[[], Message], in_one_statement: OneStatementWrite | None = None) -> Message:
    """Step 6, for every `write` of the access table: the gateway's idempotency core, with the same
    records as REST. The fingerprint is the request message serialized deterministically; the
    stored response is the response message as a canonical dict (`stored_response`), sanitized like
    REST's, and a replay parses it back (docs/architecture.md, "Idempotency")."""
    responses: list[Message] = []

    def run() -> tuple[int, Any]:
        response = behaviour()
        responses.append(response)
        return 200, stored_response(response)

    outcome = idempotent(principal=principal, key=call.metadata.get(IDEMPOTENCY_KEY), operation=operation.name,
                         request=b"grpc\n" + request.SerializeToString(deterministic=True), run=run,
                         in_one_statement=in_one_statement)
    if not outcome.replayed:
        if responses:
            return responses[-1]  # the run that committed: an earlier one may have been rolled back and retried
        if isinstance(outcome.answer, Message):
            return outcome.answer  # written in one statement: the stored response, built as a message
    else:
        call.trailing.append((REPLAYED, "true"))
    return json_format.ParseDict(outcome.body, _response_class(operation.name)())


def stored_response(response: Message) -> dict[str, Any]:
    """A response message as an idempotency record stores it (JSON field names of the .proto)."""
    return json_format.MessageToDict(response, preserving_proto_field_name=True)


@functools.cache
def _response_class(method: str) -> type[Message]:
    descriptor = control_plane_pb2.DESCRIPTOR.services_by_name["ControlPlane"].methods_by_name[method]
    return message_factory.GetMessageClass(descriptor.output_type)


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
    # A domain error's REST headers travel as trailing metadata too (retry-after, ratelimit-*).
    headers = tuple((name.lower(), value) for name, value in getattr(exc, "headers", {}).items())
    observed.status = failure.status.name
    context.set_trailing_metadata(((REQUEST_ID, request_id), (ERROR_CODE, failure.code), *headers))
    context.abort(failure.status, failure.details)


Behaviour = Callable[[Any, grpc.ServicerContext], Any]


def _message(request: Any) -> Any:
    return request.message if isinstance(request, _Received) else request


def _guard_unary(operation: Operation | None, name: str, behaviour: Behaviour,
                 in_one_statement: OneStatementMethod | None = None) -> Behaviour:
    def guarded(request: Any, context: grpc.ServicerContext) -> Any:
        with _call_scope(context, name) as call:
            principal = _admit_caller(operation, name, call, request)
            call.observed.key_id = principal.key_id if principal else None
            message = _message(request)
            with _acting_as(principal):
                if operation is not None and operation.is_write and principal is not None:
                    return _once(operation, principal, call, message, lambda: behaviour(message, context),
                                 functools.partial(in_one_statement, message) if in_one_statement else None)
                return behaviour(message, context)
        return None  # not reached: a failure aborts the call

    return guarded


def _guard_stream(operation: Operation | None, name: str, behaviour: Behaviour) -> Behaviour:
    if operation is not None and operation.is_write:  # a stream's response cannot be stored and replayed
        raise ImproperlyConfigured(f"{name} is a write: writes are unary, so that idempotency can replay them.")

    def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        with _call_scope(context, name) as call:
            principal = _admit_caller(operation, name, call, request)
            call.observed.key_id = principal.key_id if principal else None
            with _acting_as(principal):
                yield from behaviour(_message(request), context)

    return guarded


# A write a servicer can also do in one statement (Admit): the request and its claim → the outcome, or
# None for the full path (apps.gateway.idempotency.idempotent's `in_one_statement`).
OneStatementMethod = Callable[[Any, Claim], Outcome | None]


class GatewayInterceptor(grpc.ServerInterceptor):
    """Wraps each ControlPlane method (health and reflection pass through untouched).
    `in_one_statement`: the methods that can also write in one statement, by name."""

    def __init__(self, in_one_statement: Mapping[str, OneStatementMethod] | None = None) -> None:
        self.in_one_statement = dict(in_one_statement or {})

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        service, _, name = handler_call_details.method.rpartition("/")
        if handler is None or service != f"/{SERVICE}":
            return handler
        operation = OPERATIONS.get(name)
        deserializer = handler.request_deserializer
        if operation is not None and operation.signed:
            deserializer = _keeping_bytes(deserializer)
        codec = {"request_deserializer": deserializer, "response_serializer": handler.response_serializer}
        if handler.unary_unary is not None:
            guarded = _guard_unary(operation, name, handler.unary_unary, self.in_one_statement.get(name))
            return grpc.unary_unary_rpc_method_handler(guarded, **codec)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(_guard_stream(operation, name, handler.unary_stream), **codec)
        return handler  # the contract has no client-streaming methods
