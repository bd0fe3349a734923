"""gunicorn settings for `make run` and production (see README, Deployment)."""

import os

# Threaded workers, one process per core, four threads each: chosen by measurement on the 2-core VM
# (docs/benchmarks.md, "Worker model"; `bench/http_admission.py --compare ...`, production settings,
# wrk at 8 connections). The machine was shared with other test runs (load 5-10), so these are
# medians of 8 interleaved rounds of 5 s, and only the ordering is meant, not the absolute rates:
#
#   model (workers x threads)   GET /readyz   POST /api/v1/admissions
#   sync 2                         394/s          92/s
#   sync 3                         230/s          70/s
#   gthread 2 x 2                  622/s          94/s
#   gthread 2 x 4                  682/s         109/s
#   gthread 3 x 2                  583/s          78/s
#
# Threads win because a gthread worker keeps connections alive (sync closes every one, so each
# request pays a new TCP connection, from Caddy too) and overlaps one request's database round trips
# (an admission waits on PostgreSQL for about half its time) with another's Python. More processes
# than cores lose: they only add context switches and connections. Re-measure after the admission
# hot path stops waiting on two commits (issue 10): less waiting favours fewer threads.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = 30
graceful_timeout = 20
max_requests = 10000
max_requests_jitter = 1000
# Only the local reverse proxy (Caddy) may set X-Forwarded-For / -Proto: gunicorn applies this to
# the scheme; Django applies the same variable to both (modeloman.request_context).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = "-"
errorlog = "-"
