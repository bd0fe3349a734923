"""gunicorn settings for `make run` and production (see README, Deployment)."""

import glob
import os
from pathlib import Path

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "1"))
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
