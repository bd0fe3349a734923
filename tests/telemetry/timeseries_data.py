"""Telemetry rows written with raw multi-row INSERTs (what ingest does where COPY is
unavailable), the column contract both storage modes must keep, and rollup readers."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from decimal import Decimal
from typing import Any

from django.db import connection

_project_ids = itertools.count(1_000_001)

# The contract (SPEC §2; the ingest code writes exactly these columns): (type, NOT NULL).
RAW_COLUMNS = {
    "prompt_attempts": {
        "time": ("timestamp with time zone", True), "id": ("uuid", True), "project_id": ("bigint", True),
        "agent_id": ("bigint", True), "run_id": ("uuid", False), "reservation_id": ("uuid", False),
        "model": ("text", True), "prompt_name": ("text", True), "prompt_version": ("text", True),
        "success": ("boolean", True), "error_code": ("text", True), "input_tokens": ("bigint", True),
        "output_tokens": ("bigint", True), "latency_ms": ("integer", True), "cost_usd": ("numeric(18,6)", False),
        "reported_cost_usd": ("numeric(18,6)", False), "attributes": ("jsonb", True),
    },
    "run_events": {
        "time": ("timestamp with time zone", True), "id": ("uuid", True), "run_id": ("uuid", True),
        "project_id": ("bigint", True), "agent_id": ("bigint", True), "kind": ("text", True),
        "message": ("text", True), "attributes": ("jsonb", True),
    },
    "benchmarks": {
        "time": ("timestamp with time zone", True), "id": ("uuid", True), "project_id": ("bigint", True),
        "agent_id": ("bigint", True), "suite": ("text", True), "model": ("text", True),
        "prompt_name": ("text", True), "prompt_version": ("text", True), "score": ("double precision", True),
        "passed": ("integer", False), "total": ("integer", False), "attributes": ("jsonb", True),
    },
}
HISTOGRAM_COLUMNS = [f"lat_le_{bound}" for bound in (50, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600,
                                                      51200)] + ["lat_gt_51200"]
# Rollups: types only (a continuous aggregate is a view; its columns are all nullable).
ROLLUP_COLUMNS = {
    "prompt_attempts_hourly": {
        "id": "uuid", "bucket": "timestamp with time zone", "project_id": "bigint", "model": "text",
        "prompt_name": "text", "prompt_version": "text", "attempts": "bigint", "successes": "bigint",
        "priced_attempts": "bigint", "cost_usd": "numeric", "input_tokens": "bigint", "output_tokens": "bigint",
        "latency_ms_sum": "bigint", **dict.fromkeys(HISTOGRAM_COLUMNS, "bigint"),
    },
    # apps/leaderboard/migrations/0002: prompt_attempts_hourly's columns, per day.
    "leaderboard_attempts_daily": {
        "id": "uuid", "day": "timestamp with time zone", "project_id": "bigint", "model": "text",
        "prompt_name": "text", "prompt_version": "text", "attempts": "bigint", "successes": "bigint",
        "priced_attempts": "bigint", "cost_usd": "numeric", "input_tokens": "bigint", "output_tokens": "bigint",
        "latency_ms_sum": "bigint", **dict.fromkeys(HISTOGRAM_COLUMNS, "bigint"),
    },
    "benchmarks_daily": {
        "id": "uuid", "day": "timestamp with time zone", "project_id": "bigint", "suite": "text", "model": "text",
        "prompt_name": "text", "prompt_version": "text", "runs": "bigint", "score_sum": "double precision",
        "score_avg": "double precision", "score_min": "double precision", "score_max": "double precision",
        "passed": "bigint", "total": "bigint",
    },
}


def new_project_id() -> int:
    """A project id no other test uses: the Timescale engine's database is shared by the run."""
    return next(_project_ids) * 1000 + uuid.uuid4().int % 1000


def columns(relation: str) -> dict[str, tuple[str, bool]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
                       "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                       [relation])
        return {name: (type_, not_null) for name, type_, not_null in cursor.fetchall()}


def index_names(table: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s",
                       [table])
        return {name for (name,) in cursor.fetchall()}


def _insert(table: str, rows: list[dict[str, Any]]) -> None:
    names = list(rows[0])
    values = ", ".join("(" + ", ".join(["%s"] * len(names)) + ")" for _ in rows)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES {values}",  # noqa: S608  # test helper
                       [row[name] for row in rows for name in names])


def attempt(time: dt.datetime, *, project_id: int, model: str = "model-a", prompt_name: str = "summarize",
            prompt_version: str = "v1", success: bool = True, latency_ms: int = 100, input_tokens: int = 10,
            output_tokens: int = 5, cost_usd: str | None = "0.010000", agent_id: int = 1,
            run_id: uuid.UUID | None = None) -> dict[str, Any]:
    return {"time": time, "id": uuid.uuid4(), "project_id": project_id, "agent_id": agent_id, "run_id": run_id,
            "reservation_id": None, "model": model, "prompt_name": prompt_name, "prompt_version": prompt_version,
            "success": success, "error_code": "" if success else "timeout", "input_tokens": input_tokens,
            "output_tokens": output_tokens, "latency_ms": latency_ms,
            "cost_usd": None if cost_usd is None else Decimal(cost_usd), "reported_cost_usd": None,
            "attributes": json.dumps({"region": "eu"})}


def benchmark(time: dt.datetime, *, project_id: int, suite: str = "mmlu", model: str = "model-a", score: float = 0.5,
              passed: int | None = 5, total: int | None = 10) -> dict[str, Any]:
    return {"time": time, "id": uuid.uuid4(), "project_id": project_id, "agent_id": 1, "suite": suite,
            "model": model, "prompt_name": "", "prompt_version": "", "score": score, "passed": passed,
            "total": total, "attributes": "{}"}


def event(time: dt.datetime, *, project_id: int, run_id: uuid.UUID, kind: str = "step") -> dict[str, Any]:
    return {"time": time, "id": uuid.uuid4(), "run_id": run_id, "project_id": project_id, "agent_id": 1,
            "kind": kind, "message": "", "attributes": "{}"}


def insert_attempts(rows: list[dict[str, Any]]) -> None:
    _insert("prompt_attempts", rows)


def insert_benchmarks(rows: list[dict[str, Any]]) -> None:
    _insert("benchmarks", rows)


def insert_events(rows: list[dict[str, Any]]) -> None:
    _insert("run_events", rows)


def rollup_rows(relation: str, project_id: int) -> list[dict[str, Any]]:
    """A rollup's rows for one project, in a stable order, as dicts."""
    order = "bucket" if relation == "prompt_attempts_hourly" else "day"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {relation} WHERE project_id = %s "  # noqa: S608  # test helper
                       f"ORDER BY {order}, model, prompt_name, prompt_version", [project_id])
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def count(table: str, project_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table} WHERE project_id = %s", [project_id])  # noqa: S608
        return cursor.fetchone()[0]


def expected_hourly(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """What prompt_attempts_hourly must contain for these attempts, computed in Python."""
    groups: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        bucket = row["time"].astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        key = (bucket, row["model"], row["prompt_name"], row["prompt_version"])
        group = groups.setdefault(key, {"attempts": 0, "successes": 0, "priced_attempts": 0, "cost_usd": None,
                                        "input_tokens": 0, "output_tokens": 0, "latency_ms_sum": 0,
                                        **dict.fromkeys(HISTOGRAM_COLUMNS, 0)})
        group["attempts"] += 1
        group["successes"] += row["success"]
        if row["cost_usd"] is not None:
            group["priced_attempts"] += 1
            group["cost_usd"] = (group["cost_usd"] or Decimal(0)) + row["cost_usd"]
        group["input_tokens"] += row["input_tokens"]
        group["output_tokens"] += row["output_tokens"]
        group["latency_ms_sum"] += row["latency_ms"]
        for column in HISTOGRAM_COLUMNS[:-1]:
            group[column] += row["latency_ms"] <= int(column.removeprefix("lat_le_"))
        group["lat_gt_51200"] += row["latency_ms"] > 51200
    return groups


def actual_hourly(project_id: int) -> dict[tuple, dict[str, Any]]:
    """prompt_attempts_hourly for one project, keyed like expected_hourly()."""
    wanted = ["attempts", "successes", "priced_attempts", "cost_usd", "input_tokens", "output_tokens",
              "latency_ms_sum", *HISTOGRAM_COLUMNS]
    return {(row["bucket"].astimezone(dt.UTC), row["model"], row["prompt_name"], row["prompt_version"]):
            {name: row[name] for name in wanted} for row in rollup_rows("prompt_attempts_hourly", project_id)}
