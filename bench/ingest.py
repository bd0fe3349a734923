"""Prompt-attempt ingest: our batch path (validate + cost + COPY) vs Django `save()` per row
and `bulk_create`, same data, same run, in a throwaway database. Rows are counted afterwards.

    make bench        (or: .venv/bin/python bench/ingest.py [--rows 50000] [--writers 2] [--repeat 5])

Our figure includes decoding each JSON request body and validating every field of every item,
exactly as the endpoint does; the baselines get ready-made model instances (no decoding, no
validation, no cost lookup), which flatters them. A second figure of ours goes through the
whole Django request path (WSGI handler, middleware, key authentication, Idempotency-Key claim
and stored response, problem+json rendering) with the test client: everything but the socket.

Every method runs with the same number of writer processes (default 2: one per core, as a
server runs one worker per core), each with its own connection and its share of the data;
a pass is timed from the moment all writers are ready until the last one is done.
"""

import argparse
import datetime as dt
import json
import multiprocessing
import os
import statistics
import time
import uuid
import warnings
from collections.abc import Callable
from decimal import Decimal

from _setup import throwaway_database
from django.db import connection, connections, transaction
from django.test import Client
from django.utils import timezone

from apps.audit.services import Actor
from apps.gateway.auth import authenticate_token
from apps.keys import services as key_services
from apps.keys.models import Agent, Project
from apps.policy import services as policy_services
from apps.policy.models import ModelPrice, PolicyCap, SubjectType
from apps.telemetry import services
from apps.telemetry.timeseries import PromptAttempt
from apps.telemetry.validation import AttemptIn, decode_items
from modeloman.invalidation import listener

warnings.filterwarnings("ignore", message="No directory at")  # whitenoise: no collected static files here

BATCH = 1000
MODELS = [f"bench-model-{i}" for i in range(4)]
OURS = "ours: batch endpoint path (COPY)"
OURS_HTTP = "ours: same, whole request path (WSGI)"
BULK = "baseline: bulk_create"
PER_ROW = "baseline: save() per row"


def make_items(n: int) -> list[dict]:
    now = timezone.now()
    return [{"time": (now - dt.timedelta(milliseconds=i)).isoformat(), "model": MODELS[i % 4],
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


def writer(work: Callable[[int], None], share: int, ready, results) -> None:
    """One writer process: its own connection and caches, then its share of the work."""
    try:
        listener.wait_until_healthy()  # this process's caches serve only once it listens
        ready.wait()
        start = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
        work(share)
        results.put((start, time.perf_counter(), None))
    except BaseException as error:  # noqa: BLE001  # reported to the parent, which fails the run
        results.put((0.0, 0.0, repr(error)))
    finally:
        results.close()
        results.join_thread()  # the result is in the pipe before the process ends
        os._exit(0)  # never run the parent's finalizers (its connections' sockets are shared)


def timed_pass(work: Callable[[int], None], writers: int) -> float:
    """Seconds for `writers` forked processes to do `work(0..writers-1)`."""
    connections.close_all()  # children open their own; the parent reconnects afterwards
    context = multiprocessing.get_context("fork")
    ready, results = context.Barrier(writers), context.Queue()
    processes = [context.Process(target=writer, args=(work, share, ready, results)) for share in range(writers)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    errors = [error for _, _, error in outcomes if error]
    if errors:
        raise SystemExit(f"a writer failed: {errors[0]}")
    return max(end for _, end, _ in outcomes) - min(start for start, _, _ in outcomes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--writers", type=int, default=2, help="concurrent writer processes for every method")
    parser.add_argument("--repeat", type=int, default=5, help="passes of each fast method (median reported)")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {}
    with throwaway_database("modeloman_bench_ingest"):
        actor = Actor.system("bench")
        project = key_services.project_save(actor=actor, project=Project(slug="bench", name="bench"))
        agent = key_services.agent_save(actor=actor, agent=Agent(project=project, name="bench-agent"))
        token = key_services.api_key_create(actor=actor, agent=agent, scopes=["telemetry:write"]).token
        principal = authenticate_token(token)
        for model in MODELS:
            policy_services.model_price_save(actor=actor, price=ModelPrice(
                model=model, input_usd_per_mtok=Decimal(1), output_usd_per_mtok=Decimal(2),
                effective_from=timezone.now() - dt.timedelta(days=1)))
        # A global daily cost cap, as production has: every attempt is counted against it.
        policy_services.cap_save(actor=actor, cap=PolicyCap(
            subject_type=SubjectType.GLOBAL, metric=PolicyCap.Metric.COST_USD, window=PolicyCap.Window.DAY,
            limit=Decimal(10**9)))
        items = make_items(args.rows)
        bodies = [json.dumps({"attempts": items[i:i + BATCH]}).encode() for i in range(0, len(items), BATCH)]

        def ours(share: int) -> None:
            for body in bodies[share::args.writers]:
                decoded, batch = decode_items(body, AttemptIn, plural="attempts")
                services.attempts_record(principal=principal, items=decoded, batch=batch)

        def ours_http(share: int) -> None:
            client = Client(HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_HOST="127.0.0.1")
            for body in bodies[share::args.writers]:
                response = client.post("/api/v1/attempts", body, content_type="application/json",
                                       HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)
                if response.status_code != 201:
                    raise RuntimeError(f"the endpoint answered {response.status_code}: {response.content[:300]!r}")

        def bulk(share: int) -> None:
            objects = [as_model(item, principal) for item in items[share::args.writers]]
            with transaction.atomic():
                PromptAttempt.objects.bulk_create(objects, batch_size=BATCH)

        def per_row(share: int) -> None:
            for item in items[share::args.writers]:
                as_model(item, principal).save(force_insert=True)

        def measure(name: str, work: Callable[[int], None]) -> None:
            seconds = timed_pass(work, args.writers)
            rows = count_and_clear()
            if rows != args.rows:
                raise SystemExit(f"{name}: {rows} rows stored, expected {args.rows}")
            rates.setdefault(name, []).append(rows / seconds)

        timed_pass(ours, args.writers)  # warm-up: table and index pages
        count_and_clear()
        for _ in range(args.repeat):  # interleaved, so drift on a noisy machine hits every method alike
            measure(OURS, ours)
            measure(OURS_HTTP, ours_http)
            measure(BULK, bulk)
        measure(PER_ROW, per_row)

    print(f"Prompt-attempt ingest, {args.rows} rows in batches of {BATCH}, {args.writers} writer process(es); "
          "rows counted after every pass")
    for name, samples in rates.items():
        passes = ", ".join(f"{rate:.0f}" for rate in samples)
        print(f"{name:<38} median {statistics.median(samples):>8.0f} rows/s   (passes: {passes})")
    ours_rate, http_rate, bulk_rate, row_rate = (statistics.median(rates[name])
                                                 for name in (OURS, OURS_HTTP, BULK, PER_ROW))
    print(f"ours vs save() per row: {ours_rate / row_rate:.1f}x (target >= 20x); vs bulk_create: "
          f"{ours_rate / bulk_rate:.1f}x (target >= 2.5x); ours {ours_rate:.0f}/s (target >= 50,000/s)")
    print(f"whole request path: {http_rate:.0f}/s, {http_rate / row_rate:.1f}x per-row, "
          f"{http_rate / bulk_rate:.1f}x bulk_create")


if __name__ == "__main__":
    main()
