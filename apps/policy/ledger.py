"""Admission and the usage ledger: reserve budget before spending, settle or release it after.

Admission never overshoots an enforce-mode cap: each cap is reserved with one conditional
`UPDATE ... WHERE used + reserved + x <= limit_snapshot RETURNING`, all caps in one
transaction. The ledger's CHECK constraint is the backstop.

The ledger never deadlocks: every transaction that writes it locks reservations by id, then
ledger rows by (cap id, window start), whatever order its items came in (see "The one lock
order" below). Should a deadlock still happen elsewhere, the API's transaction runs again
(modeloman.transactions) and at worst answers 503, never 500.

The writes that change policy, caps and prices are in apps.policy.services.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from apps.gateway import metrics
from apps.gateway.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from apps.gateway.idempotency import Claim, Outcome, storable_json, stored_body
from apps.keys.models import Agent
from apps.policy.models import (
    LEDGER_MAX,
    AdmissionDecision,
    PolicyCap,
    Reservation,
    UsageLedger,
)
from apps.policy.selectors import CapRule, EffectivePolicy, effective_policy, price_for
from apps.policy.windows import window_start
from apps.telemetry.models import Run
from modeloman.db.base import prepared_cursor
from modeloman.transactions import atomic_with_retry, statement_with_retry, write_transaction

if TYPE_CHECKING:
    from apps.gateway.auth import Principal

# --- admission ------------------------------------------------------------------------------


class Reason(StrEnum):
    """Why an admission is denied (or would be, in dry-run): the stable codes agents branch on.
    A cap's reason names the cap: `Reason.CAP_EXCEEDED.of(cap_id)` is "cap_exceeded:<id>"."""

    AGENT_DISABLED = "agent_disabled"
    AGENT_QUARANTINED = "agent_quarantined"
    KILL_SWITCH = "kill_switch"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    MAX_TOKENS_PER_ATTEMPT = "max_tokens_per_attempt"
    MAX_COST_PER_ATTEMPT = "max_cost_per_attempt"
    UNPRICED_MODEL = "unpriced_model"
    COST_ESTIMATE_REQUIRED = "cost_estimate_required"
    CAP_EXCEEDED = "cap_exceeded"

    def of(self, cap_id: int) -> str:
        return f"{self.value}:{cap_id}"


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
        reasons.append(Reason.AGENT_DISABLED)
    elif policy.agent_status == Agent.Status.QUARANTINED:
        reasons.append(Reason.AGENT_QUARANTINED)
    if policy.kill_switch_levels:  # a kill switch is never softened by dry-run
        reasons.append(Reason.KILL_SWITCH)
    for level in policy.levels:
        target = would if level.dry_run else reasons
        if level.allowed_models and model not in level.allowed_models:
            target.append(Reason.MODEL_NOT_ALLOWED)
        if level.max_tokens_per_attempt is not None and tokens > level.max_tokens_per_attempt:
            target.append(Reason.MAX_TOKENS_PER_ATTEMPT)
        if level.max_cost_per_attempt is not None and cost is not None and cost > level.max_cost_per_attempt:
            target.append(Reason.MAX_COST_PER_ATTEMPT)
    cost_caps = [c for c in caps if c.metric == PolicyCap.Metric.COST_USD]
    if not priced and cost_caps:  # never silently $0: the agent's own estimate, or no admission
        target = reasons if any(c.enforce for c in cost_caps) else would
        if not policy.allow_unpriced_models:
            target.append(Reason.UNPRICED_MODEL)
        elif cost is None:
            target.append(Reason.COST_ESTIMATE_REQUIRED)
    return list(dict.fromkeys(reasons)), list(dict.fromkeys(would))


class _Plan(NamedTuple):
    """An admission as far as the cached policy and prices decide it, before the ledger."""

    policy: EffectivePolicy
    model: str
    tokens: int
    cost: Decimal | None
    reasons: list[str]
    would: list[str]
    windows: list[tuple[CapRule, dt.datetime]]
    amounts: list[Decimal]


def _plan(*, principal: Principal, model: str, estimated_input_tokens: int, estimated_output_tokens: int,
          estimated_cost_usd: Decimal | None, now: dt.datetime) -> _Plan:
    if principal.agent_id is None:
        raise Forbidden("Only agent keys ask for admission.", code="not_an_agent")
    policy = effective_policy(principal.agent_id)
    if policy is None:
        raise NotFound("Agent not found.")
    tokens = estimated_input_tokens + estimated_output_tokens
    price = price_for(model, now)
    cost = price.cost(estimated_input_tokens, estimated_output_tokens) if price else estimated_cost_usd
    caps = [c for c in policy.caps if c.applies_to(model)]
    reasons, would = _rule_checks(policy, model=model, tokens=tokens, cost=cost, priced=price is not None, caps=caps)
    windows = [(c, window_start(c.window, now)) for c in caps]
    amounts = [_amount(c.metric, cost=cost or Decimal(0), tokens=tokens) for c in caps]
    return _Plan(policy, model, tokens, cost, reasons, would, windows, amounts)


def admit(*, principal: Principal, model: str, estimated_input_tokens: int, estimated_output_tokens: int,
          estimated_cost_usd: Decimal | None = None, run_id: uuid.UUID | None = None,
          now: dt.datetime | None = None) -> Admission:
    """Decide whether an agent may spend, and reserve the budget if so (for the agent's run
    `run_id`, when it names one: 404 `run_not_found` before any rule if it is not its own)."""
    now = now or timezone.now()
    plan = _plan(principal=principal, model=model, estimated_input_tokens=estimated_input_tokens,
                 estimated_output_tokens=estimated_output_tokens, estimated_cost_usd=estimated_cost_usd, now=now)
    if run_id is not None and not Run.objects.filter(pk=run_id, agent_id=plan.policy.agent_id).exists():
        raise NotFound("No such run.", code="run_not_found")
    policy, tokens, cost, windows = plan.policy, plan.tokens, plan.cost, plan.windows
    result = Admission(allowed=not plan.reasons, reasons=plan.reasons, dry_run_would_deny=plan.would,
                       estimated_cost_usd=cost)
    if plan.reasons:
        _record_decision(policy, model, result, tokens, run_id)
        _count_decision(result)
        return result

    reservation_id = uuid.uuid4()
    try:
        rows = _reserve(plan, reservation_id, now=now)
    except _CapDenied as denied:
        result = Admission(allowed=False, reasons=[Reason.CAP_EXCEEDED.of(denied.cap_id)],
                           dry_run_would_deny=plan.would, estimated_cost_usd=cost, caps=_read_statuses(windows))
    else:
        for (cap, start), (_, used, reserved, limit, held) in zip(windows, rows, strict=True):
            if not held:
                result.dry_run_would_deny.append(Reason.CAP_EXCEEDED.of(cap.id))
            result.caps.append(_status(cap, start, (None, used, reserved, limit)))
        if any(row[4] for row in rows):
            result.reservation_id = reservation_id
            if run_id is not None:  # (`policy_reserve_or_deny` takes no run; the common case's statement does)
                Reservation.objects.filter(pk=reservation_id).update(run_id=run_id)
    if not result.allowed or result.dry_run_would_deny:
        _record_decision(policy, model, result, tokens, run_id)
    _count_decision(result)
    return result


_ADMIT_ONCE = (  # policy migrations 0009, 0011 and 0012; sent prepared (a cursor with server-side binding)
    "SELECT * FROM policy_admit_once(%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)")
# What policy_admit_once raises for what only `admit` answers: a cap that does not fit, a dry-run cap
# that would deny, a run that is not the agent's own.
_NEEDS_FULL_PATH = frozenset({"MM001", "MM002", "MM003"})


def admit_in_one_statement(claim: Claim, *, principal: Principal, model: str, estimated_input_tokens: int,
                           estimated_output_tokens: int, estimated_cost_usd: Decimal | None = None,
                           run_id: uuid.UUID | None = None, render: Callable[[Admission], Any]) -> Outcome | None:
    """`admit` under an idempotency claim (`idempotent(..., in_one_statement=...)`), in ONE statement:
    the claim, the reservation and the stored response (`render` of the admission, with each cap's
    figures filled in by the database) commit together in one round trip; the Outcome's `answer` is
    the admission with those figures (None when replayed). For the common case only:
    every rule passes and every cap fits. Otherwise None, before any write or with the statement
    undone, and the caller runs `admit` under the full path, which records the decision (or
    refuses a run that is not the agent's own)."""
    now = timezone.now()
    try:
        plan = _plan(principal=principal, model=model, estimated_input_tokens=estimated_input_tokens,
                     estimated_output_tokens=estimated_output_tokens, estimated_cost_usd=estimated_cost_usd, now=now)
    except DomainError:
        return None  # raised again by `admit`, after the claim, as every write's errors are
    if plan.reasons or plan.would:
        return None
    reservation_id = uuid.uuid4()
    to_fill = (None, Decimal(0), Decimal(0), Decimal(0))  # each cap's figures: the statement fills them in
    admission = Admission(allowed=True, reservation_id=reservation_id if plan.windows else None,
                          estimated_cost_usd=plan.cost,
                          caps=[_status(cap, start, to_fill) for cap, start in plan.windows])
    body = storable_json(render(admission))
    caps = json.dumps([[cap.id, start.isoformat(), str(amount), cap.enforce, cap.metric]
                       for (cap, start), amount in zip(plan.windows, plan.amounts, strict=True)])
    params = [*claim.params(now), caps, reservation_id, plan.policy.agent_id, run_id, model, plan.tokens, plan.cost,
              now + dt.timedelta(seconds=settings.RESERVATION_TTL_SECONDS), 200, body]

    def admit_claim_and_store() -> tuple:
        with prepared_cursor() as cursor:
            cursor.execute(_ADMIT_ONCE, params)
            return cursor.fetchone()

    try:
        row = statement_with_retry(admit_claim_and_store)
    except DatabaseError as error:
        if getattr(error.__cause__, "sqlstate", None) in _NEEDS_FULL_PATH:
            return None
        raise
    settled = claim.settle(row)
    if isinstance(settled, Outcome):
        return settled  # the key's earlier answer, replayed
    _, _, _, status, body = row
    body = stored_body(body)
    for cap, filled in zip(admission.caps, body.get("caps", []), strict=True):  # gRPC's dict leaves out an empty list
        cap.limit, cap.used, cap.reserved = (Decimal(filled[name]) for name in ("limit", "used", "reserved"))
    metrics.admission_decided(allowed=True, reasons=[], dry_run_would_deny=[])
    return Outcome(status, body, answer=admission)


def _count_decision(result: Admission) -> None:
    # On commit: an admission inside a transaction that rolls back was never decided.
    transaction.on_commit(lambda: metrics.admission_decided(
        allowed=result.allowed, reasons=result.reasons, dry_run_would_deny=result.dry_run_would_deny))


def _reserve(plan: _Plan, reservation_id: uuid.UUID, *, now: dt.datetime) -> list[tuple]:
    """Reserve every cap (and record the reservation) in one call to `policy_reserve_or_deny`."""
    if not plan.windows:
        return []
    windows = plan.windows
    params: list[Any] = [
        [c.id for c, _ in windows], [s for _, s in windows], plan.amounts, [c.enforce for c, _ in windows],
        [c.metric for c, _ in windows], reservation_id, plan.policy.agent_id, plan.model, plan.tokens, plan.cost,
        now, now + dt.timedelta(seconds=settings.RESERVATION_TTL_SECONDS)]
    sql = "SELECT * FROM policy_reserve_or_deny(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    # A denial comes back as a row, not an error (migration 0008), so the call needs no savepoint
    # inside the caller's transaction: one round trip either way.
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if rows and rows[0][5]:
        raise _CapDenied(rows[0][0])
    return [row[:5] for row in rows]


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


def _record_decision(policy: EffectivePolicy, model: str, result: Admission, tokens: int,
                     run_id: uuid.UUID | None) -> None:
    AdmissionDecision.objects.create(
        agent_id=policy.agent_id, run_id=run_id, model=model, allowed=result.allowed, reasons=result.reasons,
        dry_run_would_deny=result.dry_run_would_deny, estimated_tokens=tokens,
        estimated_cost_usd=result.estimated_cost_usd,
    )


# --- settling, releasing, expiring ----------------------------------------------------------------
#
# The one lock order. A transaction that writes the ledger locks what it touches in this order
# and no other: first reservations, by id; then ledger rows, by (cap id, window start), where
# creating a window's row counts as locking it. Admission follows it inside `policy_reserve`
# and `policy_admit_once` (one window per cap, caps in id order; the reservation it inserts is
# new, so nobody waits for it). Settlement, release, expiry and usage without a reservation
# collect every ledger write of the whole transaction — across all the reservations and items
# of a batch — and sort them before the first one. Changing or deleting a cap locks its rows by window start.


class Settlement(NamedTuple):
    """An attempt that reports what happened under a reservation."""

    reservation_id: uuid.UUID
    model: str
    tokens: int
    cost_usd: Decimal
    run_id: uuid.UUID | None = None  # the attempt's run, if it names one


class Usage(NamedTuple):
    """Usage that came without a reservation: `requests` attempts of `model` at `at`."""

    model: str
    at: dt.datetime
    requests: int
    tokens: int
    cost_usd: Decimal


class ReservationRefused(Conflict):
    """A settlement the ledger refuses. `position` is its index in the settlements given. A
    reservation that does not exist (for this agent) is a 404, one in another state a 409, and an
    attempt of another model or run than the one admitted is a 400 (the attempt is wrong, not the state)."""

    def __init__(self, position: int, detail: str, *, code: str, field: str = "reservation_id",
                 status: int = Conflict.status) -> None:
        super().__init__(detail, code=code)
        self.position = position
        self.field = field
        self.status = status


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
    order given: the agent's own, still held, used once, for the same model, and for the same run
    when both name one."""
    locked = {r.id: r for r in Reservation.objects.select_for_update().filter(
        id__in={s.reservation_id for s in settlements}, agent_id=agent_id).order_by("id")}
    seen: set[uuid.UUID] = set()
    reservations = []
    for position, settlement in enumerate(settlements):
        reservation = locked.get(settlement.reservation_id)
        if reservation is None:
            raise ReservationRefused(position, "No such reservation.", code="reservation_not_found",
                                    status=NotFound.status)
        if reservation.state != Reservation.State.HELD or reservation.id in seen:
            state = "settled" if reservation.id in seen else reservation.state
            raise ReservationRefused(position, f"The reservation is already {state}.", code="reservation_not_held")
        if settlement.model != reservation.model:
            raise ReservationRefused(
                position, f"The reservation was admitted for model {reservation.model!r}, not {settlement.model!r}.",
                code="reservation_model_mismatch", field="model", status=InvalidInput.status)
        if settlement.run_id and reservation.run_id and settlement.run_id != reservation.run_id:
            raise ReservationRefused(
                position, f"The reservation was admitted for run {reservation.run_id}, not {settlement.run_id}.",
                code="reservation_run_mismatch", field="run_id", status=InvalidInput.status)
        seen.add(reservation.id)
        reservations.append(reservation)
    return reservations


@write_transaction
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
        metrics.reservations_expired(count)
        released += count
    return released
