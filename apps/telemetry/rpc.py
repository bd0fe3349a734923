"""gRPC methods for runs and telemetry. Thin: the guard has authenticated the call and holds the
idempotency key; these convert the message, call the same service as REST (apps/telemetry/apis.py)
and convert back. Telemetry items meet the same msgspec structs as REST's JSON bodies."""

from __future__ import annotations

import json
from typing import Any

from apps.gateway.grpc.convert import money, plain, run_id, timestamp, validated
from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2 as pb
from apps.gateway.grpc.interceptors import current_principal
from apps.telemetry import services
from apps.telemetry.apis import RunFinishApi, RunsApi
from apps.telemetry.models import Run
from apps.telemetry.validation import AttemptIn, BenchmarkIn, RunEventIn, convert_item, convert_items


def run_message(run: Run) -> pb.Run:
    # REST stores any JSON value in metadata; a message carries strings, so others arrive JSON-encoded.
    metadata = {key: value if isinstance(value, str) else json.dumps(value) for key, value in run.metadata.items()}
    return pb.Run(id=str(run.id), task=run.task, status=run.status, started_at=timestamp(run.started_at),
                  finished_at=timestamp(run.finished_at), attempts=run.attempts, input_tokens=run.input_tokens,
                  output_tokens=run.output_tokens, cost_usd=money(run.cost_usd), metadata=metadata)


# gRPC method names are the operations of the access table: N802 does not apply.
class TelemetryRpc:
    def StartRun(self, request: pb.StartRunRequest, context: Any) -> pb.Run:  # noqa: N802
        fields = validated(RunsApi.InputSerializer, plain(request))
        return run_message(services.run_start(principal=current_principal(), **fields))

    def FinishRun(self, request: pb.FinishRunRequest, context: Any) -> pb.Run:  # noqa: N802
        fields = validated(RunFinishApi.InputSerializer, {k: v for k, v in plain(request).items() if k != "run_id"})
        run = services.run_finish(principal=current_principal(), run_id=run_id(request.run_id),
                                  status=fields["status"], metadata=fields.get("metadata"))
        return run_message(run)

    def GetRun(self, request: pb.GetRunRequest, context: Any) -> pb.Run:  # noqa: N802
        return run_message(services.run_get(principal=current_principal(), run_id=run_id(request.run_id)))

    def RecordRunEvent(self, request: pb.RecordRunEventRequest, context: Any) -> pb.RecordResponse:  # noqa: N802
        items = convert_items([plain(event) for event in request.events], RunEventIn, plural="events")
        ids = services.run_events_record(principal=current_principal(), run_id=run_id(request.run_id), items=items,
                                         batch=True)
        return pb.RecordResponse(accepted=len(ids))

    def RecordPromptAttempt(self, request: pb.RecordPromptAttemptRequest, context: Any) -> pb.RecordResponse:  # noqa: N802
        item = convert_item(plain(request.attempt), AttemptIn)
        ids = services.attempts_record(principal=current_principal(), items=[item], batch=False)
        return pb.RecordResponse(accepted=len(ids))

    def RecordPromptAttempts(self, request: pb.RecordPromptAttemptsRequest, context: Any) -> pb.RecordResponse:  # noqa: N802
        items = convert_items([plain(attempt) for attempt in request.attempts], AttemptIn, plural="attempts")
        ids = services.attempts_record(principal=current_principal(), items=items, batch=True)
        return pb.RecordResponse(accepted=len(ids))

    def RecordBenchmark(self, request: pb.RecordBenchmarkRequest, context: Any) -> pb.RecordResponse:  # noqa: N802
        item = convert_item(plain(request.benchmark), BenchmarkIn)
        services.benchmark_record(principal=current_principal(), item=item)
        return pb.RecordResponse(accepted=1)
