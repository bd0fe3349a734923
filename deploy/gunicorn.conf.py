"""gunicorn settings for `make run` and production (see README, Deployment)."""

import glob
import os
from pathlib import Path

# Threaded workers, one process per core, two threads each: chosen by measurement on the 2-core VM
# (docs/benchmarks.md, "Worker model"; `bench/http_admission.py --compare ...`, production settings,
# wrk at 8 connections). The machine was shared with other test runs (load 3-10), so these are
# medians of 12 interleaved rounds of 5 s over three runs; read the ordering, not the rates:
#
#   model (workers x threads)   GET /readyz   POST /api/v1/admissions   admission p99 (per run)
#   sync 2                         394/s          79/s                  141, 194, 185 ms
#   sync 3                         230/s          81/s                  368, 145, 140 ms
#   gthread 2 x 2                  644/s          94/s                  195, 223, 224 ms
#   gthread 2 x 4                  714/s         109/s                  427, 213, 241 ms
#   gthread 3 x 2 (8 rounds)       583/s          78/s                  326, 182 ms
#
# Threads win on throughput because a gthread worker keeps connections alive (sync closes every
# one, so each request pays a new TCP connection, from Caddy too) and overlaps one request's waits
# on PostgreSQL (about half an admission today) with another's Python; more processes than cores
# only add context switches. Four threads gain little over two (within the noise) and have the
# worse tail in every run: the threads of a process share one GIL. Re-measure after the admission
# hot path stops waiting on two commits (issue 10): less waiting favours fewer threads still.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "2"))
timeout = 30
graceful_timeout = 20
max_requests = 10000
max_requests_jitter = 1000
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


def on_starting(server):
    """A (re)started server counts from zero: the web group's old files go (grpcserve's stay)."""
    os.makedirs(METRICS_DIR, exist_ok=True)
    for path in glob.glob(os.path.join(METRICS_DIR, "*_web-*.db")):
        os.remove(path)


def child_exit(server, worker):
    """A dead worker's requests-in-progress gauge goes with it; its counters stay in the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(f"web-{worker.pid}", METRICS_DIR)
