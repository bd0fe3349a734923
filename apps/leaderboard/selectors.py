"""Reads for the public leaderboard — from the rollups only, never the raw telemetry tables.

Each board is one query over a rollup (prompt_attempts_hourly for the 24-hour window,
leaderboard_attempts_daily for 7 and 30 days, benchmarks_daily for suites) that returns one
row per entry: its totals and its trend per bucket (as arrays), both summed by the database;
intervals and percentiles are computed here from those rows.
The query itself keeps the public rules: only projects that opted in (and have a public
name), nothing an operator hid. Entries under LEADERBOARD_MIN_SAMPLES are dropped after
summing. What leaves this module is public: no agent, key, run or per-agent figure is ever
selected.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property

from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.gateway.errors import InvalidInput
from apps.leaderboard.stats import Interval, newcombe, wilson
from apps.telemetry.rollups import LATENCY_COLUMNS, LATENCY_OVERFLOW_COLUMN, floor_to, latency_percentile

KINDS = ("models", "prompts", "suites")
HISTOGRAM = (*LATENCY_COLUMNS, LATENCY_OVERFLOW_COLUMN)


@dataclass(frozen=True)
class Window:
    key: str
    label: str
    length: dt.timedelta
    attempts_source: str  # rollup table and its bucket column
    bucket_column: str
    width: dt.timedelta


WINDOWS = {
    window.key: window
    for window in (
        Window("24h", "last 24 hours", dt.timedelta(hours=24), "prompt_attempts_hourly", "bucket",
               dt.timedelta(hours=1)),
        Window("7d", "last 7 days", dt.timedelta(days=7), "leaderboard_attempts_daily", "day", dt.timedelta(days=1)),
        Window("30d", "last 30 days", dt.timedelta(days=30), "leaderboard_attempts_daily", "day", dt.timedelta(days=1)),
    )
}
DEFAULT_WINDOW = "7d"
DAY = dt.timedelta(days=1)


@dataclass
class Point:
    """One bucket of an entry's trend."""

    start: dt.datetime
    attempts: int = 0
    successes: int = 0

    @property
    def rate(self) -> float | None:
        return self.successes / self.attempts if self.attempts else None

    @property
    def interval(self) -> Interval | None:
        return wilson(self.successes, self.attempts)


@dataclass
class Entry:
    """One row of a board. `attempts`/`successes` are benchmark tasks/passes for suites."""

    kind: str
    name: str  # model, prompt name or suite
    version: str = ""  # prompts
    project: str = ""  # prompts: the project's public name
    project_id: int | None = None  # prompts: part of the detail page's address
    model: str = ""  # suites: the model this row ranks
    attempts: int = 0
    successes: int = 0
    priced_attempts: int = 0
    cost_usd: Decimal = Decimal(0)
    runs: int = 0  # suites: benchmark runs
    score_sum: float = 0.0  # suites
    histogram: dict[str, int] = field(default_factory=dict)
    trend: list[Point] = field(default_factory=list)
    rank: int = 0

    @cached_property  # read after the entry is summed, many times by ranking and templates
    def rate(self) -> Interval | None:
        return wilson(self.successes, self.attempts)

    @property
    def cost_per_success(self) -> Decimal | None:
        if not self.priced_attempts or not self.successes:
            return None
        return self.cost_usd / self.successes

    @property
    def cost_partial(self) -> bool:
        """Some attempts had no price: their cost is missing from cost per success."""
        return 0 < self.priced_attempts < self.attempts

    @cached_property
    def p50_ms(self) -> float | None:
        return latency_percentile(self.histogram, 0.5) if self.histogram else None

    @cached_property
    def p95_ms(self) -> float | None:
        return latency_percentile(self.histogram, 0.95) if self.histogram else None

    @property
    def score_avg(self) -> float | None:
        return self.score_sum / self.runs if self.runs else None

    def as_public_dict(self) -> dict:
        rate = self.rate
        out = {
            "rank": self.rank,
            "name": self.name,
            "attempts" if self.kind != "suites" else "tasks": self.attempts,
            "successes" if self.kind != "suites" else "passed": self.successes,
            "success_rate": round(rate.estimate, 4) if rate else None,
            "success_rate_ci95": [round(rate.low, 4), round(rate.high, 4)] if rate else None,
            "trend": [None if point.rate is None else round(point.rate, 4) for point in self.trend],
        }
        if self.kind == "prompts":
            out.update(version=self.version, project=self.project)
        if self.kind == "suites":
            out.update(model=self.model, runs=self.runs,
                       mean_score=round(self.score_avg, 4) if self.score_avg is not None else None)
        else:
            cost = self.cost_per_success
            out.update(cost_per_success_usd=str(cost.quantize(Decimal("0.000001"))) if cost is not None else None,
                       cost_partial=self.cost_partial,
                       latency_p50_ms=round(self.p50_ms) if self.p50_ms is not None else None,
                       latency_p95_ms=round(self.p95_ms) if self.p95_ms is not None else None)
        return out


@dataclass
class Board:
    kind: str
    window: Window
    buckets: list[dt.datetime]
    entries: list[Entry]
    min_samples: int
    generated_at: dt.datetime
    demo: bool = False


# --- queries ----------------------------------------------------------------------------------

_PUBLIC_PROJECT = "JOIN keys_project p ON p.id = r.project_id AND p.leaderboard_opt_in AND p.public_name <> ''"
_NOT_HIDDEN = "r.{column} NOT IN (SELECT h.name FROM leaderboard_hiddenentry h WHERE h.kind = '{kind}')"
_COUNTS = ("attempts", "successes", "priced_attempts", *HISTOGRAM)
# Per entry and bucket (the inner query), then per entry (the outer one).
_BUCKET_SUMS = ", ".join([f"sum(r.{column})::bigint AS {column}" for column in _COUNTS]
                         + ["sum(r.cost_usd) AS cost_usd"])
_ENTRY_SUMS = ", ".join([f"sum(b.{column})::bigint" for column in _COUNTS] + ["sum(b.cost_usd)"])


def _attempt_rows(window: Window, *, since: dt.datetime, prompts: bool, model: str | None = None,
                  project_id: int | None = None, prompt_name: str | None = None) -> list[tuple]:
    """One row per entry: its key, its trend as three arrays (bucket as epoch seconds, attempts,
    successes; in no particular order), then its totals (_COUNTS, cost).

    The database sums per bucket, then per entry, so Python decodes one row per entry instead
    of one per entry and bucket: on the 30-day prompts board, 54 rows instead of 1,008."""
    keys = ("project_id", "public_name", "prompt_name", "prompt_version") if prompts else ("model",)
    inner = ", ".join(f"p.{key}" if key == "public_name" else f"r.{key}" for key in keys)
    outer = ", ".join(f"b.{key}" for key in keys)
    where = ["r.{bucket} >= %(since)s", _NOT_HIDDEN.format(column="model", kind="model")]
    if prompts:
        where += ["r.prompt_name <> ''", _NOT_HIDDEN.format(column="prompt_name", kind="prompt")]
    if model is not None:
        where.append("r.model = %(model)s")
    if project_id is not None:
        where.append("r.project_id = %(project_id)s")
    if prompt_name is not None:
        where.append("r.prompt_name = %(prompt_name)s")
    # Only fixed identifiers are interpolated; values are parameters.
    sql = (f"SELECT {outer}, array_agg(extract(epoch FROM b.bucket)::bigint), array_agg(b.attempts), "  # noqa: S608
           f"array_agg(b.successes), {_ENTRY_SUMS} FROM ("
           f"SELECT {inner}, r.{{bucket}} AS bucket, {_BUCKET_SUMS} "
           f"FROM {window.attempts_source} r {_PUBLIC_PROJECT} "
           f"WHERE {' AND '.join(where)} GROUP BY {inner}, r.{{bucket}}"
           f") b GROUP BY {outer}").format(bucket=window.bucket_column)
    with connection.cursor() as cursor:
        cursor.execute(sql, {"since": since, "model": model, "project_id": project_id, "prompt_name": prompt_name})
        return cursor.fetchall()


def _suite_rows(*, since: dt.datetime, suite: str | None = None) -> list[tuple]:
    """One row per (suite, model): the trend as three arrays (day as epoch seconds, total,
    passed), then runs, passed, total and the score sum."""
    where = ["r.day >= %(since)s", _NOT_HIDDEN.format(column="model", kind="model"),
             _NOT_HIDDEN.format(column="suite", kind="suite")]
    if suite is not None:
        where.append("r.suite = %(suite)s")
    sql = ("SELECT b.suite, b.model, array_agg(extract(epoch FROM b.day)::bigint), array_agg(b.total), "  # noqa: S608
           "array_agg(b.passed), sum(b.runs)::bigint, sum(b.passed)::bigint, sum(b.total)::bigint, sum(b.score_sum) "
           "FROM (SELECT r.suite, r.model, r.day, sum(r.runs)::bigint AS runs, "
           "coalesce(sum(r.passed), 0)::bigint AS passed, coalesce(sum(r.total), 0)::bigint AS total, "
           f"sum(r.score_sum) AS score_sum FROM benchmarks_daily r {_PUBLIC_PROJECT} WHERE {' AND '.join(where)} "
           "GROUP BY r.suite, r.model, r.day) b GROUP BY b.suite, b.model")
    with connection.cursor() as cursor:
        cursor.execute(sql, {"since": since, "suite": suite})
        return cursor.fetchall()


def demo_data_shown() -> bool:
    """Whether any public project on the board was made by seed_demo."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM leaderboard_demoproject d "
                       "JOIN keys_project p ON p.id = d.project_id WHERE p.leaderboard_opt_in)")
        return cursor.fetchone()[0]


# --- assembling boards --------------------------------------------------------------------------


def _buckets(since: dt.datetime, now: dt.datetime, width: dt.timedelta) -> list[dt.datetime]:
    out, moment = [], since
    while moment <= now:
        out.append(moment)
        moment += width
    return out


def _trend(buckets: list[dt.datetime], starts: list[int], attempts: list[int], successes: list[int]) -> list[Point]:
    trend = [Point(start) for start in buckets]
    position = {int(start.timestamp()): index for index, start in enumerate(buckets)}
    for start, count, good in zip(starts, attempts, successes, strict=True):
        index = position.get(start)
        if index is not None:
            trend[index].attempts += count
            trend[index].successes += good
    return trend


def _entries_from_attempts(rows: Iterable[tuple], *, prompts: bool, buckets: list[dt.datetime]) -> list[Entry]:
    entries = []
    for row in rows:
        if prompts:
            project_id, public_name, name, version, *rest = row
        else:
            name, *rest = row
            project_id, public_name, version = None, "", ""
        starts, bucket_attempts, bucket_successes, attempts, successes, priced, *histogram, cost = rest
        entries.append(Entry(kind="prompts" if prompts else "models", name=name, version=version,
                             project=public_name, project_id=project_id, attempts=attempts, successes=successes,
                             priced_attempts=priced, cost_usd=cost or Decimal(0),
                             histogram=dict(zip(HISTOGRAM, histogram, strict=True)),
                             trend=_trend(buckets, starts, bucket_attempts, bucket_successes)))
    return entries


def _entries_from_suites(rows: Iterable[tuple], *, buckets: list[dt.datetime]) -> list[Entry]:
    # A run without pass/total counts contributes its score only.
    return [Entry(kind="suites", name=suite, model=model, runs=runs, successes=passed, attempts=total,
                  score_sum=score_sum or 0.0, trend=_trend(buckets, starts, day_total, day_passed))
            for suite, model, starts, day_total, day_passed, runs, passed, total, score_sum in rows]


def _ranked(entries: list[Entry], min_samples: int, *, group=lambda entry: None) -> list[Entry]:
    """Drop small entries, then rank by the Wilson lower bound (ties: more samples first).
    Suites rank within each suite (`group`)."""
    shown = [entry for entry in entries if entry.attempts >= min_samples]
    shown.sort(key=lambda entry: (str(group(entry) or ""), -(entry.rate.low if entry.rate else -1),
                                  -entry.attempts, entry.name, entry.version, entry.model))
    rank, previous_group = 0, object()
    for entry in shown:
        rank = 1 if group(entry) != previous_group else rank + 1
        previous_group = group(entry)
        entry.rank = rank
    return shown


def board(*, kind: str, window_key: str, now: dt.datetime | None = None) -> Board:
    """The public board of one kind (models, prompts, suites) over one window."""
    now = now or timezone.now()
    window = WINDOWS[window_key]
    min_samples = settings.LEADERBOARD_MIN_SAMPLES
    if kind == "suites":
        since = floor_to(now - window.length, DAY)
        buckets = _buckets(since, now, DAY)
        entries = _ranked(_entries_from_suites(_suite_rows(since=since), buckets=buckets), min_samples,
                          group=lambda entry: entry.name)
    else:
        since = floor_to(now - window.length, window.width)
        buckets = _buckets(since, now, window.width)
        prompts = kind == "prompts"
        entries = _ranked(_entries_from_attempts(_attempt_rows(window, since=since, prompts=prompts),
                                                 prompts=prompts, buckets=buckets), min_samples)
    return Board(kind=kind, window=window, buckets=buckets, entries=entries, min_samples=min_samples,
                 generated_at=now, demo=demo_data_shown())


def public_board_params(*, kind: str | None, window: str | None) -> tuple[str, str]:
    """The (kind, window) of a public board request (None: the defaults), or InvalidInput. An empty
    value is not a default: REST's `?window=` is a mistake; gRPC's unset field arrives as None."""
    kind = "models" if kind is None else kind
    window = DEFAULT_WINDOW if window is None else window
    if window not in WINDOWS:
        raise InvalidInput(f"window must be one of {', '.join(WINDOWS)}.", code="invalid_window")
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}.", code="invalid_kind")
    return kind, window


def public_board(*, kind: str, window: str) -> dict:
    """The public JSON of a board (GET /api/v1/leaderboard, GetLeaderboard): nothing private."""
    board_ = board(kind=kind, window_key=window)
    return {"kind": kind, "window": window, "generated_at": board_.generated_at, "min_samples": board_.min_samples,
            "demo": board_.demo, "buckets": board_.buckets,
            "entries": [entry.as_public_dict() for entry in board_.entries]}


def model_detail(*, name: str, window_key: str, now: dt.datetime | None = None) -> Board:
    """One model's board (one entry, or none when hidden, private or too small)."""
    now = now or timezone.now()
    window = WINDOWS[window_key]
    since = floor_to(now - window.length, window.width)
    buckets = _buckets(since, now, window.width)
    entries = _entries_from_attempts(_attempt_rows(window, since=since, prompts=False, model=name),
                                     prompts=False, buckets=buckets)
    return Board(kind="models", window=window, buckets=buckets, min_samples=settings.LEADERBOARD_MIN_SAMPLES,
                 entries=_ranked(entries, settings.LEADERBOARD_MIN_SAMPLES), generated_at=now,
                 demo=demo_data_shown())


def _version_key(version: str) -> tuple:
    """Natural order: v2 < v10, 1.9 < 1.10."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.split(r"(\d+)", version) if part)


@dataclass
class VersionComparison:
    entry: Entry
    previous: Entry | None
    difference: Interval | None  # this version's success rate minus the previous one's

    @property
    def distinguishable(self) -> bool:
        return self.difference is not None and not self.difference.contains_zero


def prompt_detail(*, project_id: int, name: str, window_key: str,
                  now: dt.datetime | None = None) -> tuple[Board, list[VersionComparison]]:
    """A prompt's versions in version order, each compared with the previous shown version."""
    now = now or timezone.now()
    window = WINDOWS[window_key]
    since = floor_to(now - window.length, window.width)
    buckets = _buckets(since, now, window.width)
    rows = _attempt_rows(window, since=since, prompts=True, project_id=project_id, prompt_name=name)
    entries = _ranked(_entries_from_attempts(rows, prompts=True, buckets=buckets), settings.LEADERBOARD_MIN_SAMPLES)
    versions = sorted(entries, key=lambda entry: _version_key(entry.version))
    comparisons, previous = [], None
    for entry in versions:
        difference = None
        if previous is not None:
            difference = newcombe(entry.successes, entry.attempts, previous.successes, previous.attempts)
        comparisons.append(VersionComparison(entry, previous, difference))
        previous = entry
    result = Board(kind="prompts", window=window, buckets=buckets, entries=entries,
                   min_samples=settings.LEADERBOARD_MIN_SAMPLES, generated_at=now, demo=demo_data_shown())
    return result, comparisons


def suite_detail(*, name: str, window_key: str, now: dt.datetime | None = None) -> Board:
    """One benchmark suite's models, ranked."""
    now = now or timezone.now()
    window = WINDOWS[window_key]
    since = floor_to(now - window.length, DAY)
    buckets = _buckets(since, now, DAY)
    entries = _ranked(_entries_from_suites(_suite_rows(since=since, suite=name), buckets=buckets),
                      settings.LEADERBOARD_MIN_SAMPLES, group=lambda entry: entry.name)
    return Board(kind="suites", window=window, buckets=buckets, entries=entries,
                 min_samples=settings.LEADERBOARD_MIN_SAMPLES, generated_at=now, demo=demo_data_shown())
