"""Prompt-attempt ingest: our batch path (validate + cost + COPY) vs Django `save()` per row
and `bulk_create`, same data, same run, in a throwaway database. Rows are counted afterwards.

    make bench        (or: .venv/bin/python bench/ingest.py [--rows 50000])

Our figure includes decoding each JSON request body and validating every field of every item,
exactly as the endpoint does; the baselines get ready-made model instances (no decoding, no
validation, no cost lookup), which flatters them.
"""

import argparse
import datetime as dt
import json
import statistics
import time
import uuid
from decimal import Decimal

from _setup import throwaway_database
from django.db import connection, transaction
from django.utils import timezone

from apps.audit.services import Actor
from apps.keys import services as key_services
from apps.keys.authentication import authenticate_token
from apps.keys.models import Agent, Project
from apps.policy import services as policy_services
from apps.policy.models import ModelPrice, PolicyCap, SubjectType
from apps.telemetry import services
from apps.telemetry.timeseries import PromptAttempt
from apps.telemetry.validation import AttemptIn, decode_items

BATCH = 1000
OURS = "ours: batch endpoint path (COPY)"
BULK = "baseline: bulk_create"
PER_ROW = "baseline: save() per row"


def make_items(n: int) -> list[dict]:
    now = timezone.now()
    return [{"time": (now - dt.timedelta(milliseconds=i)).isoformat(), "model": f"bench-model-{i % 4}",
             "prompt_name": "summarize", "prompt_version": f"v{i % 3}", "success": i % 10 != 0,
             "input_tokens": 800 + i % 400, "output_tokens": 200 + i % 100, "latency_ms": 300 + i % 2000,
             "attributes": {"region": "eu"} if i % 5 == 0 else None} for i in range(n)]


def as_model(item: dict, principal) -> PromptAttempt:
    return PromptAttempt(time=dt.datetime.fromisoformat(item["time"]), id=uuid.uuid4(),
                         project_id=principal.project_id, agent_id=principal.agent_id, model=item["model"],
                         prompt_name=item["prompt_name"], prompt_version=item["prompt_version"],
                         success=item["success"], error_code="", input_tokens=item["input_tokens"],
                         output_tokens=item["output_tokens"], latency_ms=item["latency_ms"],
                         cost_usd=Decimal("0.001"), attributes=item["attributes"] or {})


def count_and_clear() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM prompt_attempts")
        rows = cursor.fetchone()[0]
        cursor.execute("TRUNCATE prompt_attempts")
    return rows


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3, help="passes of ours and bulk_create (median reported)")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {}
    with throwaway_database("modeloman_bench_ingest"):
        actor = Actor.system("bench")
        project = key_services.project_save(actor=actor, project=Project(slug="bench", name="bench"))
        agent = key_services.agent_save(actor=actor, agent=Agent(project=project, name="bench-agent"))
        principal = authenticate_token(
            key_services.api_key_create(actor=actor, agent=agent, scopes=["telemetry:write"]).token)
        for i in range(4):
            policy_services.model_price_save(actor=actor, price=ModelPrice(
                model=f"bench-model-{i}", input_usd_per_mtok=Decimal(1), output_usd_per_mtok=Decimal(2),
                effective_from=timezone.now() - dt.timedelta(days=1)))
        # A global daily cost cap, as production has: every attempt is counted against it.
        policy_services.cap_save(actor=actor, cap=PolicyCap(
            subject_type=SubjectType.GLOBAL, metric=PolicyCap.Metric.COST_USD, window=PolicyCap.Window.DAY,
            limit=Decimal(10**9)))
        items = make_items(args.rows)
        bodies = [json.dumps({"attempts": items[i:i + BATCH]}).encode() for i in range(0, len(items), BATCH)]

        def ours() -> None:
            for body in bodies:
                decoded, batch = decode_items(body, AttemptIn, plural="attempts")
                services.attempts_record(principal=principal, items=decoded, batch=batch)

        def bulk() -> None:
            objects = [as_model(item, principal) for item in items]
            with transaction.atomic():
                PromptAttempt.objects.bulk_create(objects, batch_size=BATCH)

        def per_row() -> None:
            for item in items:
                as_model(item, principal).save(force_insert=True)

        def measure(name: str, fn) -> None:
            seconds = timed(fn)
            rows = count_and_clear()
            if rows != args.rows:
                raise SystemExit(f"{name}: {rows} rows stored, expected {args.rows}")
            rates.setdefault(name, []).append(rows / seconds)

        ours()  # warm-up: process caches, table and index pages
        count_and_clear()
        for _ in range(args.repeat):  # interleaved, so drift on a noisy machine hits both alike
            measure(OURS, ours)
            measure(BULK, bulk)
        measure(PER_ROW, per_row)

    print(f"Prompt-attempt ingest, {args.rows} rows in batches of {BATCH}; rows counted after every pass")
    for name, samples in rates.items():
        passes = ", ".join(f"{rate:.0f}" for rate in samples)
        print(f"{name:<36} median {statistics.median(samples):>8.0f} rows/s   (passes: {passes})")
    ours_rate, bulk_rate, row_rate = (statistics.median(rates[name]) for name in (OURS, BULK, PER_ROW))
    print(f"ours vs save() per row: {ours_rate / row_rate:.1f}x (target >= 20x); vs bulk_create: "
          f"{ours_rate / bulk_rate:.1f}x (target >= 2.5x); ours {ours_rate:.0f}/s (target >= 50,000/s)")


if __name__ == "__main__":
    main()
