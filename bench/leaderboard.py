"""Leaderboard overview over 10M prompt attempts: our page (selectors over the rollups) vs the
same page computed by a raw GROUP BY over prompt_attempts — same view, same template, same
run, same data; only the relation the one board query reads differs.

    .venv/bin/python bench/leaderboard.py [--rows 10000000] [--requests 200] [--baseline-requests 10]

Loads the attempts with COPY into a throwaway database (created, migrated and dropped by the
script), spread over 30 days, 8 projects (6 opted in) each using 4 of 12 models and 3 prompts
of which one to three versions are live at a time; refreshes the rollups as
telemetry_maintenance does; then times GET / through Django's WSGI handler (test client:
everything but the socket) with the page cache off, so every request runs the selector and
renders. The baseline gets fewer requests (each one aggregates millions of rows); both
report p50 and p95 of server time.
"""

import argparse
import datetime as dt
import io
import random
import statistics
import sys
import time
import warnings

from _setup import throwaway_database
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
# The baseline's "rollup": the same columns, aggregated from the raw rows on every request.
RAW_DAILY = f"""(
    SELECT date_bin(INTERVAL '1 day', time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS day, project_id, model,
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
    parser.add_argument("--windows", default="7d,30d")
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
        began = time.perf_counter()
        rollups_refresh(full=True, retention=dt.timedelta(days=settings.TELEMETRY_RETENTION_DAYS))
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE prompt_attempts_hourly; ANALYZE leaderboard_attempts_daily")
            cursor.execute("SELECT (SELECT count(*) FROM prompt_attempts_hourly), "
                           "(SELECT count(*) FROM leaderboard_attempts_daily)")
            hourly, daily = cursor.fetchone()
        print(f"  rollups refreshed in {time.perf_counter() - began:.0f} s: prompt_attempts_hourly {hourly:,} rows, "
              f"leaderboard_attempts_daily {daily:,} rows")

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
        print(f"\nLeaderboard overview (GET /), {args.rows:,} attempts, server time per request, page cache off")
        for window in windows:
            path = f"/?window={window}"
            ours = figures(timed_requests(client, path, args.requests))
            original = selectors.WINDOWS[window]
            selectors.WINDOWS[window] = selectors.Window(original.key, original.label, original.length, RAW_DAILY,
                                                         "day", dt.timedelta(days=1))
            try:
                raw = figures(timed_requests(client, path, args.baseline_requests))
            finally:
                selectors.WINDOWS[window] = original
            print(f"window {window}:")
            print(f"  ours: rollups                     p50 {ours[0]:>9.1f} ms   p95 {ours[1]:>9.1f} ms   "
                  f"(n={args.requests})")
            print(f"  baseline: raw GROUP BY            p50 {raw[0]:>9.1f} ms   p95 {raw[1]:>9.1f} ms   "
                  f"(n={args.baseline_requests})")
            print(f"  speed-up: {raw[0] / ours[0]:.0f}x (p50), {raw[1] / ours[1]:.0f}x (p95)")
        settings.LEADERBOARD_CACHE_SECONDS = 30
        cached = figures(timed_requests(client, "/", args.requests))
        print(f"for reference, cached page (30 s cache): p50 {cached[0]:.2f} ms   p95 {cached[1]:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
