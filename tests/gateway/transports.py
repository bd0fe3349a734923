"""One way to call an operation of the access table over either transport, for parity tests.

A call takes the operation, a token and a payload shaped like REST's JSON (path parameters
included: `run_id`, `cap_id`); each transport puts it on its own wire and returns an `Answer`:
the gRPC status name (REST's HTTP status mapped through the gateway's one table), the stable error
code, and the response as plain data (a gRPC message as a dict with the .proto field names).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format
from rest_framework.test import APIClient

from apps.gateway.access import Op
from apps.gateway.errors import grpc_code_for
from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2 as pb
from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2_grpc as pb_grpc

METHODS = pb.DESCRIPTOR.services_by_name["ControlPlane"].methods_by_name


@dataclass(frozen=True)
class Answer:
    status: str  # a grpc.StatusCode name
    code: str | None  # the stable error code (None on success)
    data: Any
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "OK"


def _without(payload: dict, *names: str) -> dict:
    return {k: v for k, v in payload.items() if k not in names}


def rest_request(op: Op, p: dict) -> tuple[str, str, dict | None]:
    """(method, path, body) of an operation over REST."""
    routes = {
        Op.WHO_AM_I: lambda: ("GET", "/api/v1/whoami", None),
        Op.GET_LEADERBOARD: lambda: ("GET", "/api/v1/leaderboard", None),
        Op.ADMIT: lambda: ("POST", "/api/v1/admissions", p),
        Op.START_RUN: lambda: ("POST", "/api/v1/runs", p),
        Op.FINISH_RUN: lambda: ("POST", f"/api/v1/runs/{p['run_id']}/finish", _without(p, "run_id")),
        Op.GET_RUN: lambda: ("GET", f"/api/v1/runs/{p['run_id']}", None),
        Op.RECORD_RUN_EVENT: lambda: ("POST", f"/api/v1/runs/{p['run_id']}/events", _without(p, "run_id")),
        Op.RECORD_PROMPT_ATTEMPT: lambda: ("POST", "/api/v1/attempts", p["attempt"]),
        Op.RECORD_PROMPT_ATTEMPTS: lambda: ("POST", "/api/v1/attempts", p),
        Op.RECORD_BENCHMARK: lambda: ("POST", "/api/v1/benchmarks", p["benchmark"]),
        Op.GET_POLICY: lambda: ("GET", "/api/v1/policy", None),
        Op.SET_POLICY: lambda: ("PUT", "/api/v1/policy", p),
        Op.LIST_POLICY_CAPS: lambda: ("GET", "/api/v1/policy/caps", None),
        Op.UPSERT_POLICY_CAP: lambda: (("PUT", f"/api/v1/policy/caps/{p['cap_id']}", _without(p, "cap_id"))
                                       if "cap_id" in p else ("POST", "/api/v1/policy/caps", p)),
        Op.DELETE_POLICY_CAP: lambda: ("DELETE", f"/api/v1/policy/caps/{p['cap_id']}", None),
        Op.EXPORT_STATE: lambda: ("GET", "/api/v1/export", None),
    }
    return routes[op]()


def grpc_request(op: Op, p: dict) -> Any:
    """The request message of an operation: the payload parsed as the message's JSON, except
    SetPolicy, whose changed fields are named in its update_mask (a None value: cleared)."""
    request_class = getattr(pb, METHODS[op].input_type.name)
    if op is Op.SET_POLICY:
        changes = _without(p, "subject", "reason")
        message = json_format.ParseDict({k: v for k, v in p.items() if v is not None}, request_class())
        message.update_mask.paths.extend(changes)
        return message
    return json_format.ParseDict(p, request_class())


class Rest:
    name = "rest"

    def __init__(self) -> None:
        self.client = APIClient()

    def call(self, op: Op, token: str | None = None, payload: dict | None = None, *,
             idempotency_key: str | None = "new") -> Answer:
        method, path, body = rest_request(op, payload or {})
        headers: dict[str, Any] = {}
        if token:
            headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        if method != "GET" and idempotency_key is not None:
            headers["HTTP_IDEMPOTENCY_KEY"] = uuid.uuid4().hex if idempotency_key == "new" else idempotency_key
        response = self.client.generic(method, path, data="" if body is None else _json(body).decode(),
                                       content_type="application/json", **headers)
        if getattr(response, "streaming", False):
            data = json.loads(response.getvalue())  # the streamed chunks, joined
        else:
            data = response.json() if response.content else None
        code = data.get("code") if isinstance(data, dict) and response.status_code >= 400 else None
        status = "OK" if response.status_code < 300 else grpc_code_for(response.status_code).value
        return Answer(status, code, data, response.headers.get("Idempotent-Replayed") == "true")


def _json(body: dict) -> bytes:
    return json.dumps(body).encode()


class Grpc:
    name = "grpc"

    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = pb_grpc.ControlPlaneStub(channel)

    def call(self, op: Op, token: str | None = None, payload: dict | None = None, *,
             idempotency_key: str | None = "new", request: Any = None) -> Answer:
        metadata = []
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        if METHODS[op].output_type.name != "ExportRecord" and idempotency_key is not None:
            metadata.append(("idempotency-key", uuid.uuid4().hex if idempotency_key == "new" else idempotency_key))
        message = request if request is not None else grpc_request(op, payload or {})
        method = getattr(self.stub, op.value)
        try:
            if METHODS[op].server_streaming:
                records = list(method(message, metadata=metadata, timeout=10))
                return Answer("OK", None, [_dict(r) for r in records])
            response, call = method.with_call(message, metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            return Answer(error.code().name, dict(error.trailing_metadata() or ()).get("error-code"), error.details())
        return Answer("OK", None, _dict(response), dict(call.trailing_metadata()).get("idempotent-replayed") == "true")


def _dict(message: Any) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
