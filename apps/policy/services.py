"""Admission, reservations and the writes that change policy.

Admission never overshoots an enforce-mode cap: each cap is reserved with one conditional
`UPDATE ... WHERE used + reserved + x <= limit_snapshot RETURNING`, all caps in one
transaction. The ledger's CHECK constraint is the backstop.

The ledger never deadlocks: every transaction that writes it locks reservations by id, then
ledger rows by (cap id, window start), whatever order its items came in (see "The one lock
order" below). Should a deadlock still happen elsewhere, the API's transaction runs again
(modeloman.transactions) and at worst answers 503, never 500.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from apps.audit.services import Actor, audit_record, snapshot
from apps.keys.models import Agent
from apps.policy.models import (
    LEDGER_MAX,
    AdmissionDecision,
    ModelPrice,
    PendingCapChange,
    Policy,
    PolicyCap,
    Reservation,
    SubjectType,
    UsageLedger,
)
from apps.policy.selectors import CapRule, EffectivePolicy, caps_for_agent, effective_policy, price_for
from apps.policy.windows import window_start
from modeloman.invalidation import broadcast
from modeloman.problems import Conflict, Forbidden, InvalidInput, NotFound
from modeloman.transactions import atomic_with_retry

POLICY_FIELDS = ("subject_type", "project", "agent", "kill_switch", "kill_switch_reason", "dry_run",
                 "allowed_models", "allow_unpriced_models", "max_tokens_per_attempt", "max_cost_per_attempt",
                 "max_concurrent_runs")
CAP_FIELDS = ("subject_type", "project", "agent", "metric", "window", "limit", "model", "mode", "enabled")
PRICE_FIELDS = ("model", "input_usd_per_mtok", "output_usd_per_mtok", "effective_from")


# --- admission ------------------------------------------------------------------------------


@dataclass
class CapStatus:
    cap_id: int
    metric: str
    window: str
    window_start: dt.datetime
    mode: str
    limit: Decimal
    used: Decimal
    reserved: Decimal

    @property
    def remaining(self) -> Decimal:
        return max(Decimal(0), self.limit - self.used - self.reserved)


@dataclass
class Admission:
    allowed: bool
    reasons: list[str] = field(default_factory=list)
    dry_run_would_deny: list[str] = field(default_factory=list)
    reservation_id: uuid.UUID | None = None
    estimated_cost_usd: Decimal | None = None
    caps: list[CapStatus] = field(default_factory=list)


class _CapDenied(Exception):
    def __init__(self, cap_id: int) -> None:
        self.cap_id = cap_id


_CREATE_WINDOW = """
    INSERT INTO policy_usageledger (cap_id, window_start, used, reserved, overrun, limit_snapshot)
    SELECT id, %s, 0, 0, 0, "limit" FROM policy_policycap WHERE id = %s
    ON CONFLICT (cap_id, window_start) DO NOTHING
"""
_READ = "SELECT id, used, reserved, limit_snapshot FROM policy_usageledger WHERE cap_id = %s AND window_start = %s"
# Apply actual usage against a hold. Right-hand sides see the old row, so the headroom used for
# any excess is (limit - used - reserved) before this update: used + reserved can never pass the limit.
# Excess that does not fit is kept in `overrun` (it was never admitted). `used` and `reserved` are
# bounded by the limit; `overrun` is not, so it saturates at the column's maximum instead of
# overflowing (which would fail every later write to the row, for every agent under the cap).
_CHARGE = """
    UPDATE policy_usageledger SET
        reserved = reserved - %(held)s,
        used = used + LEAST(%(actual)s, %(held)s)
               + LEAST(GREATEST(%(actual)s - %(held)s, 0), limit_snapshot - used - reserved),
        overrun = LEAST(%(max)s, overrun + GREATEST(%(actual)s - %(held)s, 0)
               - LEAST(GREATEST(%(actual)s - %(held)s, 0), limit_snapshot - used - reserved))
    WHERE id = %(ledger)s
"""
_CHARGE_WINDOW = _CHARGE.replace("WHERE id = %(ledger)s", "WHERE cap_id = %(cap)s AND window_start = %(start)s")


def _amount(metric: str, *, cost: Decimal, tokens: int, requests: int = 1) -> Decimal:
    if metric == PolicyCap.Metric.COST_USD:
        return cost
    if metric == PolicyCap.Metric.TOKENS:
        return Decimal(tokens)
    return Decimal(requests)


def _rule_checks(policy: EffectivePolicy, *, model: str, tokens: int, cost: Decimal | None,
                 priced: bool, caps: list[CapRule]) -> tuple[list[str], list[str]]:
    """Everything before the caps, in SPEC order: agent status, kill switch, models, maxima, prices."""
    reasons: list[str] = []
    would: list[str] = []
    if policy.agent_status == Agent.Status.DISABLED:
        reasons.append("agent_disabled")
    elif policy.agent_status == Agent.Status.QUARANTINED:
        reasons.append("agent_quarantined")
    if policy.kill_switch_levels:  # a kill switch is never softened by dry-run
        reasons.append("kill_switch")
    for level in policy.levels:
        target = would if level.dry_run else reasons
        if level.allowed_models and model not in level.allowed_models:
            target.append("model_not_allowed")
        if level.max_tokens_per_attempt is not None and tokens > level.max_tokens_per_attempt:
            target.append("max_tokens_per_attempt")
        if level.max_cost_per_attempt is not None and cost is not None and cost > level.max_cost_per_attempt:
            target.append("max_cost_per_attempt")
    cost_caps = [c for c in caps if c.metric == PolicyCap.Metric.COST_USD]
    if not priced and cost_caps:  # never silently $0: the agent's own estimate, or no admission
        target = reasons if any(c.enforce for c in cost_caps) else would
        if not policy.allow_unpriced_models:
            target.append("unpriced_model")
        elif cost is None:
            target.append("cost_estimate_required")
    return list(dict.fromkeys(reasons)), list(dict.fromkeys(would))


def admit(*, principal, model: str, estimated_input_tokens: int, estimated_output_tokens: int,
          estimated_cost_usd: Decimal | None = None, now: dt.datetime | None = None) -> Admission:
    """Decide whether an agent may spend, and reserve the budget if so."""
    if principal.agent_id is None:
        raise Forbidden("Only agent keys ask for admission.", code="not_an_agent")
    now = now or timezone.now()
    policy = effective_policy(principal.agent_id)
    if policy is None:
        raise NotFound("Agent not found.")
    tokens = estimated_input_tokens + estimated_output_tokens
    price = price_for(model, now)
    cost = price.cost(estimated_input_tokens, estimated_output_tokens) if price else estimated_cost_usd
    caps = [c for c in policy.caps if c.applies_to(model)]
    reasons, would = _rule_checks(policy, model=model, tokens=tokens, cost=cost, priced=price is not None, caps=caps)
    result = Admission(allowed=not reasons, reasons=reasons, dry_run_would_deny=would, estimated_cost_usd=cost)
    if reasons:
        _record_decision(policy, model, result, tokens)
        return result

    windows = [(c, window_start(c.window, now)) for c in caps]
    amounts = [_amount(c.metric, cost=cost or Decimal(0), tokens=tokens) for c in caps]
    reservation_id = uuid.uuid4()
    try:
        rows = _reserve(windows, amounts, reservation_id=reservation_id, agent_id=policy.agent_id, model=model,
                        tokens=tokens, cost=cost, now=now)
    except _CapDenied as denied:
        result = Admission(allowed=False, reasons=[f"cap_exceeded:{denied.cap_id}"], dry_run_would_deny=would,
                           estimated_cost_usd=cost, caps=_read_statuses(windows))
    else:
        for (cap, start), (_, used, reserved, limit, held) in zip(windows, rows, strict=True):
            if not held:
                result.dry_run_would_deny.append(f"cap_exceeded:{cap.id}")
            result.caps.append(_status(cap, start, (None, used, reserved, limit)))
        if any(row[4] for row in rows):
            result.reservation_id = reservation_id
    if not result.allowed or result.dry_run_would_deny:
        _record_decision(policy, model, result, tokens)
    return result


def _reserve(windows: list[tuple[CapRule, dt.datetime]], amounts: list[Decimal], *, reservation_id: uuid.UUID,
             agent_id: int, model: str, tokens: int, cost: Decimal | None, now: dt.datetime) -> list[tuple]:
    """Reserve every cap (and record the reservation) in one call to `policy_reserve`."""
    if not windows:
        return []
    params = [[c.id for c, _ in windows], [s for _, s in windows], amounts, [c.enforce for c, _ in windows],
              [c.metric for c, _ in windows], reservation_id, agent_id, model, tokens, cost, now,
              now + dt.timedelta(seconds=settings.RESERVATION_TTL_SECONDS)]
    sql = "SELECT * FROM policy_reserve(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    try:
        # Outside a transaction the call is its own (one round trip); inside one, a savepoint
        # keeps a denial from aborting the caller's transaction.
        with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    except DatabaseError as error:
        cause = error.__cause__
        if getattr(cause, "sqlstate", None) == "MM001":
            raise _CapDenied(int(cause.diag.message_detail)) from None
        raise


def _status(cap: CapRule, start: dt.datetime, row) -> CapStatus:
    _, used, reserved, limit = row
    return CapStatus(cap_id=cap.id, metric=cap.metric, window=cap.window, window_start=start,
                     mode="enforce" if cap.enforce else "dry_run", limit=limit, used=used, reserved=reserved)


def _read_statuses(windows: list[tuple[CapRule, dt.datetime]]) -> list[CapStatus]:
    statuses = []
    with connection.cursor() as cursor:
        for cap, start in windows:
            cursor.execute(_READ, [cap.id, start])
            row = cursor.fetchone()
            if row is not None:
                statuses.append(_status(cap, start, row))
    return statuses


def _record_decision(policy: EffectivePolicy, model: str, result: Admission, tokens: int) -> None:
    AdmissionDecision.objects.create(
        agent_id=policy.agent_id, model=model, allowed=result.allowed, reasons=result.reasons,
        dry_run_would_deny=result.dry_run_would_deny, estimated_tokens=tokens,
        estimated_cost_usd=result.estimated_cost_usd,
    )


# --- settling, releasing, expiring ----------------------------------------------------------------
#
# The one lock order. A transaction that writes the ledger locks what it touches in this order
# and no other: first reservations, by id; then ledger rows, by (cap id, window start), where
# creating a window's row counts as locking it. Admission follows it inside `policy_reserve`
# (one window per cap, caps in id order; the reservation it inserts is new, so nobody waits
# for it). Settlement, release, expiry and usage without a reservation collect every ledger
# write of the whole transaction — across all the reservations and items of a batch — and
# sort them before the first one. Changing or deleting a cap locks its rows by window start.


class Settlement(NamedTuple):
    """An attempt that reports what happened under a reservation."""

    reservation_id: uuid.UUID
    model: str
    tokens: int
    cost_usd: Decimal


class Usage(NamedTuple):
    """Usage that came without a reservation: `requests` attempts of `model` at `at`."""

    model: str
    at: dt.datetime
    requests: int
    tokens: int
    cost_usd: Decimal


class ReservationRefused(InvalidInput):
    """A settlement the ledger refuses. `position` is its index in the settlements given."""

    def __init__(self, position: int, detail: str, *, code: str, field: str = "reservation_id") -> None:
        super().__init__(detail, code=code)
        self.position = position
        self.field = field


class _Charge(NamedTuple):
    """One write to one ledger row: release `held` from `reserved` and charge `actual`."""

    cap_id: int
    window_start: dt.datetime
    ledger_id: int | None  # None: usage without a reservation, whose window row may not exist yet
    held: Decimal
    actual: Decimal


def _apply(charges: Iterable[_Charge]) -> None:
    """Write every charge, in the one lock order."""
    with connection.cursor() as cursor:
        for charge in sorted(charges, key=lambda c: (c.cap_id, c.window_start)):
            values = {"held": charge.held, "actual": charge.actual, "max": LEDGER_MAX}
            if charge.ledger_id is None:
                cursor.execute(_CREATE_WINDOW, [charge.window_start, charge.cap_id])
                cursor.execute(_CHARGE_WINDOW, {**values, "cap": charge.cap_id, "start": charge.window_start})
            else:
                cursor.execute(_CHARGE, {**values, "ledger": charge.ledger_id})


def _hold_charges(holds: Iterable[tuple[dict, Decimal | None]]) -> list[_Charge]:
    """Charges for reservation holds, each with what actually happened (None: nothing, a release).
    A hold's window is read from its row; a row gone with its deleted cap is skipped."""
    holds = list(holds)
    windows = {pk: (cap_id, start) for pk, cap_id, start in UsageLedger.objects.filter(
        pk__in={hold["ledger"] for hold, _ in holds}).values_list("pk", "cap_id", "window_start")}
    return [_Charge(*windows[hold["ledger"]], hold["ledger"], Decimal(hold["amount"]), actual or Decimal(0))
            for hold, actual in holds if hold["ledger"] in windows]


def _usage_charges(agent_id: int, usages: Iterable[Usage]) -> list[_Charge]:
    """Usage without a reservation, summed per cap window: one write per window it touches."""
    policy = effective_policy(agent_id)
    if policy is None or not policy.caps:
        return []
    sums: dict[tuple[int, dt.datetime], Decimal] = defaultdict(Decimal)
    for usage in usages:
        for cap in policy.caps:
            if cap.applies_to(usage.model):
                amount = _amount(cap.metric, cost=usage.cost_usd, tokens=usage.tokens, requests=usage.requests)
                sums[(cap.id, window_start(cap.window, usage.at))] += amount
    return [_Charge(cap_id, start, None, Decimal(0), actual) for (cap_id, start), actual in sums.items()]


_SETTLE = """
    UPDATE policy_reservation r
    SET state = 'settled', finished_at = %s, actual_tokens = v.tokens, actual_cost_usd = v.cost
    FROM unnest(%s::uuid[], %s::bigint[], %s::numeric[]) AS v(id, tokens, cost)
    WHERE r.id = v.id
"""


def _lock_reservations(agent_id: int, settlements: Sequence[Settlement]) -> list[Reservation]:
    """Lock the settlements' reservations (by id: the one lock order) and check each, in the
    order given: the agent's own, still held, used once, and for the same model."""
    locked = {r.id: r for r in Reservation.objects.select_for_update().filter(
        id__in={s.reservation_id for s in settlements}, agent_id=agent_id).order_by("id")}
    seen: set[uuid.UUID] = set()
    reservations = []
    for position, settlement in enumerate(settlements):
        reservation = locked.get(settlement.reservation_id)
        if reservation is None:
            raise ReservationRefused(position, "No such reservation.", code="reservation_not_found")
        if reservation.state != Reservation.State.HELD or reservation.id in seen:
            state = "settled" if reservation.id in seen else reservation.state
            raise ReservationRefused(position, f"The reservation is already {state}.", code="reservation_not_held")
        if settlement.model != reservation.model:
            raise ReservationRefused(
                position, f"The reservation was admitted for model {reservation.model!r}, not {settlement.model!r}.",
                code="reservation_model_mismatch", field="model")
        seen.add(reservation.id)
        reservations.append(reservation)
    return reservations


@transaction.atomic
def usage_record(*, agent_id: int, settlements: Sequence[Settlement] = (), usages: Iterable[Usage] = (),
                 now: dt.datetime | None = None) -> None:
    """Record a batch's usage: settle its reservations (actual usage moves to `used`, the rest of
    each hold is released) and count the usage that came without one against every applicable
    cap. All or nothing; a refused settlement raises ReservationRefused before any write."""
    now = now or timezone.now()
    reservations = _lock_reservations(agent_id, settlements) if settlements else []
    if reservations:
        with connection.cursor() as cursor:
            cursor.execute(_SETTLE, [now, [s.reservation_id for s in settlements], [s.tokens for s in settlements],
                                     [s.cost_usd for s in settlements]])
    holds = [(hold, _amount(hold["metric"], cost=settlement.cost_usd, tokens=settlement.tokens))
             for reservation, settlement in zip(reservations, settlements, strict=True)
             for hold in reservation.holds]
    _apply([*_hold_charges(holds), *_usage_charges(agent_id, usages)])


def reservation_settle(*, reservation_id: uuid.UUID, agent_id: int, model: str, actual_tokens: int,
                       actual_cost_usd: Decimal, now: dt.datetime | None = None) -> None:
    """Settle one reservation with what the attempt of `model` actually used."""
    usage_record(agent_id=agent_id, settlements=[Settlement(reservation_id, model, actual_tokens, actual_cost_usd)],
                 now=now)


@transaction.atomic
def reservation_release(*, reservation_id: uuid.UUID, agent_id: int, now: dt.datetime | None = None) -> Reservation:
    """Give back everything a reservation held (the attempt failed or never happened)."""
    updated = Reservation.objects.filter(id=reservation_id, agent_id=agent_id, state=Reservation.State.HELD).update(
        state=Reservation.State.RELEASED, finished_at=now or timezone.now())
    reservation = Reservation.objects.filter(id=reservation_id, agent_id=agent_id).first()
    if reservation is None:
        raise NotFound("No such reservation.", code="reservation_not_found")
    if not updated:
        raise Conflict(f"The reservation is already {reservation.state}.", code="reservation_not_held")
    _apply(_hold_charges((hold, None) for hold in reservation.holds))
    return reservation


def reservations_expire(*, now: dt.datetime | None = None, batch_size: int = 500) -> int:
    """Release held reservations past their expiry. Safe to run from several processes."""
    now = now or timezone.now()

    def release_batch() -> int:
        batch = list(Reservation.objects.select_for_update(skip_locked=True)
                     .filter(state=Reservation.State.HELD, expires_at__lte=now)
                     .order_by("expires_at")[:batch_size])
        Reservation.objects.filter(id__in=[r.id for r in batch]).update(
            state=Reservation.State.RELEASED, finished_at=now)
        _apply(_hold_charges((hold, None) for r in batch for hold in r.holds))
        return len(batch)

    released = 0
    while count := atomic_with_retry(release_batch):
        released += count
    return released


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
        setattr(cap, PolicyCap._meta.get_field(name).attname, value)
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


def _acting_agent(principal) -> Agent:
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
def policy_set_for_agent(*, principal, subject: str, reason: str = "", **changes: object) -> Policy:
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
def cap_upsert_for_agent(*, principal, cap_id: int | None = None, subject: str | None = None,
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
def cap_delete_for_agent(*, principal, cap_id: int) -> None:
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
