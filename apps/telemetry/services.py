"""Runs and telemetry ingest.

Batches are validated item by item (the first bad item fails the whole batch), then written
in one transaction: COPY where the connection supports it, multi-row INSERT otherwise.
Attempts settle their reservations, count against caps, and roll up into their run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from django.db import NotSupportedError, connection, transaction
from django.utils import timezone

from apps.keys.models import Agent
from apps.policy import services as policy
from apps.policy.selectors import effective_policy, price_at, price_history
from apps.telemetry.models import Run
from apps.telemetry.validation import LABEL_RE, MAX_LATENCY_MS, MAX_TOKENS, ItemInvalid, Items, TimeWindow
from modeloman.problems import Conflict, Forbidden, NotFound

logger = logging.getLogger(__name__)

ATTEMPT_FIELDS = frozenset({"time", "model", "prompt_name", "prompt_version", "success", "error_code",
                            "input_tokens", "output_tokens", "latency_ms", "reported_cost_usd", "run_id",
                            "reservation_id", "attributes"})
ATTEMPT_COLUMNS = ("time", "id", "project_id", "agent_id", "run_id", "reservation_id", "model", "prompt_name",
                   "prompt_version", "success", "error_code", "input_tokens", "output_tokens", "latency_ms",
                   "cost_usd", "reported_cost_usd", "attributes")
EVENT_FIELDS = frozenset({"time", "kind", "message", "attributes"})
EVENT_COLUMNS = ("time", "id", "run_id", "project_id", "agent_id", "kind", "message", "attributes")
BENCHMARK_FIELDS = frozenset({"time", "suite", "model", "prompt_name", "prompt_version", "score", "passed", "total",
                              "attributes"})
BENCHMARK_COLUMNS = ("time", "id", "project_id", "agent_id", "suite", "model", "prompt_name", "prompt_version",
                     "score", "passed", "total", "attributes")
RUN_FINAL_STATES = {Run.Status.SUCCEEDED, Run.Status.FAILED, Run.Status.CANCELLED}


# --- bulk writing -----------------------------------------------------------------------------

_copy_supported: bool | None = None  # learnt per process: the Timescale test engine has no COPY FROM STDIN


def bulk_insert(table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert rows with COPY, or with multi-row INSERTs where COPY is unavailable."""
    global _copy_supported
    if not rows:
        return
    column_list = ", ".join(columns)
    if _copy_supported is not False:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                with cursor.cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            _copy_supported = True
            return
        except NotSupportedError:
            # Only a server that refuses COPY (the Timescale test engine) switches us to INSERT;
            # any other error is a real one and propagates.
            logger.info("COPY FROM STDIN unavailable on this connection; using multi-row INSERT")
            _copy_supported = False
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 500):
            chunk = rows[start:start + 500]
            sql = f"INSERT INTO {table} ({column_list}) VALUES " + ", ".join([placeholders] * len(chunk))  # noqa: S608  # fixed identifiers
            cursor.execute(sql, [value for row in chunk for value in row])


# --- runs -------------------------------------------------------------------------------------


def _agent_of(principal: Any) -> int:
    if principal.agent_id is None:
        raise Forbidden("Only agent keys record runs and telemetry.", code="not_an_agent")
    return principal.agent_id


@transaction.atomic
def run_start(*, principal: Any, task: str, metadata: dict) -> Run:
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


def run_get(*, principal: Any, run_id: uuid.UUID) -> Run:
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


@transaction.atomic
def run_finish(*, principal: Any, run_id: uuid.UUID, status: str, metadata: dict | None) -> Run:
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


def _parse_attempt(raw: Any, index: int | None, window: TimeWindow) -> dict:
    item = Items(raw, index, allowed=ATTEMPT_FIELDS)
    return {
        "time": item.time("time", window),
        "model": item.model(),
        "prompt_name": item.label("prompt_name"),
        "prompt_version": item.label("prompt_version"),
        "success": item.boolean("success"),
        "error_code": item.code("error_code"),
        "input_tokens": item.integer("input_tokens", low=0, high=MAX_TOKENS),
        "output_tokens": item.integer("output_tokens", low=0, high=MAX_TOKENS),
        "latency_ms": item.integer("latency_ms", low=0, high=MAX_LATENCY_MS),
        "reported_cost_usd": item.optional_money("reported_cost_usd"),
        "run_id": item.optional_uuid("run_id"),
        "reservation_id": item.optional_uuid("reservation_id"),
        "attributes": item.attributes(),
    }


def _check_runs_owned(agent_id: int, run_ids: Iterable[tuple[int | None, uuid.UUID]]) -> None:
    by_id: dict[uuid.UUID, int | None] = {}
    for index, run_id in run_ids:
        by_id.setdefault(run_id, index)
    if not by_id:
        return
    owned = set(Run.objects.filter(pk__in=list(by_id), agent_id=agent_id).values_list("pk", flat=True))
    for run_id, index in by_id.items():
        if run_id not in owned:
            raise ItemInvalid(index, "run_id", "no such run for this agent")


@transaction.atomic
def attempts_record(*, principal: Any, items: list[Any], batch: bool) -> list[uuid.UUID]:
    """Record prompt attempts, all or nothing. Cost is computed here from ModelPrice; the
    agent's own figure is kept beside it. Attempts with a reservation settle it; the rest
    count against the caps directly."""
    agent_id = _agent_of(principal)
    rules = effective_policy(agent_id)
    if rules is None:
        raise NotFound("Agent not found.")
    now = timezone.now()
    window = TimeWindow(now)
    parsed = [_parse_attempt(raw, index if batch else None, window) for index, raw in enumerate(items)]
    _check_runs_owned(agent_id, ((i if batch else None, a["run_id"]) for i, a in enumerate(parsed) if a["run_id"]))

    rows, ids = [], []
    unreserved: dict[tuple[str, dt.datetime], list[Decimal | int]] = defaultdict(lambda: [Decimal(0), 0])
    per_run: dict[uuid.UUID, list] = defaultdict(lambda: [0, 0, 0, Decimal(0)])
    histories: dict[str, tuple] = {}  # one price lookup per model per batch
    for index, attempt in enumerate(parsed):
        model = attempt["model"]
        history = histories.get(model)
        if history is None:
            history = histories[model] = price_history(model)
        price = price_at(history, attempt["time"])
        cost = price.cost(attempt["input_tokens"], attempt["output_tokens"]) if price else None
        tokens = attempt["input_tokens"] + attempt["output_tokens"]
        charged = cost if cost is not None else (attempt["reported_cost_usd"] or Decimal(0))
        if attempt["reservation_id"]:
            try:
                policy.reservation_settle(reservation_id=attempt["reservation_id"], agent_id=agent_id,
                                          actual_tokens=tokens, actual_cost_usd=charged, now=now)
            except (NotFound, Conflict) as error:
                raise ItemInvalid(index if batch else None, "reservation_id", error.detail) from None
        else:
            minute = attempt["time"].replace(second=0, microsecond=0)
            bucket = unreserved[(attempt["model"], minute)]
            bucket[0] += charged
            bucket[1] += tokens
        if attempt["run_id"]:
            totals = per_run[attempt["run_id"]]
            totals[0] += 1
            totals[1] += attempt["input_tokens"]
            totals[2] += attempt["output_tokens"]
            totals[3] += cost or Decimal(0)
        attempt_id = uuid.uuid4()
        ids.append(attempt_id)
        rows.append((attempt["time"], attempt_id, rules.project_id, agent_id, attempt["run_id"],
                     attempt["reservation_id"], attempt["model"], attempt["prompt_name"], attempt["prompt_version"],
                     attempt["success"], attempt["error_code"], attempt["input_tokens"], attempt["output_tokens"],
                     attempt["latency_ms"], cost, attempt["reported_cost_usd"], attempt["attributes"]))

    bulk_insert("prompt_attempts", ATTEMPT_COLUMNS, rows)
    for (model, minute), (cost_sum, token_sum) in unreserved.items():
        policy.usage_record(agent_id=agent_id, model=model, tokens=token_sum, cost_usd=cost_sum, now=minute)
    if per_run:
        with connection.cursor() as cursor:
            for run_id, (count, input_tokens, output_tokens, cost_sum) in sorted(per_run.items()):
                cursor.execute(
                    "UPDATE telemetry_run SET attempts = attempts + %s, input_tokens = input_tokens + %s, "
                    "output_tokens = output_tokens + %s, cost_usd = cost_usd + %s WHERE id = %s",
                    [count, input_tokens, output_tokens, cost_sum, run_id])
    return ids


def _parse_event(raw: Any, index: int | None, window: TimeWindow) -> dict:
    item = Items(raw, index, allowed=EVENT_FIELDS)
    return {"time": item.time("time", window), "kind": item.code("kind", required=True),
            "message": item.text("message", max_length=4000), "attributes": item.attributes()}


@transaction.atomic
def run_events_record(*, principal: Any, run_id: uuid.UUID, items: list[Any], batch: bool) -> list[uuid.UUID]:
    """Append events to the caller's run (looked up once, by primary key)."""
    agent_id = _agent_of(principal)
    run = Run.objects.filter(pk=run_id, agent_id=agent_id).only("id", "project_id").first()
    if run is None:
        raise NotFound("No such run.", code="run_not_found")
    window = TimeWindow(timezone.now())
    ids, rows = [], []
    for index, raw in enumerate(items):
        event = _parse_event(raw, index if batch else None, window)
        event_id = uuid.uuid4()
        ids.append(event_id)
        rows.append((event["time"], event_id, run.pk, run.project_id, agent_id, event["kind"], event["message"],
                     event["attributes"]))
    bulk_insert("run_events", EVENT_COLUMNS, rows)
    return ids


@transaction.atomic
def benchmark_record(*, principal: Any, item: Any) -> uuid.UUID:
    agent_id = _agent_of(principal)
    rules = effective_policy(agent_id)
    if rules is None:
        raise NotFound("Agent not found.")
    fields = Items(item, None, allowed=BENCHMARK_FIELDS)
    now = timezone.now()
    total = fields.optional_integer("total", low=0, high=10**9)
    passed = fields.optional_integer("passed", low=0, high=total if total is not None else 10**9)
    row = (fields.time("time", TimeWindow(now)), uuid.uuid4(), rules.project_id, agent_id,
           fields.matching("suite", LABEL_RE, what="must be 1-128 letters, digits, spaces or . _ : / @ + -"),
           fields.model(), fields.label("prompt_name"), fields.label("prompt_version"), fields.number("score"),
           passed, total, fields.attributes())
    bulk_insert("benchmarks", BENCHMARK_COLUMNS, [row])
    return row[1]

