"""gRPC methods for admission, policy and caps. Thin: the guard has authenticated the call and holds
the idempotency key; these convert the message, validate it with the same input serializer as the
REST view (apps/policy/apis.py), call the same service or selector, and convert back."""

from __future__ import annotations

import dataclasses
from typing import Any

from rest_framework.exceptions import ValidationError

from apps.gateway.grpc.convert import money, plain, timestamp, validated
from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2 as pb
from apps.gateway.grpc.interceptors import current_principal, stored_response
from apps.gateway.idempotency import Claim, Outcome
from apps.policy import ledger, selectors, services
from apps.policy.apis import AdmissionsApi, CapInputSerializer, CapsApi, PolicyApi
from apps.policy.models import Policy, PolicyCap

# SetPolicy's update_mask may name these (AIP-134); the rest of the request is not policy.
POLICY_FIELDS = ("kill_switch", "dry_run", "allowed_models", "allow_unpriced_models", "max_tokens_per_attempt",
                 "max_cost_per_attempt", "max_concurrent_runs")


def level_message(policy: Policy) -> pb.PolicyLevel:
    return pb.PolicyLevel(
        level=policy.subject_type, kill_switch=policy.kill_switch, dry_run=policy.dry_run,
        allowed_models=policy.allowed_models or [], allow_unpriced_models=policy.allow_unpriced_models,
        max_tokens_per_attempt=policy.max_tokens_per_attempt, max_cost_per_attempt=money(policy.max_cost_per_attempt),
        max_concurrent_runs=policy.max_concurrent_runs,
    )


def cap_message(cap: PolicyCap) -> pb.Cap:
    return pb.Cap(id=cap.pk, level=cap.subject_type, metric=cap.metric, window=cap.window, limit=money(cap.limit),
                  model=cap.model, mode=cap.mode, enabled=cap.enabled,
                  used=money(getattr(cap, "used", None)), reserved=money(getattr(cap, "reserved", None)))


def _effective_message(merged: dict) -> pb.EffectivePolicy:
    allowed = merged["allowed_models"]
    return pb.EffectivePolicy(
        kill_switch=merged["kill_switch"], kill_switch_levels=merged["kill_switch_levels"],
        dry_run_levels=merged["dry_run_levels"],
        allowed_models=pb.ModelList(models=allowed) if allowed is not None else None,
        allow_unpriced_models=merged["allow_unpriced_models"],
        max_tokens_per_attempt=merged["max_tokens_per_attempt"],
        max_cost_per_attempt=money(merged["max_cost_per_attempt"]),
        max_concurrent_runs=merged["max_concurrent_runs"],
    )


def _policy_changes(request: pb.SetPolicyRequest) -> dict:
    """The request as REST's PUT body: subject and reason, and each field the mask names (its value,
    or null when unset: cleared). A name outside the policy fields goes through too, so the
    serializer refuses it as it refuses an unknown JSON field."""
    body: dict[str, Any] = {"subject": request.subject, "reason": request.reason}
    # AIP-134: without a mask, the implied mask is every field the request populates.
    paths = list(request.update_mask.paths) or [
        name for name in POLICY_FIELDS
        if (bool(request.allowed_models) if name == "allowed_models" else request.HasField(name))]
    for name in paths:
        if name == "allowed_models":
            body[name] = list(request.allowed_models)
        elif name in POLICY_FIELDS:
            body[name] = getattr(request, name) if request.HasField(name) else None
        else:
            body[name] = None
    return body


def admit_response(admission: ledger.Admission) -> pb.AdmitResponse:
    return pb.AdmitResponse(
        allowed=admission.allowed, reasons=admission.reasons,
        reservation_id=str(admission.reservation_id) if admission.reservation_id else None,
        dry_run_would_deny=admission.dry_run_would_deny, estimated_cost_usd=money(admission.estimated_cost_usd),
        caps=[pb.CapStatus(cap_id=cap.cap_id, metric=cap.metric, window=cap.window,
                           window_start=timestamp(cap.window_start), mode=cap.mode, limit=money(cap.limit),
                           used=money(cap.used), reserved=money(cap.reserved), remaining=money(cap.remaining))
              for cap in admission.caps],
    )


def admit_in_one_statement(request: pb.AdmitRequest, claim: Claim) -> Outcome | None:
    """Admit's common case in one round trip (apps.policy.ledger.admit_in_one_statement); anything
    else, invalid input included, is answered by `Admit` under the full path, in its order."""
    try:
        fields = validated(AdmissionsApi.InputSerializer, plain(request))
    except ValidationError:
        return None
    outcome = ledger.admit_in_one_statement(claim, principal=current_principal(), **fields,
                                            render=lambda admission: stored_response(admit_response(admission)))
    if outcome is None or outcome.answer is None:
        return outcome
    return dataclasses.replace(outcome, answer=admit_response(outcome.answer))  # the stored response, as a message


# gRPC method names are the operations of the access table: N802 does not apply.
class PolicyRpc:
    def Admit(self, request: pb.AdmitRequest, context: Any) -> pb.AdmitResponse:  # noqa: N802
        fields = validated(AdmissionsApi.InputSerializer, plain(request))
        return admit_response(ledger.admit(principal=current_principal(), **fields))

    def GetPolicy(self, request: pb.GetPolicyRequest, context: Any) -> pb.GetPolicyResponse:  # noqa: N802
        view = selectors.agent_policy_view(principal=current_principal())
        return pb.GetPolicyResponse(agent=view.agent, project=view.project,
                                    effective=_effective_message(view.effective),
                                    levels=[level_message(p) for p in view.levels],
                                    caps=[cap_message(c) for c in view.caps])

    def SetPolicy(self, request: pb.SetPolicyRequest, context: Any) -> pb.PolicyLevel:  # noqa: N802
        fields = validated(PolicyApi.InputSerializer, _policy_changes(request))
        return level_message(services.policy_set_for_agent(principal=current_principal(), **fields))

    def ListPolicyCaps(self, request: pb.ListPolicyCapsRequest, context: Any) -> pb.ListPolicyCapsResponse:  # noqa: N802
        page = validated(CapsApi.PageSerializer, plain(request))
        caps, next_after = selectors.agent_caps_with_usage(principal=current_principal(), **page)
        return pb.ListPolicyCapsResponse(caps=[cap_message(c) for c in caps], next_after=next_after)

    def UpsertPolicyCap(self, request: pb.UpsertPolicyCapRequest, context: Any) -> pb.Cap:  # noqa: N802
        body = plain(request)
        cap_id = body.pop("cap_id", None)
        if not body["subject"] and cap_id is not None:
            del body["subject"]  # a change names no subject (one it names is refused, as over REST)
        fields = validated(CapsApi.CreateSerializer if cap_id is None else CapInputSerializer, body)
        return cap_message(services.cap_upsert_for_agent(principal=current_principal(), cap_id=cap_id, **fields))

    def DeletePolicyCap(self, request: pb.DeletePolicyCapRequest, context: Any) -> pb.DeletePolicyCapResponse:  # noqa: N802
        services.cap_delete_for_agent(principal=current_principal(), cap_id=request.cap_id)
        return pb.DeletePolicyCapResponse()

