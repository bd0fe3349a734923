"""REST for runs, run events, prompt attempts and benchmarks."""

from __future__ import annotations

import json
import uuid

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from apps.gateway.access import Op
from apps.gateway.rest.parsers import RawJSONParser, json_body
from apps.gateway.rest.request import AgentRequest
from apps.gateway.rest.serializers import JSONObjectField, StrictCharField, StrictSerializer, rendered, validated
from apps.gateway.rest.views import GatewayApi
from apps.telemetry import services
from apps.telemetry.validation import (
    MAX_ATTRIBUTES,
    AttemptIn,
    BenchmarkIn,
    RunEventIn,
    decode_item,
    decode_items,
    request_schema,
)
from apps.telemetry.validation import (
    MAX_ATTRIBUTES_BYTES as MAX_METADATA_BYTES,
)


def bounded_metadata(value: dict) -> dict:
    if len(json.dumps(value)) > MAX_METADATA_BYTES:
        raise serializers.ValidationError("At most 4 KB of JSON.")
    return value


def metadata_field(**kwargs) -> JSONObjectField:
    return JSONObjectField(validators=[bounded_metadata], max_properties=MAX_ATTRIBUTES,
                           help_text=f"Up to {MAX_ATTRIBUTES} keys and 4 KB as JSON.", **kwargs)


class RunSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    task = serializers.CharField()
    status = serializers.CharField()
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    attempts = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cost_usd = serializers.DecimalField(max_digits=18, decimal_places=6)
    metadata = serializers.JSONField()


class RunsApi(GatewayApi):
    """Start a run."""

    operation = Op.START_RUN

    class InputSerializer(StrictSerializer):
        task = StrictCharField(max_length=200)
        metadata = metadata_field(required=False, default=dict)

    @extend_schema(request=InputSerializer, responses={201: RunSerializer})
    def post(self, request: AgentRequest) -> Response:
        run = services.run_start(principal=request.auth, **validated(self.InputSerializer, request.data))
        return Response(rendered(RunSerializer, run), status=status.HTTP_201_CREATED)


class RunDetailApi(GatewayApi):
    """One run, by id: the caller's own (or any, with `admin:read`)."""

    operation = Op.GET_RUN

    @extend_schema(responses=RunSerializer)
    def get(self, request: AgentRequest, run_id: uuid.UUID) -> Response:
        return Response(rendered(RunSerializer, services.run_get(principal=request.auth, run_id=run_id)))


class RunFinishApi(GatewayApi):
    operation = Op.FINISH_RUN

    class InputSerializer(StrictSerializer):
        status = serializers.ChoiceField(choices=sorted(services.RUN_FINAL_STATES))
        metadata = metadata_field(required=False)

    @extend_schema(request=InputSerializer, responses=RunSerializer)
    def post(self, request: AgentRequest, run_id: uuid.UUID) -> Response:
        fields = validated(self.InputSerializer, request.data)
        run = services.run_finish(principal=request.auth, run_id=run_id, status=fields["status"],
                                  metadata=fields.get("metadata"))
        return Response(rendered(RunSerializer, run))


class AcceptedSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="Items stored: all of them, as a batch is all or nothing.")


def _accepted(ids: list[uuid.UUID]) -> Response:
    # Only the count: a batch's thousand ids would be kept for a day with the Idempotency-Key, and
    # no operation takes an attempt, event or benchmark id.
    return Response({"accepted": len(ids)}, status=status.HTTP_201_CREATED)


class RunEventsApi(GatewayApi):
    """One event, or `{"events": [...]}` (up to 1,000), appended to the caller's run."""

    operation = Op.RECORD_RUN_EVENT
    parser_classes = [RawJSONParser]

    @extend_schema(request={"application/json": request_schema(RunEventIn, plural="events")},
                   responses={201: AcceptedSerializer})
    def post(self, request: AgentRequest, run_id: uuid.UUID) -> Response:
        items, batch = decode_items(json_body(request), RunEventIn, plural="events")
        return _accepted(services.run_events_record(principal=request.auth, run_id=run_id, items=items, batch=batch))


class AttemptsApi(GatewayApi):
    """One prompt attempt, or `{"attempts": [...]}` (up to 1,000), all or nothing."""

    operations = {"POST": Op.RECORD_PROMPT_ATTEMPTS}
    parser_classes = [RawJSONParser]

    @extend_schema(request={"application/json": request_schema(AttemptIn, plural="attempts")},
                   responses={201: AcceptedSerializer})
    def post(self, request: AgentRequest) -> Response:
        items, batch = decode_items(json_body(request), AttemptIn, plural="attempts")
        return _accepted(services.attempts_record(principal=request.auth, items=items, batch=batch))


class BenchmarksApi(GatewayApi):
    """One benchmark result."""

    operation = Op.RECORD_BENCHMARK
    parser_classes = [RawJSONParser]

    @extend_schema(request={"application/json": request_schema(BenchmarkIn)}, responses={201: AcceptedSerializer})
    def post(self, request: AgentRequest) -> Response:
        item = decode_item(json_body(request), BenchmarkIn)
        return _accepted([services.benchmark_record(principal=request.auth, item=item)])
