"""The writes that change policy, caps and prices: operators' (actor) and agents' own (principal),
each audited in its transaction and broadcast to every process. Admission and the usage ledger
are in apps.policy.ledger.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

from apps.audit.services import Actor, audit_record, snapshot
from apps.gateway.errors import Conflict, Forbidden, InvalidInput, NotFound
from apps.keys.models import Agent
from apps.policy.models import (
    ModelPrice,
    PendingCapChange,
    Policy,
    PolicyCap,
    SubjectType,
)
from apps.policy.selectors import caps_for_agent
from modeloman.invalidation import broadcast

if TYPE_CHECKING:
    from apps.gateway.auth import Principal

POLICY_FIELDS = ("subject_type", "project", "agent", "kill_switch", "kill_switch_reason", "dry_run",
                 "allowed_models", "allow_unpriced_models", "max_tokens_per_attempt", "max_cost_per_attempt",
                 "max_concurrent_runs")
CAP_FIELDS = ("subject_type", "project", "agent", "metric", "window", "limit", "model", "mode", "enabled")
PRICE_FIELDS = ("model", "input_usd_per_mtok", "output_usd_per_mtok", "effective_from")


# --- policy, caps and prices --------------------------------------------------------------------------


def _lock_subject(kind: str, *, subject_type: str, project=None, agent=None) -> None:
    """Serialize writes to one subject's policy row or caps until the transaction ends, so two
    first writes cannot both insert a policy row, nor two new caps both pass the bound."""
    project_id = getattr(project, "pk", project)
    agent_id = getattr(agent, "pk", agent)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                       [f"{kind}:{subject_type}:{project_id}:{agent_id}"])


def policy_for_subject(*, subject_type: str, project=None, agent=None, lock: bool = False) -> Policy:
    """The subject's policy row, unsaved (and default) if it has none yet."""
    if lock:
        _lock_subject("policy", subject_type=subject_type, project=project, agent=agent)
    queryset = Policy.objects.select_for_update() if lock else Policy.objects
    existing = queryset.filter(subject_type=subject_type, project=project, agent=agent).first()
    return existing or Policy(subject_type=subject_type, project=project, agent=agent)


@transaction.atomic
def policy_set(*, actor: Actor, subject_type: str, project=None, agent=None, reason: str = "",
               **changes: object) -> Policy:
    """Create or change a subject's policy, with an operator's authority (agents go through
    `policy_set_for_agent`). Takes effect in every process within a second."""
    policy = policy_for_subject(subject_type=subject_type, project=project, agent=agent, lock=True)
    return _policy_apply(actor=actor, policy=policy, reason=reason, changes=changes)


def _policy_apply(*, actor: Actor, policy: Policy, reason: str, changes: dict) -> Policy:
    adding = policy._state.adding
    before = None if adding else snapshot(policy, POLICY_FIELDS)
    for name, value in changes.items():
        setattr(policy, name, value)
    if "kill_switch" in changes:
        policy.kill_switch_reason = reason if policy.kill_switch else ""
    policy.full_clean()
    policy.save()
    after = snapshot(policy, POLICY_FIELDS)
    audit_record(actor=actor, action="policy.create" if adding else "policy.update", target=policy,
                 before=before, after=after, reason=reason)
    broadcast("policy")
    return policy


# A cap's ledger rows, locked in the one lock order (by window start).
_CAP_WINDOWS = "SELECT id FROM policy_usageledger WHERE cap_id = %s ORDER BY window_start FOR UPDATE"


@transaction.atomic
def cap_save(*, actor: Actor, cap: PolicyCap, reason: str = "") -> PolicyCap:
    """Create or change a cap, with an operator's authority (agents go through
    `cap_upsert_for_agent`). A new limit applies to the current window at once; lowering it
    below what is already used blocks further admissions instead of breaking the ledger."""
    adding = cap._state.adding
    if adding:
        _lock_subject("caps", subject_type=cap.subject_type, project=cap.project_id, agent=cap.agent_id)
        if cap.subject_is_full():
            raise Conflict(cap.too_many_message(), code="too_many_caps", limit=settings.MAX_CAPS_PER_SUBJECT)
        if cap.created_by_key_id is None:
            cap.created_by_user_id = actor.user_id
    # NO KEY UPDATE: a ledger writer inserting this cap's next window takes KEY SHARE on the cap
    # (the foreign key, checked at commit, after it locked other windows); FOR UPDATE would wait
    # for that writer while the writer waits for the windows locked below.
    before = None if adding else snapshot(PolicyCap.objects.select_for_update(no_key=True).get(pk=cap.pk),
                                          CAP_FIELDS)
    cap.full_clean()
    cap.save()
    if not adding:
        with connection.cursor() as cursor:
            cursor.execute(_CAP_WINDOWS, [cap.pk])
            cursor.execute("UPDATE policy_usageledger SET limit_snapshot = GREATEST(%s, used + reserved) "
                           "WHERE cap_id = %s", [cap.limit, cap.pk])
    audit_record(actor=actor, action="cap.create" if adding else "cap.update", target=cap,
                 before=before, after=snapshot(cap, CAP_FIELDS), reason=reason)
    broadcast("policy")
    return cap


@transaction.atomic
def cap_delete(*, actor: Actor, cap: PolicyCap, reason: str = "") -> None:
    before = snapshot(cap, CAP_FIELDS)
    audit_record(actor=actor, action="cap.delete", target=cap, before=before, reason=reason)
    with connection.cursor() as cursor:  # its ledger rows go with it: lock them in the one order first
        cursor.execute(_CAP_WINDOWS, [cap.pk])
    cap.delete()
    broadcast("policy")


# --- the two-person rule (REQUIRE_SECOND_APPROVAL_ABOVE_USD) -------------------------------------
#
# An operator's cost cap above the threshold, created or loosened, waits for a second staff member.
# A cap that is disabled or in dry-run limits nothing, so turning one off counts as lifting it.


def _effective_usd(values: dict) -> Decimal | None:
    """What a cap's values let through in USD (None: no USD limit at all)."""
    enforced = values["enabled"] and values["mode"] == PolicyCap.Mode.ENFORCE
    if values["metric"] != PolicyCap.Metric.COST_USD or not enforced:
        return None
    return Decimal(values["limit"])


def cap_needs_second_approval(*, cap: PolicyCap, before: dict | None) -> bool:
    """Whether saving `cap` (from `before`, None for a new cap) needs a second staff member."""
    threshold = settings.REQUIRE_SECOND_APPROVAL_ABOVE_USD
    if threshold is None or cap.metric != PolicyCap.Metric.COST_USD:
        return False
    if before is None:
        return cap.limit > threshold
    new = _effective_usd(snapshot(cap, CAP_FIELDS))
    old = _effective_usd(before)
    if old is None:
        return False  # it limited no USD before: nothing is loosened
    return new is None or (new > old and new > threshold)


@transaction.atomic
def cap_propose(*, actor: Actor, cap: PolicyCap, reason: str = "") -> PolicyCap | PendingCapChange:
    """An operator's cap change: saved at once, or, when the two-person rule covers it, filed as a
    PendingCapChange (and audited) without touching the cap. The caller must not save `cap`."""
    before = None if cap._state.adding else snapshot(PolicyCap.objects.get(pk=cap.pk), CAP_FIELDS)
    if actor.user_id is None or not cap_needs_second_approval(cap=cap, before=before):
        return cap_save(actor=actor, cap=cap, reason=reason)
    cap.full_clean()  # refuse a bad value now, not when the second person approves it
    change = PendingCapChange.objects.create(cap=None if before is None else cap, creates=before is None,
                                             proposed=snapshot(cap, CAP_FIELDS), reason=reason,
                                             requested_by_id=actor.user_id)
    audit_record(actor=actor, action="cap_change.request", target=change, before=before, after=change.proposed,
                 reason=reason)
    return change


def _decide(*, actor: Actor, change_id: int, state: str, reason: str) -> PendingCapChange:
    change = PendingCapChange.objects.select_for_update().select_related("requested_by").filter(pk=change_id).first()
    if change is None:
        raise NotFound("No such cap change.", code="cap_change_not_found")
    if change.state != PendingCapChange.State.PENDING:
        raise Conflict(f"Cap change #{change.pk} is already {change.state}.", code="cap_change_not_pending")
    if actor.user_id is None:
        raise Forbidden("Only a staff member decides a cap change.", code="cap_change_needs_staff")
    if state == PendingCapChange.State.APPROVED and actor.user_id == change.requested_by_id:
        raise Forbidden("A second staff member must approve this change, not the one who asked for it.",
                        code="second_approver_required")
    change.state, change.decided_by_id, change.decided_at = state, actor.user_id, timezone.now()
    change.decision_reason = reason
    return change


@transaction.atomic
def pending_cap_change_approve(*, actor: Actor, change_id: int, reason: str = "") -> PolicyCap:
    """Apply a pending cap change, as approved by `actor` (never its requester). The cap's own audit
    row names the approver and the requester; a second row records the decision."""
    change = _decide(actor=actor, change_id=change_id, state=PendingCapChange.State.APPROVED, reason=reason)
    if change.creates:
        cap = PolicyCap()
    elif change.cap_id is None:
        raise Conflict("The cap was deleted after this change was asked for.", code="cap_not_found")
    else:
        cap = PolicyCap.objects.get(pk=change.cap_id)
    for name, value in change.proposed.items():
        field = PolicyCap._meta.get_field(name)
        if not isinstance(field, models.Field):  # proposals name the cap's own columns only
            raise TypeError(f"{name} is not a concrete field of PolicyCap")
        setattr(cap, field.attname, value)
    requester = change.requested_by.get_username()
    cap_save(actor=actor, cap=cap, reason=f"change #{change.pk} asked for by {requester}: {change.reason}")
    change.cap = cap
    change.save(update_fields=["cap", "state", "decided_by", "decided_at", "decision_reason"])
    audit_record(actor=actor, action="cap_change.approve", target=change, before={"state": "pending"},
                 after={"state": change.state, "cap": cap.pk}, reason=reason)
    return cap


@transaction.atomic
def pending_cap_change_reject(*, actor: Actor, change_id: int, reason: str = "") -> PendingCapChange:
    """Drop a pending cap change (its requester may withdraw it too); the cap stays as it is."""
    change = _decide(actor=actor, change_id=change_id, state=PendingCapChange.State.REJECTED, reason=reason)
    change.save(update_fields=["state", "decided_by", "decided_at", "decision_reason"])
    audit_record(actor=actor, action="cap_change.reject", target=change, before={"state": "pending"},
                 after={"state": change.state}, reason=reason)
    return change


# --- what an agent's own key may change -----------------------------------------------------------
#
# An agent key with `policy:write` may make things stricter anywhere it can see (its own agent
# level and its project's) and may loosen or delete only caps its agent created. Loosening
# anything else is for operators. These rules live here, not in a transport, so that every door
# (REST today, gRPC next) applies the same ones.


def _acting_agent(principal: Principal) -> Agent:
    """The principal's agent, locked against a concurrent move or status change."""
    if principal.agent_id is None:
        raise Forbidden("Only agent keys change policy through the API.", code="not_an_agent")
    agent = Agent.objects.select_for_update(no_key=True, of=("self",)).select_related("project").filter(
        pk=principal.agent_id).first()
    if agent is None:
        raise NotFound("Agent not found.")
    if agent.status == Agent.Status.QUARANTINED:
        raise Forbidden("A quarantined agent may read and report telemetry, nothing else.", code="agent_quarantined")
    return agent


def _agent_subject(agent: Agent, subject: str | None) -> dict:
    if subject == SubjectType.AGENT:
        return {"subject_type": SubjectType.AGENT, "agent": agent}
    if subject == SubjectType.PROJECT:
        return {"subject_type": SubjectType.PROJECT, "project": agent.project}
    if subject == SubjectType.GLOBAL:
        raise Forbidden("Global policy and caps are changed by operators only.", code="global_policy_is_operator_only")
    raise InvalidInput("subject must be agent or project.", code="invalid_subject")


def _looser_maximum(old, new) -> bool:  # None: no maximum
    return old is not None and (new is None or new > old)


_UNPRICED_STRICTNESS = {False: 0, None: 1, True: 2}  # an explicit no vetoes; unset inherits; yes allows

# For each field an agent may send: does going from `old` to `new` loosen it?
_POLICY_LOOSENS = {
    "kill_switch": lambda old, new: old and not new,
    "dry_run": lambda old, new: new and not old,
    "allowed_models": lambda old, new: bool(old) and not (new and set(new) <= set(old)),  # empty: any model
    "allow_unpriced_models": lambda old, new: _UNPRICED_STRICTNESS[new] > _UNPRICED_STRICTNESS[old],
    "max_tokens_per_attempt": _looser_maximum,
    "max_cost_per_attempt": _looser_maximum,
    "max_concurrent_runs": _looser_maximum,
}


@transaction.atomic
def policy_set_for_agent(*, principal: Principal, subject: str, reason: str = "", **changes: object) -> Policy:
    """Change the calling agent's own or its project's policy. Only tightening: any loosening
    (release a kill switch, dry-run, allow unpriced models, widen allowed models, raise or drop
    a maximum) is for operators, whoever set the current value."""
    agent = _acting_agent(principal)
    unknown = sorted(set(changes) - set(_POLICY_LOOSENS))
    if unknown:
        raise InvalidInput(f"Unknown policy fields: {', '.join(unknown)}.", code="unknown_field", fields=unknown)
    policy = policy_for_subject(**_agent_subject(agent, subject), lock=True)
    loosened = [name for name, new in changes.items() if _POLICY_LOOSENS[name](getattr(policy, name), new)]
    if "kill_switch" in loosened:
        raise Forbidden("Only an operator can release a kill switch.", code="kill_switch_release_requires_operator")
    if loosened:
        raise Forbidden(f"Only an operator can loosen {', '.join(loosened)}.",
                        code="policy_loosening_requires_operator", fields=loosened)
    return _policy_apply(actor=Actor.for_principal(principal), policy=policy, reason=reason, changes=changes)


CAP_SETTINGS = ("metric", "window", "limit", "model", "mode", "enabled")


def cap_loosened_fields(cap: PolicyCap, changes: dict) -> list[str]:
    """What a change would loosen. A lower limit, enabling and enforcing are stricter; any other
    change (a higher limit, disabling, dry-run, another metric, window or model) may let more
    through — another window even starts a fresh ledger row — so it counts as loosening."""
    stricter = {
        "limit": lambda new: new <= cap.limit,
        "enabled": lambda new: new,
        "mode": lambda new: new == PolicyCap.Mode.ENFORCE,
    }
    return [name for name, new in changes.items()
            if new != getattr(cap, name) and not stricter.get(name, lambda _: False)(new)]


def _visible_cap(agent: Agent, cap_id: int) -> PolicyCap:
    """A cap the agent can see (its own, its project's, global), locked; global ones are operator-only."""
    cap = caps_for_agent(agent).select_for_update(of=("self",)).select_related("created_by_key").filter(
        pk=cap_id).first()
    if cap is None:
        raise NotFound("No such cap.", code="cap_not_found")  # the same answer for other projects' caps
    if cap.subject_type == SubjectType.GLOBAL:
        raise Forbidden("Global caps are changed by operators only.", code="global_policy_is_operator_only")
    return cap


def _created_by(agent: Agent, cap: PolicyCap) -> bool:
    """Ownership is the agent's, through any of its keys (a rotated key's successor keeps it)."""
    return cap.created_by_key is not None and cap.created_by_key.agent_id == agent.pk


@transaction.atomic
def cap_upsert_for_agent(*, principal: Principal, cap_id: int | None = None, subject: str | None = None,
                         **fields: object) -> PolicyCap:
    """Add a cap on the calling agent or its project (`cap_id` None), or change one it can see.
    Anyone's cap may be made stricter; only the agent that created a cap may loosen it."""
    agent = _acting_agent(principal)
    unknown = sorted(set(fields) - set(CAP_SETTINGS))
    if unknown:
        raise InvalidInput(f"Unknown cap fields: {', '.join(unknown)}.", code="unknown_field", fields=unknown)
    if cap_id is None:
        cap = PolicyCap(**_agent_subject(agent, subject), created_by_key_id=principal.key_pk, **fields)
    else:
        if subject is not None:
            raise InvalidInput("A cap's subject cannot change; add a new cap instead.", code="invalid_subject")
        cap = _visible_cap(agent, cap_id)
        loosened = [] if _created_by(agent, cap) else cap_loosened_fields(cap, fields)
        if loosened:
            raise Forbidden(f"Only an operator or the agent that created this cap can change {', '.join(loosened)}.",
                            code="cap_loosening_requires_owner", fields=loosened)
        for name, value in fields.items():
            setattr(cap, name, value)
    return cap_save(actor=Actor.for_principal(principal), cap=cap)


@transaction.atomic
def cap_delete_for_agent(*, principal: Principal, cap_id: int) -> None:
    """Delete a cap the calling agent created; anyone else's is for operators."""
    agent = _acting_agent(principal)
    cap = _visible_cap(agent, cap_id)
    if not _created_by(agent, cap):
        raise Forbidden("Only an operator or the agent that created this cap can delete it.",
                        code="cap_delete_requires_owner")
    cap_delete(actor=Actor.for_principal(principal), cap=cap)


@transaction.atomic
def model_price_save(*, actor: Actor, price: ModelPrice) -> ModelPrice:
    adding = price._state.adding
    before = None if adding else snapshot(ModelPrice.objects.get(pk=price.pk), PRICE_FIELDS)
    price.full_clean()
    price.save()
    audit_record(actor=actor, action="model_price.create" if adding else "model_price.update", target=price,
                 before=before, after=snapshot(price, PRICE_FIELDS))
    broadcast("prices")
    return price
