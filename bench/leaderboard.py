"""Leaderboard pages over 10M prompt attempts: our pages (selectors over the rollups) and, for
the overview, the same page computed by a raw GROUP BY over prompt_attempts — same view, same
template, same run, same data; only the relation the one board query reads differs.

    .venv/bin/python bench/leaderboard.py [--rows 10000000] [--requests 200] [--baseline-requests 10]

Loads the attempts with COPY into a throwaway database (created, migrated and dropped by the
script), spread over 30 days, 8 projects (6 opted in) each using 4 of 12 models and 3 prompts
of which one to three versions are live at a time; refreshes the rollups as
telemetry_maintenance does (with ~30k benchmark results for the suites boards); then times
every board (models, prompts, suites) and a detail page of each in every window (24h, 7d,
30d) through Django's WSGI handler (test client: everything but the socket) with the page
cache off, so every request runs the selector and renders. The baseline (the overview, each
window) gets fewer requests: each one aggregates millions of rows. All report p50 and p95 of
server time.
"""

import argparse
import datetime as dt
import io
import os
import random
import statistics
import sys
import time
import uuid
import warnings

# Server time of the pages is what is measured: the per-address limit on public reads (600/m)
# would refuse the 201st request from the one test client.
os.environ.setdefault("RATE_LIMITS_ENABLED", "false")

from _setup import throwaway_database  # noqa: E402
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from apps.keys.models import Project
from apps.leaderboard import selectors
from apps.telemetry.rollups import LATENCY_BOUNDS_MS, rollups_refresh

warnings.filterwarnings("ignore", message="No directory at")  # whitenoise: no collected static files here

MODELS = [f"model-{name}" for name in ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
                                        "india", "juliet", "kilo", "lima")]
COLUMNS = ("time, id, project_id, agent_id, model, prompt_name, prompt_version, success, error_code, "
           "input_tokens, output_tokens, latency_ms, cost_usd")
DAYS = 30
LAST = LATENCY_BOUNDS_MS[-1]
HISTOGRAM = ", ".join([f"count(*) FILTER (WHERE latency_ms <= {b}) AS lat_le_{b}" for b in LATENCY_BOUNDS_MS]
                      + [f"count(*) FILTER (WHERE latency_ms > {LAST}) AS lat_gt_{LAST}"])
SUITES = ("suite-math", "suite-code", "suite-tools", "suite-retrieval")
BENCH_COLUMNS = "time, id, project_id, agent_id, suite, model, score, passed, total"
# The baseline's "rollup": the same columns, aggregated from the raw rows on every request
# (per hour for the 24-hour window, per day otherwise).
RAW_BUCKETS = f"""(
    SELECT date_bin(INTERVAL '{{width}}', time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS day, project_id, model,
           prompt_name, prompt_version, count(*) AS attempts, count(*) FILTER (WHERE success) AS successes,
           count(cost_usd) AS priced_attempts, sum(cost_usd) AS cost_usd, {HISTOGRAM}
    FROM prompt_attempts WHERE time >= %(since)s
    GROUP BY 1, 2, 3, 4, 5
)"""  # noqa: S608  # constants only


def load(rows: int, projects: list[int], now: dt.datetime) -> float:
    rng = random.Random(12)  # noqa: S311  # synthetic data
    start = now - dt.timedelta(days=DAYS)
    step = dt.timedelta(days=DAYS) / rows
    chunk = 200_000
    began = time.perf_counter()
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY prompt_attempts ({COLUMNS}) FROM STDIN") as copy:
        buffer = io.StringIO()
        for i in range(rows):
            p = i % len(projects)
            moment = start + step * i
            age_days = (now - moment).days
            model = MODELS[(p * 3 + rng.randrange(4)) % len(MODELS)]
            prompt = f"prompt-{p}-{rng.randrange(3)}"
            version = "v3" if age_days < 10 else "v2" if age_days < 20 else "v1"
            if rng.random() < 0.3 and version != "v1":  # the previous version still gets some traffic
                version = "v2" if version == "v3" else "v1"
            success = rng.random() < 0.75 + 0.02 * (p % 5) + 0.01 * MODELS.index(model) % 7
            latency = int(200 + rng.expovariate(1 / 900))
            buffer.write(f"{moment.isoformat()}\t{i:032x}\t{projects[p]}\t{p + 1}\t{model}\t{prompt}\t{version}\t"
                         f"{'t' if success else 'f'}\t{'' if success else 'timeout'}\t{rng.randrange(200, 4000)}\t"
                         f"{rng.randrange(20, 900)}\t{latency}\t{rng.randrange(10, 5000) / 1e6:.6f}\n")
            if (i + 1) % chunk == 0 or i + 1 == rows:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
                if (i + 1) % 2_000_000 == 0:
                    print(f"  loaded {i + 1:,} rows ({time.perf_counter() - began:.0f} s)", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE prompt_attempts")
    return time.perf_counter() - began


def load_benchmarks(projects: list[int], now: dt.datetime) -> int:
    """Benchmark results for the suites boards: each project runs 4 suites on its 4 models,
    8 times a day for 30 days."""
    rng = random.Random(13)  # noqa: S311  # synthetic data
    buffer, count = io.StringIO(), 0
    for p, project in enumerate(projects):
        for day in range(DAYS):
            for run in range(8):
                moment = now - dt.timedelta(days=day, hours=run * 3, minutes=p)
                for suite in SUITES:
                    for m in range(4):
                        total = 50
                        passed = min(total, int(rng.gauss(30 + 2 * m + p, 5)))
                        buffer.write(f"{moment.isoformat()}\t{uuid.uuid4()}\t{project}\t{p + 1}\t{suite}\t"
                                     f"{MODELS[(p * 3 + m) % len(MODELS)]}\t{passed / total:.4f}\t{passed}\t{total}\n")
                        count += 1
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY benchmarks ({BENCH_COLUMNS}) FROM STDIN") as copy:
        copy.write(buffer.getvalue())
    return count


def timed_requests(client: Client, path: str, count: int) -> list[float]:
    for _ in range(min(3, count)):  # warm-up: connection, template and plan caches
        assert client.get(path).status_code == 200
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200 and b'<th scope="row"' in response.content
    return samples


def figures(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--baseline-requests", type=int, default=10)
    parser.add_argument("--windows", default="24h,7d,30d")
    parser.add_argument("--pages", default="/,/prompts/,/suites/,/models/model-alpha/,/prompts/{project}/prompt-0-0/,"
                        "/suites/suite-math/", help="Timed (ours) in every window; the baseline runs on the first.")
    parser.add_argument("--profile", action="store_true", help="Print a profile of our page instead.")
    args = parser.parse_args()
    windows = args.windows.split(",")

    with throwaway_database("modeloman_bench_leaderboard"):
        projects = []
        for index in range(8):
            project = Project.objects.create(slug=f"bench-{index}", name=f"Bench {index}",
                                             public_name=f"Bench Lab {index}", leaderboard_opt_in=index < 6)
            projects.append(project.pk)
        now = timezone.now()
        print(f"Loading {args.rows:,} attempts with COPY ...", flush=True)
        seconds = load(args.rows, projects, now)
        print(f"  {args.rows:,} rows in {seconds:.0f} s ({args.rows / seconds:,.0f} rows/s)")
        print(f"  {load_benchmarks(projects, now):,} benchmark results")
        began = time.perf_counter()
        rollups_refresh(full=True, retention=dt.timedelta(days=settings.TELEMETRY_RETENTION_DAYS))
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE prompt_attempts_hourly; ANALYZE leaderboard_attempts_daily; "
                           "ANALYZE benchmarks_daily")
            cursor.execute("SELECT (SELECT count(*) FROM prompt_attempts_hourly), "
                           "(SELECT count(*) FROM leaderboard_attempts_daily), (SELECT count(*) FROM benchmarks_daily)")
            hourly, daily, suites = cursor.fetchone()
        print(f"  rollups refreshed in {time.perf_counter() - began:.0f} s: prompt_attempts_hourly {hourly:,} rows, "
              f"leaderboard_attempts_daily {daily:,} rows, benchmarks_daily {suites:,} rows")

        settings.LEADERBOARD_CACHE_SECONDS = 0  # every request runs the selector and renders
        settings.ALLOWED_HOSTS = ["testserver"]
        client = Client()
        if args.profile:
            import cProfile
            import pstats

            timed_requests(client, "/?window=30d", 3)
            profiler = cProfile.Profile()
            profiler.runcall(timed_requests, client, "/?window=30d", 20)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            from django.test.utils import CaptureQueriesContext

            with CaptureQueriesContext(connection) as queries:
                selectors.board(kind="models", window_key="30d")
            with connection.cursor() as cursor:
                for query in queries.captured_queries:
                    cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + query["sql"])
                    print("\n".join(line for (line,) in cursor.fetchall()))
            return 0
        pages = [page.format(project=projects[0]) for page in args.pages.split(",")]
        print(f"\nLeaderboard pages, {args.rows:,} attempts, server time per request, page cache off")
        for window in windows:
            print(f"window {window}:")
            for page in pages:
                path = f"{page}?window={window}"
                ours = figures(timed_requests(client, path, args.requests))
                print(f"  {path:<42} p50 {ours[0]:>7.1f} ms   p95 {ours[1]:>7.1f} ms   (n={args.requests})")
                if page != pages[0]:
                    continue
                original = selectors.WINDOWS[window]
                width = "1 hour" if original.width < dt.timedelta(days=1) else "1 day"
                selectors.WINDOWS[window] = selectors.Window(original.key, original.label, original.length,
                                                             RAW_BUCKETS.format(width=width), "day", original.width)
                try:
                    raw = figures(timed_requests(client, path, args.baseline_requests))
                finally:
                    selectors.WINDOWS[window] = original
                print(f"  {'baseline: same page, raw GROUP BY':<42} p50 {raw[0]:>7.1f} ms   p95 {raw[1]:>7.1f} ms   "
                      f"(n={args.baseline_requests})")
                print(f"  {'speed-up':<42} {raw[0] / ours[0]:.0f}x (p50), {raw[1] / ours[1]:.0f}x (p95)")
        settings.LEADERBOARD_CACHE_SECONDS = 30
        cached = figures(timed_requests(client, pages[0], args.requests))
        print(f"for reference, cached page (30 s cache): p50 {cached[0]:.2f} ms   p95 {cached[1]:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
