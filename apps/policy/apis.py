"""REST for admission, policy and caps. Thin: parse, call the service, render."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Annotated
from urllib.parse import urlencode

import msgspec
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from apps.gateway.access import Op
from apps.gateway.idempotency import Claim, Outcome
from apps.gateway.rest.request import AgentRequest
from apps.gateway.rest.serializers import (
    StrictBooleanField,
    StrictCharField,
    StrictDecimalField,
    StrictIntegerField,
    StrictSerializer,
    StrictUUIDField,
    rendered,
    shared,
    validated,
)
from apps.gateway.rest.views import GatewayApi
from apps.policy import ledger, selectors, services
from apps.policy.models import MAX_AMOUNT, MAX_TOKENS, MODEL_NAME_RE, ModelName, Policy, PolicyCap, SubjectType, Tokens


def _model_name(**kwargs) -> StrictCharField:
    # Not trimmed: a name with surrounding whitespace is refused, not silently changed.
    return StrictCharField(max_length=128, trim_whitespace=False, **kwargs,
                           validators=[RegexValidator(MODEL_NAME_RE, "Not a valid model name.", code="invalid_model")])


model_name_field = _model_name()


def _money(*, positive: bool = False, **kwargs) -> StrictDecimalField:
    smallest = Decimal("0.000001") if positive else Decimal(0)
    return StrictDecimalField(max_digits=18, decimal_places=6, min_value=smallest, max_value=MAX_AMOUNT, **kwargs)


class CapStatusSerializer(serializers.Serializer):
    cap_id = serializers.IntegerField()
    metric = serializers.CharField()
    window = serializers.CharField()
    window_start = serializers.DateTimeField()
    mode = serializers.CharField()
    limit = serializers.DecimalField(max_digits=20, decimal_places=6)
    used = serializers.DecimalField(max_digits=20, decimal_places=6)
    reserved = serializers.DecimalField(max_digits=20, decimal_places=6)
    remaining = serializers.DecimalField(max_digits=20, decimal_places=6)


class AdmissionsApi(GatewayApi):
    """Ask before spending: the answer, the reservation and the remaining budget per cap."""

    operation = Op.ADMIT

    class InputSerializer(StrictSerializer):
        model = model_name_field
        estimated_input_tokens = StrictIntegerField(min_value=0, max_value=MAX_TOKENS)
        estimated_output_tokens = StrictIntegerField(min_value=0, max_value=MAX_TOKENS)
        estimated_cost_usd = _money(required=False)
        run_id = StrictUUIDField(required=False, allow_null=True, help_text="The caller's run this is for (optional).")

    class OutputSerializer(serializers.Serializer):
        allowed = serializers.BooleanField()
        reasons = serializers.ListField(child=serializers.CharField())
        reservation_id = serializers.UUIDField(allow_null=True)
        dry_run_would_deny = serializers.ListField(child=serializers.CharField())
        estimated_cost_usd = serializers.DecimalField(max_digits=18, decimal_places=6, allow_null=True)
        caps = CapStatusSerializer(many=True)

    @extend_schema(request=InputSerializer, responses=OutputSerializer)
    def post(self, request: AgentRequest) -> Response:
        admission = ledger.admit(principal=request.auth, **self.input_fields(request))
        return Response(admission_document(admission))

    def write_in_one_statement(self, request: AgentRequest, claim: Claim) -> Outcome | None:
        """The common admission (admitted, nothing would deny) in one round trip; anything else,
        invalid input included, is answered by `post` under the full path, in its order. (A body
        that is no JSON at all is refused here, before its key is looked at.)"""
        try:
            fields = self.input_fields(request)
        except ValidationError:
            return None
        return ledger.admit_in_one_statement(claim, principal=request.auth, **fields, render=admission_document)

    def input_fields(self, request: AgentRequest) -> dict:
        """InputSerializer's validated data (or its ValidationError). Decoded straight from the body
        into a typed struct where it can be (`AdmissionIn`: 0.27 M instructions fewer than DRF's
        parser and serializer, 7-8% of a whole admission, bench/instructions.py); a body the
        struct does not take goes to the serializer, which accepts some of them (a token count of
        `5.0`, another spelling of the JSON media type) and refuses the rest with its error codes.
        The struct takes nothing the serializer refuses, and gives the same values
        (tests/policy/test_admission_input.py)."""
        return decoded_admission(request) or validated(self.InputSerializer, request.data)


def decoded_admission(request: AgentRequest) -> dict | None:
    """The admission's input as `AdmissionsApi.InputSerializer` validates it, from a typed struct;
    None for a body the struct does not take."""
    if request.content_type != "application/json":
        return None
    try:
        decoded = _ADMISSION_IN.decode(request.body)
    except msgspec.DecodeError:  # malformed or invalid: ValidationError is a DecodeError
        return None
    fields = {"model": decoded.model, "estimated_input_tokens": decoded.estimated_input_tokens,
              "estimated_output_tokens": decoded.estimated_output_tokens}
    if decoded.estimated_cost_usd is not msgspec.UNSET:  # the serializer's own conversion (six places)
        fields["estimated_cost_usd"] = _COST_FIELD.run_validation(decoded.estimated_cost_usd)
    if decoded.run_id is not msgspec.UNSET:
        fields["run_id"] = None if decoded.run_id is None else uuid.UUID(decoded.run_id)
    return fields


_COST_FIELD = shared(AdmissionsApi.InputSerializer).fields["estimated_cost_usd"]


class AdmissionIn(msgspec.Struct, forbid_unknown_fields=True):
    """`AdmissionsApi.InputSerializer`'s rules as a typed struct, for the hot path."""

    model: ModelName
    estimated_input_tokens: Tokens
    estimated_output_tokens: Tokens
    estimated_cost_usd: Annotated[str, msgspec.Meta(pattern=_COST_FIELD.pattern)] | msgspec.UnsetType = msgspec.UNSET
    run_id: Annotated[str, msgspec.Meta(pattern=StrictUUIDField.pattern)] | None | msgspec.UnsetType = msgspec.UNSET


_ADMISSION_IN = msgspec.json.Decoder(AdmissionIn)


def admission_document(admission: ledger.Admission) -> dict:
    """`AdmissionsApi.OutputSerializer`'s document (which the OpenAPI schema publishes), written out:
    on the hot path DRF's rendering cost more CPU than the admission's SQL. Money as decimal strings
    with six places, times in UTC with `Z`, as DRF writes them; tests/policy/test_admission_document.py
    holds the two to the same output."""
    return {
        "allowed": admission.allowed,
        "reasons": [str(reason) for reason in admission.reasons],
        "reservation_id": str(admission.reservation_id) if admission.reservation_id else None,
        "dry_run_would_deny": [str(reason) for reason in admission.dry_run_would_deny],
        "estimated_cost_usd": _six_places(admission.estimated_cost_usd),
        "caps": [{"cap_id": cap.cap_id, "metric": cap.metric, "window": cap.window,
                  "window_start": _utc(cap.window_start), "mode": cap.mode, "limit": _six_places(cap.limit),
                  "used": _six_places(cap.used), "reserved": _six_places(cap.reserved),
                  "remaining": _six_places(cap.remaining)}
                 for cap in admission.caps],
    }


SIX_PLACES = Decimal("0.000001")


def _six_places(amount: Decimal | None) -> str | None:
    return None if amount is None else f"{amount.quantize(SIX_PLACES):f}"


def _utc(moment: dt.datetime) -> str:
    text = moment.astimezone(dt.UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class LevelSerializer(serializers.ModelSerializer):
    level = serializers.CharField(source="subject_type")

    class Meta:
        model = Policy
        fields = ["level", "kill_switch", "dry_run", "allowed_models", "allow_unpriced_models",
                  "max_tokens_per_attempt", "max_cost_per_attempt", "max_concurrent_runs"]


class CapSerializer(serializers.ModelSerializer):
    level = serializers.CharField(source="subject_type")

    class Meta:
        model = PolicyCap
        fields = ["id", "level", "metric", "window", "limit", "model", "mode", "enabled"]


class EffectivePolicySerializer(serializers.Serializer):
    """The most restrictive value of every rule over the global, project and agent levels."""

    kill_switch = serializers.BooleanField()
    kill_switch_levels = serializers.ListField(child=serializers.CharField())
    dry_run_levels = serializers.ListField(child=serializers.CharField())
    allowed_models = serializers.ListField(child=serializers.CharField(), allow_null=True,
                                           help_text="null: every model.")
    allow_unpriced_models = serializers.BooleanField(allow_null=True)
    max_tokens_per_attempt = serializers.IntegerField(allow_null=True)
    max_cost_per_attempt = serializers.DecimalField(max_digits=18, decimal_places=6, allow_null=True)
    max_concurrent_runs = serializers.IntegerField(allow_null=True)


class PolicyViewSerializer(serializers.Serializer):
    agent = serializers.CharField()
    project = serializers.CharField()
    effective = EffectivePolicySerializer()
    levels = LevelSerializer(many=True)
    caps = CapSerializer(many=True)


class PolicyApi(GatewayApi):
    """GET: the calling agent's effective policy. PUT: tighten its agent or project level
    (loosening is for operators; see docs/policy.md)."""

    operations = {"GET": Op.GET_POLICY, "PUT": Op.SET_POLICY}

    class InputSerializer(StrictSerializer):
        subject = serializers.ChoiceField(choices=[SubjectType.AGENT, SubjectType.PROJECT])
        kill_switch = StrictBooleanField(required=False)
        dry_run = StrictBooleanField(required=False)
        allowed_models = serializers.ListField(child=model_name_field, max_length=200, required=False)
        allow_unpriced_models = StrictBooleanField(required=False, allow_null=True)
        max_tokens_per_attempt = StrictIntegerField(min_value=1, max_value=MAX_TOKENS, required=False,
                                                    allow_null=True)
        max_cost_per_attempt = _money(positive=True, required=False, allow_null=True)  # as Policy's validator
        max_concurrent_runs = StrictIntegerField(min_value=1, max_value=100000, required=False, allow_null=True)
        reason = StrictCharField(max_length=2000, required=False, allow_blank=True)

    @extend_schema(responses=PolicyViewSerializer)
    def get(self, request: AgentRequest) -> Response:
        return Response(rendered(PolicyViewSerializer, selectors.agent_policy_view(principal=request.auth)))

    @extend_schema(request=InputSerializer, responses=LevelSerializer)
    def put(self, request: AgentRequest) -> Response:
        policy = services.policy_set_for_agent(principal=request.auth, **validated(self.InputSerializer, request.data))
        return Response(rendered(LevelSerializer, policy))


class CapInputSerializer(StrictSerializer):
    metric = serializers.ChoiceField(choices=PolicyCap.Metric.choices)
    window = serializers.ChoiceField(choices=PolicyCap.Window.choices)
    limit = _money(positive=True)
    model = _model_name(required=False, allow_blank=True)
    mode = serializers.ChoiceField(choices=PolicyCap.Mode.choices, required=False)
    enabled = StrictBooleanField(required=False)


class CapWithUsageSerializer(CapSerializer):
    used = serializers.DecimalField(max_digits=20, decimal_places=6, read_only=True)
    reserved = serializers.DecimalField(max_digits=20, decimal_places=6, read_only=True)

    class Meta(CapSerializer.Meta):
        fields = [*CapSerializer.Meta.fields, "used", "reserved"]


class CapPageSerializer(serializers.Serializer):
    results = CapWithUsageSerializer(many=True)
    next = serializers.URLField(allow_null=True)


class CapsApi(GatewayApi):
    """GET: caps that apply to the calling agent, with current usage, a page at a time
    (`?limit=` up to 200, then follow `next`). POST: add one."""

    operations = {"GET": Op.LIST_POLICY_CAPS, "POST": Op.UPSERT_POLICY_CAP}

    class PageSerializer(serializers.Serializer):  # query parameters
        limit = serializers.IntegerField(min_value=1, max_value=selectors.MAX_CAPS_PAGE, required=False,
                                         default=selectors.DEFAULT_CAPS_PAGE)
        after = serializers.IntegerField(min_value=0, required=False, default=0)

    class CreateSerializer(CapInputSerializer):
        subject = serializers.ChoiceField(choices=[SubjectType.AGENT, SubjectType.PROJECT])

    @extend_schema(parameters=[PageSerializer], responses=CapPageSerializer)
    def get(self, request: AgentRequest) -> Response:
        query = validated(self.PageSerializer, request.query_params)
        caps, next_after = selectors.agent_caps_with_usage(principal=request.auth, **query)
        next_url = None
        if next_after is not None:
            params = urlencode({"limit": query["limit"], "after": next_after})
            next_url = request.build_absolute_uri(f"{request.path}?{params}")
        return Response({"results": rendered(CapWithUsageSerializer, caps, many=True), "next": next_url})

    @extend_schema(request=CreateSerializer, responses={201: CapSerializer})
    def post(self, request: AgentRequest) -> Response:
        cap = services.cap_upsert_for_agent(principal=request.auth, **validated(self.CreateSerializer, request.data))
        return Response(rendered(CapSerializer, cap), status=status.HTTP_201_CREATED)


class CapDetailApi(GatewayApi):
    """PUT changes a cap the caller can see (tighten anyone's, loosen only its own); DELETE
    removes one the caller created."""

    operations = {"PUT": Op.UPSERT_POLICY_CAP, "DELETE": Op.DELETE_POLICY_CAP}

    @extend_schema(request=CapInputSerializer, responses=CapSerializer)
    def put(self, request: AgentRequest, cap_id: int) -> Response:
        cap = services.cap_upsert_for_agent(principal=request.auth, cap_id=cap_id,
                                            **validated(CapInputSerializer, request.data))
        return Response(rendered(CapSerializer, cap))

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: AgentRequest, cap_id: int) -> Response:
        services.cap_delete_for_agent(principal=request.auth, cap_id=cap_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
