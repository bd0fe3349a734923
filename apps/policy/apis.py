"""REST for admission, policy and caps. Thin: parse, call the service, render."""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.audit.services import Actor
from apps.keys.models import Agent
from apps.policy import selectors, services
from apps.policy.models import MAX_AMOUNT, MODEL_NAME_RE, Policy, PolicyCap, SubjectType
from apps.telemetry.idempotency import idempotent_write
from modeloman.problems import Forbidden, NotFound
from modeloman.serializers import (
    StrictBooleanField,
    StrictCharField,
    StrictDecimalField,
    StrictIntegerField,
    StrictSerializer,
)

MAX_TOKENS = 10**9


def _model_name(**kwargs) -> StrictCharField:
    # Not trimmed: a name with surrounding whitespace is refused, not silently changed.
    return StrictCharField(max_length=128, trim_whitespace=False, **kwargs,
                           validators=[RegexValidator(MODEL_NAME_RE, "Not a valid model name.", code="invalid_model")])


model_name_field = _model_name()


def _money(**kwargs) -> StrictDecimalField:
    return StrictDecimalField(max_digits=18, decimal_places=6, min_value=Decimal(0), max_value=MAX_AMOUNT, **kwargs)


def _own_agent(principal) -> Agent:
    if principal.agent_id is None:
        raise Forbidden("Only agent keys have a policy.", code="not_an_agent")
    return Agent.objects.select_related("project").get(pk=principal.agent_id)


def _subject_kwargs(agent: Agent, subject: str) -> dict:
    if subject == SubjectType.AGENT:
        return {"subject_type": SubjectType.AGENT, "agent": agent}
    return {"subject_type": SubjectType.PROJECT, "project": agent.project}


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


class AdmissionsApi(APIView):
    """Ask before spending: the answer, the reservation and the remaining budget per cap."""

    operation = "Admit"

    class InputSerializer(StrictSerializer):
        model = model_name_field
        estimated_input_tokens = StrictIntegerField(min_value=0, max_value=MAX_TOKENS)
        estimated_output_tokens = StrictIntegerField(min_value=0, max_value=MAX_TOKENS)
        estimated_cost_usd = _money(required=False)
        run_id = serializers.UUIDField(required=False)

    class OutputSerializer(serializers.Serializer):
        allowed = serializers.BooleanField()
        reasons = serializers.ListField(child=serializers.CharField())
        reservation_id = serializers.UUIDField(allow_null=True)
        dry_run_would_deny = serializers.ListField(child=serializers.CharField())
        estimated_cost_usd = serializers.DecimalField(max_digits=18, decimal_places=6, allow_null=True)
        caps = CapStatusSerializer(many=True)

    @extend_schema(request=InputSerializer, responses=OutputSerializer)
    @idempotent_write
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        admission = services.admit(
            principal=request.auth, model=fields["model"],
            estimated_input_tokens=fields["estimated_input_tokens"],
            estimated_output_tokens=fields["estimated_output_tokens"],
            estimated_cost_usd=fields.get("estimated_cost_usd"),
        )
        return Response(self.OutputSerializer(admission).data)


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


class PolicyApi(APIView):
    """GET: the calling agent's effective policy. PUT: change its agent or project level."""

    operations = {"GET": "GetPolicy", "PUT": "SetPolicy"}

    class InputSerializer(StrictSerializer):
        subject = serializers.ChoiceField(choices=[SubjectType.AGENT, SubjectType.PROJECT])
        kill_switch = StrictBooleanField(required=False)
        dry_run = StrictBooleanField(required=False)
        allowed_models = serializers.ListField(child=model_name_field, max_length=200, required=False)
        allow_unpriced_models = StrictBooleanField(required=False, allow_null=True)
        max_tokens_per_attempt = StrictIntegerField(min_value=1, max_value=MAX_TOKENS, required=False,
                                                    allow_null=True)
        max_cost_per_attempt = _money(required=False, allow_null=True)
        max_concurrent_runs = StrictIntegerField(min_value=1, max_value=100000, required=False, allow_null=True)
        reason = StrictCharField(max_length=2000, required=False, allow_blank=True)

    @extend_schema(responses=LevelSerializer(many=True))
    def get(self, request: Request) -> Response:
        agent = _own_agent(request.auth)
        policy = selectors.effective_policy(agent.pk)
        levels = selectors.policies_for_agent(agent)
        caps = selectors.caps_for_agent(agent)
        return Response({
            "agent": agent.name, "project": agent.project.slug,
            "effective": serializers.JSONField().to_representation(_json_ready(policy.merged())),
            "levels": LevelSerializer(levels, many=True).data,
            "caps": CapSerializer(caps, many=True).data,
        })

    @extend_schema(request=InputSerializer, responses=LevelSerializer)
    @idempotent_write
    def put(self, request: Request) -> Response:
        agent = _own_agent(request.auth)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        subject = changes.pop("subject")
        reason = changes.pop("reason", "")
        if changes.get("kill_switch") is False:
            raise Forbidden("Only an operator can release a kill switch.", code="kill_switch_release_requires_operator")
        policy = services.policy_set(actor=Actor.for_principal(request.auth), reason=reason,
                                     **_subject_kwargs(agent, subject), **changes)
        return Response(LevelSerializer(policy).data)


def _json_ready(merged: dict) -> dict:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in merged.items()}


class CapInputSerializer(StrictSerializer):
    metric = serializers.ChoiceField(choices=PolicyCap.Metric.choices)
    window = serializers.ChoiceField(choices=PolicyCap.Window.choices)
    limit = StrictDecimalField(max_digits=18, decimal_places=6, min_value=Decimal("0.000001"), max_value=MAX_AMOUNT)
    model = _model_name(required=False, allow_blank=True)
    mode = serializers.ChoiceField(choices=PolicyCap.Mode.choices, required=False)
    enabled = StrictBooleanField(required=False)


class CapsApi(APIView):
    """GET: caps that apply to the calling agent, with current usage. POST: add one."""

    operations = {"GET": "ListPolicyCaps", "POST": "UpsertPolicyCap"}

    class CreateSerializer(CapInputSerializer):
        subject = serializers.ChoiceField(choices=[SubjectType.AGENT, SubjectType.PROJECT])

    @extend_schema(responses=CapSerializer(many=True))
    def get(self, request: Request) -> Response:
        agent = _own_agent(request.auth)
        caps = selectors.caps_for_agent(agent)
        usage = selectors.current_usage(caps)
        rows = []
        for cap, item in zip(caps, CapSerializer(caps, many=True).data, strict=True):
            ledger = usage.get(cap.pk)
            item["used"] = str(ledger.used) if ledger else "0"
            item["reserved"] = str(ledger.reserved) if ledger else "0"
            rows.append(item)
        return Response(rows)

    @extend_schema(request=CreateSerializer, responses=CapSerializer)
    @idempotent_write
    def post(self, request: Request) -> Response:
        agent = _own_agent(request.auth)
        data = self.CreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        cap = PolicyCap(**_subject_kwargs(agent, fields.pop("subject")), **fields)
        cap = services.cap_save(actor=Actor.for_principal(request.auth), cap=cap)
        return Response(CapSerializer(cap).data, status=status.HTTP_201_CREATED)


class CapDetailApi(APIView):
    """PUT replaces a cap's settings; DELETE removes it. Only the caller's own agent or project caps."""

    operations = {"PUT": "UpsertPolicyCap", "DELETE": "DeletePolicyCap"}

    def _own_cap(self, request: Request, cap_id: int) -> PolicyCap:
        agent = _own_agent(request.auth)
        cap = selectors.caps_for_agent(agent).filter(pk=cap_id).first()
        if cap is None:
            raise NotFound("No such cap.", code="cap_not_found")  # same answer for other projects' caps
        if cap.subject_type == SubjectType.GLOBAL:
            raise Forbidden("Global caps are changed by operators only.", code="global_policy_is_operator_only")
        return cap

    @extend_schema(request=CapInputSerializer, responses=CapSerializer)
    @idempotent_write
    def put(self, request: Request, cap_id: int) -> Response:
        cap = self._own_cap(request, cap_id)
        data = CapInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        for name, value in data.validated_data.items():
            setattr(cap, name, value)
        cap = services.cap_save(actor=Actor.for_principal(request.auth), cap=cap)
        return Response(CapSerializer(cap).data)

    @extend_schema(request=None, responses={204: None})
    @idempotent_write
    def delete(self, request: Request, cap_id: int) -> Response:
        cap = self._own_cap(request, cap_id)
        services.cap_delete(actor=Actor.for_principal(request.auth), cap=cap)
        return Response(status=status.HTTP_204_NO_CONTENT)
