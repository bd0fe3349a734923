"""Prometheus metrics: every metric the service exports is defined here, once, and recorded
through the small functions below (callers never touch a metric object).

Multiprocess mode (prometheus_client): every process writes its samples to memory-mapped files
in METRICS_DIR (env PROMETHEUS_MULTIPROC_DIR) and `/metrics` merges them, so a scrape sees the
sum over every gunicorn worker, the gRPC process and finished management commands. The files of
a process are named after its group and pid (`counter_web-1234.db`); each group cleans its own
files when it starts (`clean_group`): gunicorn's master for `web` (deploy/gunicorn.conf.py, which
also drops dead workers' live gauges), `grpcserve` for `grpc` (with GRPC_PROCESSES > 1 its supervisor,
which also drops its dead server processes' live gauges; a server process never cleans). A short-lived process (`cmd`: a
management command such as telemetry_maintenance) folds its counters into one archive file when
it exits, so its counts survive it without leaving a file per run behind.

Labels are bounded: operation names come from the access table or URL names, statuses are HTTP
codes or gRPC code names, reasons are stable codes without ids (`cap_exceeded:17` counts as
`cap_exceeded`). No key id is ever a label; the admin console's list of rate-limited keys is
kept in the shared cache instead (`recently_rate_limited_keys`).

METRICS_ENABLED=false turns every function here into a no-op (the benchmark's baseline).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import fcntl
import glob
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable

from django.conf import settings
from django.core.cache import cache
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ENABLED: bool = settings.METRICS_ENABLED
DIRECTORY: str = str(settings.METRICS_DIR) if settings.METRICS_DIR else ""
GROUP_ENV = "MODELOMAN_METRICS_GROUP"


def process_group() -> str:
    """`web` (gunicorn, set by its config), `grpc` (grpcserve), or `cmd` (anything else)."""
    if os.environ.get(GROUP_ENV):
        return os.environ[GROUP_ENV]
    return "grpc" if sys.argv[1:2] == ["grpcserve"] else "cmd"


_GROUP = process_group()
_identity: list = [None, ""]  # (pid, "group-pid"): called on every sample write, so cached


def _process_identifier() -> str:
    pid = os.getpid()
    if _identity[0] != pid:  # a forked gunicorn worker gets its own files
        _identity[:] = [pid, f"{_GROUP}-{pid}"]
    return _identity[1]


if DIRECTORY:
    os.makedirs(DIRECTORY, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = DIRECTORY  # where prometheus_client opens its files
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_identifier)

_registry = CollectorRegistry()  # single-process mode only; multiprocess scrapes read the files

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter("modeloman_requests", "Requests served, by transport, operation and status.",
                   ["transport", "operation", "status"], registry=_registry)
REQUEST_SECONDS = Histogram("modeloman_request_duration_seconds", "Time to serve a request, in seconds.",
                            ["transport", "operation"], buckets=LATENCY_BUCKETS, registry=_registry)
IN_PROGRESS = Gauge("modeloman_requests_in_progress", "Requests being served now.", ["transport"],
                    multiprocess_mode="livesum", registry=_registry)
ADMISSIONS = Counter("modeloman_admission_decisions", "Admission decisions, by outcome and reason "
                     "(outcome allowed: reason none; denied / would_deny: one count per reason).",
                     ["outcome", "reason"], registry=_registry)
AUTH_FAILURES = Counter("modeloman_auth_failures", "Presented API keys refused, by reason code.",
                        ["reason"], registry=_registry)
RATE_LIMIT_REJECTIONS = Counter("modeloman_rate_limit_rejections", "Requests refused by a rate limit.",
                                ["operation"], registry=_registry)
RATE_LIMIT_FAIL_OPEN = Counter("modeloman_rate_limit_fail_open", "Requests let through unlimited because "
                               "the shared cache was unreachable (public reads, health).", registry=_registry)
RATE_LIMIT_FAIL_CLOSED = Counter("modeloman_rate_limit_fail_closed", "Requests refused (503) because the "
                                 "shared cache was unreachable (writes).", registry=_registry)
IDEMPOTENCY_REPLAYS = Counter("modeloman_idempotency_replays", "Writes answered from a stored response.",
                              ["operation"], registry=_registry)
IDEMPOTENCY_CONFLICTS = Counter("modeloman_idempotency_conflicts", "Writes refused for their idempotency key "
                                "(idempotency_in_flight 409, idempotency_key_reused 422).",
                                ["operation", "code"], registry=_registry)
INGEST_ROWS = Counter("modeloman_ingest_rows", "Telemetry rows committed, by table.", ["table"],
                      registry=_registry)
RESERVATIONS_EXPIRED = Counter("modeloman_reservations_expired", "Reservations released because they expired.",
                               registry=_registry)


# --- recording --------------------------------------------------------------------------------------


def request_started(transport: str) -> None:
    if ENABLED:
        IN_PROGRESS.labels(transport).inc()


def request_finished(*, transport: str, operation: str, status: str | int, seconds: float) -> None:
    if ENABLED:
        IN_PROGRESS.labels(transport).dec()
        REQUESTS.labels(transport, operation, str(status)).inc()
        REQUEST_SECONDS.labels(transport, operation).observe(seconds)


def reason_family(reason: str) -> str:
    """`cap_exceeded:17` → `cap_exceeded`: ids never become label values."""
    return reason.partition(":")[0]


def admission_decided(*, allowed: bool, reasons: Iterable[str], dry_run_would_deny: Iterable[str]) -> None:
    if not ENABLED:
        return
    if allowed:
        ADMISSIONS.labels("allowed", "none").inc()
    for reason in {reason_family(r) for r in reasons}:
        ADMISSIONS.labels("denied", reason).inc()
    for reason in {reason_family(r) for r in dry_run_would_deny}:
        ADMISSIONS.labels("would_deny", reason).inc()


def auth_failed(reason: str) -> None:
    if ENABLED:
        AUTH_FAILURES.labels(reason).inc()


def rate_limit_rejected(op: str, *, key_id: str | None = None) -> None:
    """A request over its rate limit. With `key_id` (authenticated calls) the key is also noted
    for the admin console's "rate-limited keys" (at most every few seconds per key and process)."""
    if not ENABLED:
        return
    RATE_LIMIT_REJECTIONS.labels(op or "unknown").inc()
    if key_id:
        _note_rate_limited_key(key_id)


def rate_limit_fail_open() -> None:
    if ENABLED:
        RATE_LIMIT_FAIL_OPEN.inc()


def rate_limit_fail_closed() -> None:
    if ENABLED:
        RATE_LIMIT_FAIL_CLOSED.inc()


def idempotency_replayed(op: str) -> None:
    if ENABLED:
        IDEMPOTENCY_REPLAYS.labels(op).inc()


def idempotency_conflict(op: str, code: str) -> None:
    if ENABLED:
        IDEMPOTENCY_CONFLICTS.labels(op, code).inc()


def ingest_rows(table: str, count: int) -> None:
    """Call on commit: rows of a rolled-back batch were never ingested."""
    if ENABLED and count:
        INGEST_ROWS.labels(table).inc(count)


def reservations_expired(count: int) -> None:
    if ENABLED and count:
        RESERVATIONS_EXPIRED.inc(count)


# --- rate-limited keys, for the admin console ------------------------------------------------------------

RATE_LIMITED_KEYS = "metrics:rate-limited-keys"  # a sorted set: key id → last refusal (unix time)
RATE_LIMITED_WINDOW = dt.timedelta(hours=1)
_NOTE_EVERY_SECONDS = 5.0
_noted: dict[str, float] = {}
_local_keys: dict[str, float] = {}  # without Redis (development): this process's own refusals
_noted_lock = threading.Lock()


def _redis():
    """The shared cache's Redis client, or None when the cache is not Redis (development)."""
    client = getattr(cache, "_cache", None)
    get_client = getattr(client, "get_client", None)
    return get_client(RATE_LIMITED_KEYS, write=True) if get_client else None


def _note_rate_limited_key(key_id: str) -> None:
    now = time.time()
    with _noted_lock:
        if now - _noted.get(key_id, 0.0) < _NOTE_EVERY_SECONDS:
            return
        if len(_noted) > 10_000:
            _noted.clear()
        _noted[key_id] = now
    try:
        client = _redis()
        if client is None:
            _local_keys[key_id] = now
            return
        horizon = now - RATE_LIMITED_WINDOW.total_seconds()
        with client.pipeline(transaction=False) as pipe:
            pipe.zadd(RATE_LIMITED_KEYS, {key_id: now}).zremrangebyscore(RATE_LIMITED_KEYS, 0, horizon)
            pipe.expire(RATE_LIMITED_KEYS, int(RATE_LIMITED_WINDOW.total_seconds()))
            pipe.execute()
    except Exception:  # noqa: BLE001  # a console hint must never fail the request being refused
        logger.debug("could not note a rate-limited key", exc_info=True)


def recently_rate_limited_keys(*, limit: int = 20) -> list[tuple[str, dt.datetime]]:
    """Key ids refused by a rate limit within the last hour, latest first, with the last refusal."""
    horizon = time.time() - RATE_LIMITED_WINDOW.total_seconds()
    client = _redis()
    if client is None:
        rows = sorted(((k, t) for k, t in _local_keys.items() if t >= horizon), key=lambda kt: -kt[1])[:limit]
    else:
        rows = [(k.decode() if isinstance(k, bytes) else k, t)
                for k, t in client.zrevrangebyscore(RATE_LIMITED_KEYS, "+inf", horizon, start=0, num=limit,
                                                    withscores=True)]
    return [(key, dt.datetime.fromtimestamp(t, dt.UTC)) for key, t in rows]


# --- exposition and the files' life cycle -----------------------------------------------------------------


def exposition() -> bytes:
    """The Prometheus text format: every process's samples merged (or this process's alone)."""
    if not DIRECTORY:
        return generate_latest(_registry)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=DIRECTORY)
    return generate_latest(registry)


def clean_group(directory: str, group: str) -> None:
    """Remove a process group's files (but the calling process's own): a restarted server starts its
    counters from zero (Prometheus reads that as a counter reset), and the files of its dead
    processes do not pile up."""
    own = f"_{group}-{os.getpid()}.db"
    for path in glob.glob(os.path.join(directory, f"*_{group}-*.db")):
        if not path.endswith(own):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


def process_exited(group: str, pid: int) -> None:
    """A server process of `group` ended: its live gauges (requests in progress) go with it; its
    counters stay in the sums."""
    if DIRECTORY:
        mark_process_dead(f"{group}-{pid}", DIRECTORY)


def _fold_into_archive() -> None:
    """At a short-lived process's exit: add its counters and histograms to the `cmd-archive` files
    and remove its own, under a lock (two commands may end at once)."""
    own = _identity[1] or _process_identifier()
    if not os.path.isdir(DIRECTORY):  # removed already (a test run's temporary directory)
        return
    with open(os.path.join(DIRECTORY, ".fold.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for kind in ("counter", "histogram"):
            mine = glob.glob(os.path.join(DIRECTORY, f"{kind}_{own}.db"))
            if not mine:
                continue
            archive = os.path.join(DIRECTORY, f"{kind}_{_GROUP}-archive.db")
            merged = MultiProcessCollector.merge([*mine, *glob.glob(archive)], accumulate=False)
            fresh = archive + ".new"
            with contextlib.suppress(FileNotFoundError):
                os.remove(fresh)
            out = MmapedDict(fresh)
            try:
                for metric in merged:
                    for sample in metric.samples:
                        key = mmap_key(metric.name, sample.name, list(sample.labels), list(sample.labels.values()),
                                       metric.documentation)
                        out.write_value(key, sample.value, 0.0)
            finally:
                out.close()
            os.replace(fresh, archive)
            for path in mine:
                os.remove(path)


if DIRECTORY and _GROUP == "cmd":
    atexit.register(_fold_into_archive)

