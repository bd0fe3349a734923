"""gunicorn settings for `make run` and production (see README, Deployment)."""

import glob
import os
from pathlib import Path

bind = os.environ.get("HTTP_ADDR") or "127.0.0.1:8080"  # a --bind on the command line wins (make run, tests)

# Sync workers, one process per core: chosen by measurement on the 2-core VM (docs/benchmarks.md,
# "Worker model"; `bench/http_admission.py --compare ...`, production settings, wrk at 8 connections).
# After issue 10's hot-path work (one transaction per write, serializers built once, one cache round
# trip), on a quiet machine, medians of 3 interleaved rounds of 5 s:
#
#   model (workers x threads)   GET /readyz   POST /api/v1/admissions   admission p50 / p99
#   sync 2                        1856/s          638/s                 11.9 / 21.3 ms
#   sync 3                        1943/s          504/s                 15.6 / 23.7 ms
#   sync 4                        1812/s          471/s                 16.6 / 28.9 ms
#   gthread 2 x 1                 1619/s          648/s                 12.5 / 22.0 ms
#   gthread 2 x 2                 1935/s          564/s                 15.8 / 29.7 ms
#   gthread 4 x 1                 1981/s          548/s                 12.6 / 35.1 ms
#
# Re-measured once admissions ran in one statement (6 interleaved rounds, docs/benchmarks.md, "Sixth
# session"): sync 2 554/s, sync 3 537/s, p99 21.5 / 21.0 ms. Still sync 2.
# And again with the statement prepared (seventh session, a faster host, 4 interleaved rounds): admission
# / readiness 0.58x with sync 2 (838 admissions/s) and 0.56x with sync 3 (873/s, but readiness gains
# more); gthread 2 x 2 was 0.51x before that change (0.53x for sync 2), with the worst tail. Still sync 2.
# On the reference host class (eighth session, half that speed), sync 3 against sync 2: the
# third process works while another waits for its commit's WAL flush (the machine idles 15% during
# admissions with sync 2, ~5% with sync 3), but three processes time-sharing two cores cost each
# request more CPU. Admissions: +11% to +44% in three --compare runs, +1% and +6% (medians of 12
# and 20 paired rounds, two servers alternating); readiness -7% to -17% (-12% paired). Not enough to
# trade reads for, and the admission / readiness ratio would rise mostly because readiness falls.
# Still sync 2; WEB_CONCURRENCY=3 is the knob for a deployment that only takes writes.
# gevent workers (ninth session, paired rounds, worker_connections 4 or 8) fill the same wait inside
# one process: admissions x1.12-1.19, but readiness gains too (keep-alive, which sync lacks), so the
# ratio stays, and admission p99 doubles (35-60 against 22-28 ms). Not adopted. On that faster host,
# `--compare sync:2,sync:3,gthread:2x2` (servers up together, 6 rounds): sync 3 x0.89 admissions and
# x0.96 readiness per round, gthread 2 x 2 x0.97 and x0.74. Still sync 2.
#
# An admission is now mostly Python (~1.3 ms of CPU against ~0.7 ms waiting on PostgreSQL), so a
# second thread in a process mostly waits for the first one's GIL: threads lose on throughput and
# on the tail, and processes beyond the cores add context switches. Sync and gthread 2 x 1 are equal
# on admissions; sync wins because a sync worker accepts a connection only when it is free, so load
# spreads evenly over the workers, while a gthread worker accepts (and keeps alive) connections while
# busy, so two busy connections can share one process while the other idles (seen in batch ingest).
# Sync workers close each connection after its answer; behind Caddy on loopback that costs little, and
# Caddy buffers request bodies (deploy/Caddyfile) so a slow client never holds a worker. The price: a
# sync worker idles during its one Redis round trip (the rate-limit count), so against a server without
# limits, limiting costs 9-14% with sync workers and 4% with gthread 2 x 2; with limits on, as
# deployed, both serve the same admissions and sync has the better tail (bench/ratelimits.py).
# WEB_THREADS > 1 switches to threaded workers (gthread), e.g. for long exports on a bigger host.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "1"))
worker_class = "gthread" if threads > 1 else "sync"
timeout = 30
graceful_timeout = 20
# Recycling bounds a slow leak. At the measured ~330 admissions/s per worker, 10,000 requests meant a
# recycle every ~30 s: each one takes that worker away for its start-up (~0.6 s to load Django) and
# sends its next requests through empty caches (11 statements instead of 5). 200,000 is ~10 minutes
# at full load; the jitter keeps the workers from recycling together.
max_requests = 200_000
max_requests_jitter = 20_000
# Only the local reverse proxy (Caddy) may set X-Forwarded-For / -Proto: gunicorn applies this to
# the scheme; Django applies the same variable to both (apps.gateway.identity).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# Django writes one line per request (modeloman.requests: JSON in production, with the request id
# and key id, never a query string); gunicorn's access log would repeat it, URL and all.
accesslog = None
errorlog = "-"

# Prometheus multiprocess mode (apps/gateway/metrics.py): the workers write their samples under
# PROMETHEUS_MULTIPROC_DIR as group "web"; /metrics merges every process's files.
METRICS_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"] = (
    os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(Path(__file__).resolve().parent.parent / "var" / "metrics"))
os.environ["MODELOMAN_METRICS_GROUP"] = "web"

# Imported here, once, and never inside `child_exit`: that hook runs in the master's SIGCHLD handler,
# which the next worker's exit can interrupt. When the import happened there, on SIGTERM (every
# worker exiting at once) the second call met a half-imported module and the master exited 1
# (tests/observe/test_metrics_processes.py).
from prometheus_client import multiprocess  # noqa: E402  # after PROMETHEUS_MULTIPROC_DIR is set


def on_starting(server):
    """A (re)started server counts from zero: the web group's old files go (grpcserve's stay)."""
    os.makedirs(METRICS_DIR, exist_ok=True)
    for path in glob.glob(os.path.join(METRICS_DIR, "*_web-*.db")):
        os.remove(path)


def child_exit(server, worker):
    """A dead worker's requests-in-progress gauge goes with it; its counters stay in the sums."""
    multiprocess.mark_process_dead(f"web-{worker.pid}", METRICS_DIR)
