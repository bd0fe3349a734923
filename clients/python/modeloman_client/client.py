"""One agent client over REST or gRPC: `Client.rest(...)` or `Client.grpc(...)`, the same methods,
the same typed results (`modeloman_client.types`) and one exception, `ModeloManError`.

Every write gets one idempotency key per logical call, reused on every retry, so a retry after a
lost response replays the first answer instead of writing (or charging) twice. Retries are bounded,
with exponential backoff and jitter, on: a server that is unavailable or unreachable (503,
UNAVAILABLE, connection errors), the same key still in flight (409 / ABORTED
`idempotency_in_flight`) and rate limits (429 / RESOURCE_EXHAUSTED with a retry-after, honoured).
Any other refusal is raised at once. Signed writes (SetPolicy, UpsertPolicyCap, DeletePolicyCap) are
signed with the server's own algorithm (`apps.gateway.signature`), with a fresh nonce per attempt.

A batch of attempts or run events that one call cannot carry (more than 1,000 items, or more bytes
than the server receives in one request: 1 MiB over gRPC, 8 MiB over REST) is sent as several calls,
in order, each with its own idempotency key (`<key>.<n>`, reused on that part's retries); the result
counts the items of all of them.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from apps.gateway.signature import sign_request

from .messages import message_from_dict
from .types import Admission, Cap, Identity, ModeloManError, Policy, PolicyLevel, Recorded, Run, build

# The ControlPlane methods that write (each needs an idempotency key) and those that are signed.
WRITES = frozenset({"Admit", "StartRun", "FinishRun", "RecordRunEvent", "RecordPromptAttempts",
                    "RecordBenchmark", "SetPolicy", "UpsertPolicyCap", "DeletePolicyCap"})
SIGNED = frozenset({"SetPolicy", "UpsertPolicyCap", "DeletePolicyCap"})
GRPC_SERVICE = "/modeloman.v1.ControlPlane/"

# The batch writes, with the payload field holding their items, and what one call may carry: the
# server's item limit (apps.telemetry.validation.MAX_BATCH) and request size limits (grpcserve's
# receive limit, apps.gateway.grpc.server.MAX_RECEIVE_BYTES; REST's DATA_UPLOAD_MAX_MEMORY_SIZE).
BATCHES = {"RecordPromptAttempts": "attempts", "RecordRunEvent": "events"}
MAX_BATCH_ITEMS = 1000
GRPC_MAX_REQUEST_BYTES = 1024 * 1024
REST_MAX_REQUEST_BYTES = 8 * 1024 * 1024
MAX_KEY_LENGTH = 128  # the server's idempotency keys: 1-128 of A-Z a-z 0-9 _ . : -

# The server's HTTP → gRPC table (apps.gateway.errors), so `ModeloManError.status` means one thing.
_GRPC_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                405: "UNIMPLEMENTED", 409: "ABORTED", 413: "RESOURCE_EXHAUSTED", 415: "INVALID_ARGUMENT",
                422: "FAILED_PRECONDITION", 429: "RESOURCE_EXHAUSTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
                504: "UNAVAILABLE"}


def retriable(error: ModeloManError) -> bool:
    return (error.status == "UNAVAILABLE"
            or (error.status == "ABORTED" and error.code == "idempotency_in_flight")
            or (error.status == "RESOURCE_EXHAUSTED" and error.retry_after is not None))


class Client:
    """Use `Client.rest(...)` or `Client.grpc(...)`. Methods take keyword arguments; telemetry items
    (attempts, events, benchmarks) are dicts shaped like the REST JSON (datetimes and Decimals are
    converted). `idempotency_key=` on a write pins the key (e.g. to resume a call after a crash)."""

    def __init__(self, transport: Any, *, max_attempts: int = 5, backoff: float = 0.1, max_backoff: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.transport = transport
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep

    @classmethod
    def rest(cls, base_url: str, token: str, signing_secret: str | None = None, *, timeout: float = 10,
             **options: Any) -> Client:
        return cls(RestTransport(base_url, token, signing_secret, timeout=timeout), **options)

    @classmethod
    def grpc(cls, address: str, token: str, signing_secret: str | None = None, *, tls: Any = False,
             timeout: float = 10, **options: Any) -> Client:
        """`tls`: False (plaintext, loopback only), True (system roots) or a grpc.ChannelCredentials."""
        return cls(GrpcTransport(address, token, signing_secret, tls=tls, timeout=timeout), **options)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the calls ------------------------------------------------------------------------------

    def whoami(self) -> Identity:
        return build(Identity, self._call("WhoAmI", {}))

    def admit(self, *, model: str, estimated_input_tokens: int, estimated_output_tokens: int,
              estimated_cost_usd: Decimal | str | None = None, run_id: str | None = None,
              idempotency_key: str | None = None) -> Admission:
        """Ask before spending; `run_id` names the caller's run it is for (its reservation records it)."""
        payload = _present(model=model, estimated_input_tokens=estimated_input_tokens,
                           estimated_output_tokens=estimated_output_tokens, estimated_cost_usd=estimated_cost_usd,
                           run_id=run_id)
        return build(Admission, self._call("Admit", payload, idempotency_key))

    def start_run(self, *, task: str, metadata: Mapping[str, str] | None = None,
                  idempotency_key: str | None = None) -> Run:
        return build(Run, self._call("StartRun", _present(task=task, metadata=metadata), idempotency_key))

    def finish_run(self, *, run_id: str, status: str, metadata: Mapping[str, str] | None = None,
                   idempotency_key: str | None = None) -> Run:
        payload = _present(run_id=run_id, status=status, metadata=metadata)
        return build(Run, self._call("FinishRun", payload, idempotency_key))

    def get_run(self, *, run_id: str) -> Run:
        return build(Run, self._call("GetRun", {"run_id": run_id}))

    def record_attempts(self, attempts: Iterable[Mapping[str, Any]], *, idempotency_key: str | None = None) -> Recorded:
        """Prompt attempts: a batch that fits one call (see `_record`) is all or nothing."""
        return self._record("RecordPromptAttempts", {"attempts": list(attempts)}, idempotency_key)

    def record_run_events(self, *, run_id: str, events: Iterable[Mapping[str, Any]],
                          idempotency_key: str | None = None) -> Recorded:
        """Events of one run: a batch that fits one call (see `_record`) is all or nothing."""
        return self._record("RecordRunEvent", {"run_id": run_id, "events": list(events)}, idempotency_key)

    def record_benchmark(self, benchmark: Mapping[str, Any], *, idempotency_key: str | None = None) -> Recorded:
        return build(Recorded, self._call("RecordBenchmark", {"benchmark": dict(benchmark)}, idempotency_key))

    def get_policy(self) -> Policy:
        return build(Policy, self._call("GetPolicy", {}))

    def set_policy(self, *, subject: str, reason: str = "", idempotency_key: str | None = None,
                   **changes: Any) -> PolicyLevel:
        """Change the named policy fields of the caller's agent or project (agents may only tighten);
        a field given as None is cleared. Returns the changed level as a PolicyLevel."""
        payload = {"subject": subject, **changes, **({"reason": reason} if reason else {})}
        return build(PolicyLevel, self._call("SetPolicy", payload, idempotency_key))

    def list_caps(self, *, page_size: int = 200) -> list[Cap]:
        """Every cap that applies to the caller, with its current usage (all pages)."""
        caps, after = [], 0
        while True:
            page = self._call("ListPolicyCaps", {"limit": page_size, "after": after})
            caps += [build(Cap, c) for c in page.get("caps", [])]
            if page.get("next_after") in (None, ""):
                return caps
            after = int(page["next_after"])

    def upsert_cap(self, *, metric: str, window: str, limit: Decimal | str, subject: str | None = None,
                   cap_id: int | None = None, model: str | None = None, mode: str | None = None,
                   enabled: bool | None = None, idempotency_key: str | None = None) -> Cap:
        """Create a cap (no cap_id; subject `agent` or `project`) or change one."""
        payload = _present(cap_id=cap_id, subject=subject, metric=metric, window=window, limit=limit, model=model,
                           mode=mode, enabled=enabled)
        return build(Cap, self._call("UpsertPolicyCap", payload, idempotency_key))

    def delete_cap(self, *, cap_id: int, idempotency_key: str | None = None) -> None:
        self._call("DeletePolicyCap", {"cap_id": cap_id}, idempotency_key)

    # --- batches and retries --------------------------------------------------------------------------

    def _record(self, method: str, payload: dict[str, Any], idempotency_key: str | None) -> Recorded:
        """A batch write. Up to 1,000 items that fit the transport's request limit go in one call, all
        or nothing. A bigger batch goes in consecutive parts, each one call (all or nothing) with the
        key `<key>.<n>`, so the same logical call with the same `idempotency_key=` splits the same way
        and replays the parts already stored. If a part is refused, the parts before it stay stored:
        the error's `accepted` counts their items, and the item index in its message counts from there."""
        try:
            return build(Recorded, self._call(method, payload, idempotency_key))
        except _TooLarge as too_large:  # raised before sending anything
            parts = _parts(too_large.sizes, too_large.room)
        except ModeloManError as error:
            error.accepted = 0
            raise
        plural = BATCHES[method]
        key = idempotency_key or uuid.uuid4().hex
        accepted = 0
        for number, (start, stop) in enumerate(parts, 1):
            part = {**payload, plural: payload[plural][start:stop]}
            try:
                accepted += build(Recorded, self._call(method, part, _part_key(key, number))).accepted
            except ModeloManError as error:
                error.accepted = accepted
                raise
        return Recorded(accepted=accepted)

    def _call(self, method: str, payload: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        payload = _jsonable(payload)
        key = (idempotency_key or uuid.uuid4().hex) if method in WRITES else None  # one per logical call
        for attempt in range(1, self.max_attempts + 1):
            try:
                try:
                    return self.transport.send(method, payload, idempotency_key=key)
                except (ConnectionError, TimeoutError) as error:  # the request may or may not have landed
                    raise ModeloManError(str(error) or type(error).__name__, code=None, status="UNAVAILABLE") from error
            except ModeloManError as error:
                if attempt == self.max_attempts or not retriable(error):
                    raise
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)  # noqa: S311
                self._sleep(max(delay, error.retry_after or 0))
        raise AssertionError("unreachable")


class _TooLarge(Exception):  # noqa: N818  # not an error: the client splits the batch
    """Raised by a transport instead of sending a batch of several items that one call cannot carry:
    each item's encoded size in the request, and the bytes a request has for its items."""

    def __init__(self, sizes: list[int], room: int) -> None:
        super().__init__(f"{len(sizes)} items, {sum(sizes)} bytes for {room}")
        self.sizes, self.room = sizes, room


def _parts(sizes: list[int], room: int) -> list[tuple[int, int]]:
    """Consecutive (start, stop) ranges of items, each at most MAX_BATCH_ITEMS items and `room` bytes
    (an item bigger than that alone is a part of its own, for the server to refuse)."""
    parts, start, used = [], 0, 0
    for index, size in enumerate(sizes):
        if index > start and (index - start == MAX_BATCH_ITEMS or used + size > room):
            parts.append((start, index))
            start, used = index, 0
        used += size
    parts.append((start, len(sizes)))
    return parts


def _part_key(key: str, number: int) -> str:
    """The idempotency key of a batch's `number`th part: `<key>.<number>`, from a digest of a key too
    long to take the suffix."""
    if len(key) + 1 + len(str(number)) > MAX_KEY_LENGTH:
        key = hashlib.sha256(key.encode()).hexdigest()
    return f"{key}.{number}"


def _batch_too_large(count: int, size: int, limit: int) -> bool:
    return count > 1 and (count > MAX_BATCH_ITEMS or size > limit)


def _present(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _jsonable(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:  # most values: as they are
        return value
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


# --- REST ------------------------------------------------------------------------------------------


def _rest_route(method: str, p: dict[str, Any]) -> tuple[str, str, dict[str, Any] | None]:
    """(HTTP method, path, JSON body) of a ControlPlane call (SPEC §5)."""
    without = {k: v for k, v in p.items() if k not in ("run_id", "cap_id")}
    if method == "WhoAmI":
        return "GET", "/api/v1/whoami", None
    if method == "Admit":
        return "POST", "/api/v1/admissions", p
    if method == "StartRun":
        return "POST", "/api/v1/runs", p
    if method == "FinishRun":
        return "POST", f"/api/v1/runs/{p['run_id']}/finish", without
    if method == "GetRun":
        return "GET", f"/api/v1/runs/{p['run_id']}", None
    if method == "RecordRunEvent":
        return "POST", f"/api/v1/runs/{p['run_id']}/events", without
    if method == "RecordPromptAttempts":
        return "POST", "/api/v1/attempts", p
    if method == "RecordBenchmark":
        return "POST", "/api/v1/benchmarks", p["benchmark"]
    if method == "GetPolicy":
        return "GET", "/api/v1/policy", None
    if method == "SetPolicy":
        return "PUT", "/api/v1/policy", p
    if method == "ListPolicyCaps":
        return "GET", "/api/v1/policy/caps?" + urlencode({"limit": p["limit"], "after": p["after"]}), None
    if method == "UpsertPolicyCap":
        if "cap_id" in p:
            return "PUT", f"/api/v1/policy/caps/{p['cap_id']}", without
        return "POST", "/api/v1/policy/caps", p
    if method == "DeletePolicyCap":
        return "DELETE", f"/api/v1/policy/caps/{p['cap_id']}", None
    raise ValueError(f"unknown method {method}")


class RestTransport:
    """JSON over HTTP/1.1 with the standard library; one keep-alive connection per thread."""

    def __init__(self, base_url: str, token: str, signing_secret: str | None, *, timeout: float) -> None:
        url = urlsplit(base_url)
        self.https = url.scheme == "https"
        self.netloc = url.netloc
        self.prefix = url.path.rstrip("/")
        self.token = token
        self.signing_secret = signing_secret
        self.timeout = timeout
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            connection = self._local.connection = kind(self.netloc, timeout=self.timeout)
        return connection

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def send(self, method: str, payload: dict[str, Any], *, idempotency_key: str | None) -> dict[str, Any]:
        verb, path, body = _rest_route(method, payload)
        path = self.prefix + path
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        plural = BATCHES.get(method)
        if plural is not None and body is not None and _batch_too_large(len(body[plural]), len(data),
                                                                         REST_MAX_REQUEST_BYTES):
            # Each item as it appears in the body, with its comma; the rest of the body is fixed.
            sizes = [len(json.dumps(item, separators=(",", ":")).encode()) + 1 for item in body[plural]]
            raise _TooLarge(sizes, REST_MAX_REQUEST_BYTES - (len(data) - sum(sizes)))
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        if method in SIGNED and self.signing_secret:
            headers.update(sign_request(signing_secret=self.signing_secret, method=verb, path=path, body=data))
        connection = self._connection()
        try:
            connection.request(verb, path, body=data or None, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.close()  # a broken keep-alive connection is not reused
            raise ConnectionError(f"{type(error).__name__}: {error}") from error
        answer = json.loads(raw) if raw else {}
        if response.status >= 400:
            problem = answer if isinstance(answer, dict) else {}
            retry_after = response.getheader("Retry-After")
            raise ModeloManError(problem.get("detail") or problem.get("title") or response.reason,
                                 code=problem.get("code"), status=_GRPC_STATUS.get(response.status, "INTERNAL"),
                                 http_status=response.status, request_id=response.getheader("X-Request-ID"),
                                 retry_after=float(retry_after) if retry_after else None)
        if method == "ListPolicyCaps":  # REST pages by a `next` URL; gRPC by `next_after`
            following = answer.get("next")
            after = parse_qs(urlsplit(following).query).get("after", [None])[0] if following else None
            return {"caps": answer["results"], "next_after": after}
        return answer


# --- gRPC ------------------------------------------------------------------------------------------


class GrpcTransport:
    def __init__(self, address: str, token: str, signing_secret: str | None, *, tls: Any, timeout: float) -> None:
        import grpc

        from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2 as pb
        from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2_grpc as pb_grpc

        self._grpc, self._pb = grpc, pb
        # Each client its own connection, as over REST: by default grpcio shares one connection among
        # all channels to the same address in a process, so every client of an agent would be served
        # by one of grpcserve's processes (the kernel spreads connections over them, not calls).
        options = [("grpc.use_local_subchannel_pool", 1)]
        if tls is False:
            self.channel = grpc.insecure_channel(address, options=options)
        else:
            credentials = grpc.ssl_channel_credentials() if tls is True else tls
            self.channel = grpc.secure_channel(address, credentials, options=options)
        self.stub = pb_grpc.ControlPlaneStub(self.channel)
        self.methods = pb.DESCRIPTOR.services_by_name["ControlPlane"].methods_by_name
        self.token = token
        self.signing_secret = signing_secret
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def _message(self, method: str, payload: dict[str, Any]) -> Any:
        request_class = getattr(self._pb, self.methods[method].input_type.name)
        if method == "SetPolicy":  # the changed fields are named in the mask; a named unset field is cleared
            message = message_from_dict(request_class, {k: v for k, v in payload.items() if v is not None})
            message.update_mask.paths.extend(k for k in payload if k not in ("subject", "reason"))
            return message
        return message_from_dict(request_class, payload)

    def send(self, method: str, payload: dict[str, Any], *, idempotency_key: str | None) -> dict[str, Any]:
        from google.protobuf import json_format

        grpc = self._grpc
        message = self._message(method, payload)
        plural = BATCHES.get(method)
        if plural is not None and _batch_too_large(len(getattr(message, plural)), message.ByteSize(),
                                                   GRPC_MAX_REQUEST_BYTES):
            # Each item as it appears in the request: tag, length and the item; the rest is fixed.
            tag = _varint_size(message.DESCRIPTOR.fields_by_name[plural].number << 3)
            sizes = [tag + _varint_size(size) + size for size in (item.ByteSize() for item in getattr(message, plural))]
            raise _TooLarge(sizes, GRPC_MAX_REQUEST_BYTES - (message.ByteSize() - sum(sizes)))
        metadata = [("authorization", f"Bearer {self.token}")]
        if idempotency_key:
            metadata.append(("idempotency-key", idempotency_key))
        if method in SIGNED and self.signing_secret:
            signature = sign_request(signing_secret=self.signing_secret, method="POST", path=GRPC_SERVICE + method,
                                     body=message.SerializeToString())
            metadata += [(name.lower(), value) for name, value in signature.items()]
        try:
            response = getattr(self.stub, method)(message, metadata=metadata, timeout=self.timeout)
        except grpc.RpcError as error:
            trailing = dict(error.trailing_metadata() or ())
            retry_after = trailing.get("retry-after")
            raise ModeloManError(error.details() or "", code=trailing.get("error-code"), status=error.code().name,
                                 request_id=trailing.get("x-request-id"),
                                 retry_after=float(retry_after) if retry_after else None) from None
        return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)


def _varint_size(value: int) -> int:
    """Bytes of a non-negative protobuf varint."""
    return max(1, (value.bit_length() + 6) // 7)
