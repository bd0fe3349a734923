"""Runs and telemetry ingest.

Items arrive decoded and type-checked (apps.telemetry.validation). A batch is written in one
transaction, all or nothing: binary COPY where the connection supports it, streamed while the
remaining per-item rules are checked, so the server stores early rows while Python is still
reading later ones; multi-row INSERT otherwise. A bad item aborts the COPY and rolls back.
Attempts settle their reservations, count against caps, and roll up into their run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.gateway import metrics
from apps.gateway.errors import Conflict, Forbidden, NotFound
from apps.keys.models import Agent
from apps.policy import ledger
from apps.policy.selectors import effective_policy, price_at, price_history
from apps.telemetry.bulk import bulk_writer, uuid7_batch
from apps.telemetry.models import BIGINT_MAX, RUN_COST_MAX, Run
from apps.telemetry.validation import (
    AttemptIn,
    BenchmarkIn,
    ItemConflict,
    ItemInvalid,
    ItemNotFound,
    RunEventIn,
    TimeWindow,
    check_benchmark,
    checked_money,
    encoded_attributes,
)
from modeloman.transactions import write_transaction

if TYPE_CHECKING:
    from apps.gateway.auth import Principal

logger = logging.getLogger(__name__)

# (column, PostgreSQL type): the order of every row tuple written below.
ATTEMPT_COLUMNS = (("time", "timestamptz"), ("id", "uuid"), ("project_id", "int8"), ("agent_id", "int8"),
                   ("run_id", "uuid"), ("reservation_id", "uuid"), ("model", "text"), ("prompt_name", "text"),
                   ("prompt_version", "text"), ("success", "bool"), ("error_code", "text"),
                   ("input_tokens", "int8"), ("output_tokens", "int8"), ("latency_ms", "int4"),
                   ("cost_usd", "numeric"), ("reported_cost_usd", "numeric"), ("attributes", "jsonb"))
EVENT_COLUMNS = (("time", "timestamptz"), ("id", "uuid"), ("run_id", "uuid"), ("project_id", "int8"),
                 ("agent_id", "int8"), ("kind", "text"), ("message", "text"), ("attributes", "jsonb"))
BENCHMARK_COLUMNS = (("time", "timestamptz"), ("id", "uuid"), ("project_id", "int8"), ("agent_id", "int8"),
                     ("suite", "text"), ("model", "text"), ("prompt_name", "text"), ("prompt_version", "text"),
                     ("score", "float8"), ("passed", "int4"), ("total", "int4"), ("attributes", "jsonb"))
RUN_FINAL_STATES = {Run.Status.SUCCEEDED, Run.Status.FAILED, Run.Status.CANCELLED}


# --- runs -------------------------------------------------------------------------------------


def _agent_of(principal: Principal) -> int:
    if principal.agent_id is None:
        raise Forbidden("Only agent keys record runs and telemetry.", code="not_an_agent")
    return principal.agent_id


@write_transaction
def run_start(*, principal: Principal, task: str, metadata: dict) -> Run:
    """Start a run, unless a kill switch is on or the agent is at its concurrent-run limit."""
    agent_id = _agent_of(principal)
    rules = effective_policy(agent_id)
    if rules is None or rules.agent_status != Agent.Status.ACTIVE:
        raise Forbidden("This agent may not start runs.", code="agent_not_active")
    if rules.kill_switch_levels:
        raise Forbidden("A kill switch is engaged.", code="kill_switch")
    limit = rules.merged()["max_concurrent_runs"]
    if limit is not None:
        with connection.cursor() as cursor:  # serialize run starts per agent so the count is exact
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('modeloman.run_start'), %s)", [agent_id])
        running = Run.objects.filter(agent_id=agent_id, status=Run.Status.RUNNING).count()
        if running >= limit:
            raise Conflict(f"The agent already has {running} running runs (limit {limit}).",
                           code="max_concurrent_runs")
    return Run.objects.create(agent_id=agent_id, project_id=rules.project_id, task=task, metadata=metadata)


def run_get(*, principal: Principal, run_id: uuid.UUID) -> Run:
    """One run by primary key: the caller's own, or any with `admin:read`."""
    run = Run.objects.filter(pk=run_id).first()
    if run is None or (run.agent_id != principal.agent_id and "admin:read" not in principal.scopes):
        raise NotFound("No such run.", code="run_not_found")
    return run


_FINISH = """
    UPDATE telemetry_run SET status = %s, finished_at = %s,
        metadata = CASE WHEN %s::jsonb IS NULL THEN metadata ELSE metadata || %s::jsonb END
    WHERE id = %s AND agent_id = %s AND status = 'running'
    RETURNING id
"""


@write_transaction
def run_finish(*, principal: Principal, run_id: uuid.UUID, status: str, metadata: dict | None) -> Run:
    """Finish the caller's running run: one conditional UPDATE by primary key."""
    agent_id = _agent_of(principal)
    encoded = json.dumps(metadata) if metadata else None
    with connection.cursor() as cursor:
        cursor.execute(_FINISH, [status, timezone.now(), encoded, encoded, run_id, agent_id])
        finished = cursor.fetchone() is not None
    run = Run.objects.filter(pk=run_id, agent_id=agent_id).first()
    if run is None:
        raise NotFound("No such run.", code="run_not_found")
    if not finished:
        raise Conflict(f"The run is already {run.status}.", code="run_already_finished")
    return run


# --- ingest -----------------------------------------------------------------------------------


def _check_runs_owned(agent_id: int, first_use: dict[uuid.UUID, int | None]) -> None:
    """Every referenced run is the agent's own; else the first item naming another fails."""
    if not first_use:
        return
    owned = set(Run.objects.filter(pk__in=list(first_use), agent_id=agent_id).values_list("pk", flat=True))
    for run_id, index in first_use.items():
        if run_id not in owned:
            raise ItemNotFound(index, "run_id", "no such run for this agent", code="run_not_found")


# Run totals saturate at their columns' maximum: no sequence of valid batches overflows them.
_ADD_TO_RUN = """
    UPDATE telemetry_run SET
        attempts = LEAST(attempts::numeric + %(attempts)s, %(bigint_max)s)::bigint,
        input_tokens = LEAST(input_tokens::numeric + %(input)s, %(bigint_max)s)::bigint,
        output_tokens = LEAST(output_tokens::numeric + %(output)s, %(bigint_max)s)::bigint,
        cost_usd = LEAST(cost_usd + %(cost)s, %(cost_max)s)
    WHERE id = %(run)s
"""


@write_transaction
def attempts_record(*, principal: Principal, items: Sequence[AttemptIn], batch: bool) -> list[uuid.UUID]:
    """Record prompt attempts, all or nothing. Cost is computed here from ModelPrice; the
    agent's own figure is kept beside it, and is what an unpriced model is charged (under an
    enforced cost cap it must be there). Attempts with a reservation settle it; the rest
    count against the caps directly."""
    agent_id = _agent_of(principal)
    rules = effective_policy(agent_id)
    if rules is None:
        raise NotFound("Agent not found.")
    project_id = rules.project_id
    now = timezone.now()
    window = TimeWindow(now)
    models = {attempt.model for attempt in items}
    prices = {model: price_history(model) for model in models}  # before COPY starts
    cost_capped = {model: rules.cost_capped(model) for model in models}
    ids = uuid7_batch(len(items))

    settlements: list[ledger.Settlement] = []
    settlement_items: list[int | None] = []  # the item index of each settlement, for errors
    # Usage without a reservation, per model and minute (the finest cap window); none without caps.
    count_usage = bool(rules.caps)
    unreserved: dict[tuple[str, int], list] = defaultdict(lambda: [0, 0, Decimal(0)])
    per_run: dict[uuid.UUID, list] = defaultdict(lambda: [0, 0, 0, Decimal(0)])
    run_first_use: dict[uuid.UUID, int | None] = {}
    with bulk_writer("prompt_attempts", ATTEMPT_COLUMNS) as write:
        for position, attempt in enumerate(items):
            index = position if batch else None
            moment = window.check(attempt.time, index)
            reported = checked_money(attempt.reported_cost_usd, index, "reported_cost_usd")
            attributes = encoded_attributes(attempt.attributes, index)
            price = price_at(prices[attempt.model], moment)
            cost = price.cost(attempt.input_tokens, attempt.output_tokens) if price else None
            if cost is None and reported is None and cost_capped[attempt.model]:
                raise ItemInvalid(index, "reported_cost_usd", "the model has no price, so a cost cap needs the "
                                  "attempt's own cost", code="cost_required_for_unpriced_model")
            tokens = attempt.input_tokens + attempt.output_tokens
            charged = cost if cost is not None else (reported or Decimal(0))
            if attempt.reservation_id:
                settlements.append(ledger.Settlement(attempt.reservation_id, attempt.model, tokens, charged,
                                                     attempt.run_id))
                settlement_items.append(index)
            elif count_usage:
                bucket = unreserved[(attempt.model, int(moment.timestamp()) // 60)]
                bucket[0] += 1
                bucket[1] += tokens
                bucket[2] += charged
            if attempt.run_id:
                run_first_use.setdefault(attempt.run_id, index)
                totals = per_run[attempt.run_id]
                totals[0] += 1
                totals[1] += attempt.input_tokens
                totals[2] += attempt.output_tokens
                totals[3] += cost or Decimal(0)
            write((moment, ids[position], project_id, agent_id, attempt.run_id, attempt.reservation_id,
                   attempt.model, attempt.prompt_name, attempt.prompt_version, attempt.success, attempt.error_code,
                   attempt.input_tokens, attempt.output_tokens, attempt.latency_ms, cost, reported, attributes))

    # References are checked once the rows are written; a failure rolls everything back.
    _check_runs_owned(agent_id, run_first_use)
    try:
        ledger.usage_record(agent_id=agent_id, settlements=settlements, now=now, usages=[
            ledger.Usage(model, dt.datetime.fromtimestamp(minute * 60, dt.UTC), requests, tokens, cost_sum)
            for (model, minute), (requests, tokens, cost_sum) in unreserved.items()])
    except ledger.ReservationRefused as refused:
        error = {ItemNotFound.status: ItemNotFound, ItemInvalid.status: ItemInvalid}.get(refused.status, ItemConflict)
        raise error(settlement_items[refused.position], refused.field, refused.detail, code=refused.code) from None
    if per_run:
        with connection.cursor() as cursor:
            for run_id, (count, input_tokens, output_tokens, cost_sum) in sorted(per_run.items()):
                cursor.execute(_ADD_TO_RUN, {"attempts": count, "input": input_tokens, "output": output_tokens,
                                             "cost": cost_sum, "run": run_id, "bigint_max": BIGINT_MAX,
                                             "cost_max": RUN_COST_MAX})
    _count_rows("prompt_attempts", len(ids))
    return ids


def _count_rows(table: str, count: int) -> None:
    transaction.on_commit(lambda: metrics.ingest_rows(table, count))


# Counts the batch against the run's event budget and finds the run, in one statement by primary key.
_COUNT_EVENTS = """
    UPDATE telemetry_run SET events = events + %(count)s
    WHERE id = %(run)s AND agent_id = %(agent)s AND events + %(count)s <= %(limit)s
    RETURNING project_id
"""


@write_transaction
def run_events_record(*, principal: Principal, run_id: uuid.UUID, items: Sequence[RunEventIn],
                      batch: bool) -> list[uuid.UUID]:
    """Append events to the caller's run, at most MAX_EVENTS_PER_RUN in its life."""
    agent_id = _agent_of(principal)
    limit = settings.MAX_EVENTS_PER_RUN
    with connection.cursor() as cursor:
        cursor.execute(_COUNT_EVENTS, {"count": len(items), "run": run_id, "agent": agent_id, "limit": limit})
        row = cursor.fetchone()
    if row is None:
        run = Run.objects.filter(pk=run_id, agent_id=agent_id).only("events").first()
        if run is None:
            raise NotFound("No such run.", code="run_not_found")
        raise Conflict(f"The run has {run.events} events; a run takes at most {limit}.",
                       code="run_event_limit_reached", limit=limit, recorded=run.events)
    [project_id] = row
    window = TimeWindow(timezone.now())
    ids = uuid7_batch(len(items))
    with bulk_writer("run_events", EVENT_COLUMNS) as write:
        for position, event in enumerate(items):
            index = position if batch else None
            write((window.check(event.time, index), ids[position], run_id, project_id, agent_id, event.kind,
                   event.message, encoded_attributes(event.attributes, index)))
    _count_rows("run_events", len(ids))
    return ids


@write_transaction
def benchmark_record(*, principal: Principal, item: BenchmarkIn) -> uuid.UUID:
    """Record one benchmark result for the caller's project."""
    agent_id = _agent_of(principal)
    rules = effective_policy(agent_id)
    if rules is None:
        raise NotFound("Agent not found.")
    check_benchmark(item)
    moment = TimeWindow(timezone.now()).check(item.time, None)
    attributes = encoded_attributes(item.attributes, None)
    [benchmark_id] = uuid7_batch(1)
    with bulk_writer("benchmarks", BENCHMARK_COLUMNS) as write:
        write((moment, benchmark_id, rules.project_id, agent_id, item.suite, item.model, item.prompt_name,
               item.prompt_version, item.score, item.passed, item.total, attributes))
    _count_rows("benchmarks", 1)
    return benchmark_id
