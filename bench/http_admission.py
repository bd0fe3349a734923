"""The agent's hot path over the wire: admission and batch ingest through a real gunicorn with
production settings on loopback, driven by wrk (a separate C process), same run, same data.

    make bench-http      (or: .venv/bin/python bench/http_admission.py [--seconds 5] [--rounds 3])
    .venv/bin/python bench/http_admission.py --compare sync:2,sync:4,gthread:2x2   (worker models: all
        servers up at once, wrk alternating between them; ratios per round against the first model)

Needs wrk (`apt-get install -y wrk`) and REDIS_URL (readiness and the shared cache, as in
production); DATABASE_URL names a server where this user may create databases (unset: the embedded
one under var/, as `make run`). The run creates its own database, migrates it and drops it.

Prints, per endpoint, the median over interleaved rounds (the machine is shared and noisy) of:
GET /readyz (one query and one cache round trip through the same stack: the ceiling for a request
that touches the database), GET /api/v1/whoami, and POST /api/v1/admissions with one reserved cost
cap and one request cap (limits far above what a run uses: nothing is denied, which the script
checks), each at 8 connections, with the CPU each side (workers, PostgreSQL, Redis; from /proc)
spent per answer of readiness and admission, and the time the cores spent idle per answer; then
1,000-attempt bodies to POST /api/v1/attempts over one connection per request slot of the server
(workers x threads, or --ingest-connections) next to the in-process batch path of bench/ingest.py
with 2 writer processes (decode + cost + COPY, no HTTP), rows counted afterwards.
"""

import os
import secrets
import sys

# This process (seeding, the in-process baseline) and the server run production settings with
# throwaway secrets: the database is created for this run and dropped after it. Plain HTTP on
# loopback, so no HTTPS redirect or HSTS.
os.environ.update(
    DJANGO_SETTINGS_MODULE="modeloman.settings.production", SECRET_KEY=secrets.token_urlsafe(60),
    KEY_PEPPER=secrets.token_urlsafe(40), KEY_PEPPER_PREVIOUS="", REQUEST_SIGNING_KEY=secrets.token_urlsafe(40),
    SECURE_SSL_REDIRECT="false",
    # Rate limits on (their cost is part of the path) but far above the load: counted, never refused.
    RATE_LIMIT_MUTATION="100000000/m", RATE_LIMIT_GET="100000000/m",
    SECURE_HSTS_SECONDS="0", ALLOWED_HOSTS="127.0.0.1", DEBUG="false",
)
if not os.environ.get("REDIS_URL"):
    sys.exit("bench/http_admission.py needs REDIS_URL: production settings require the shared cache.")
if not os.environ.get("DATABASE_URL"):  # as `make run`: the embedded server under var/
    from pathlib import Path as _Path

    sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))
    from _http import database_url as _database_url

    from modeloman.embedded_db import embedded_database_settings

    _var = _Path(__file__).resolve().parent.parent / "var"
    os.environ["DATABASE_URL"] = _database_url(embedded_database_settings(_var))

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from decimal import Decimal  # noqa: E402
from pathlib import Path  # noqa: E402

from _http import (  # noqa: E402
    WorkerModel,
    WrkResult,
    cpu_by_side,
    cpu_medians,
    cpu_per_answer,
    database_url,
    deployed_model,
    gunicorn_server,
    require_wrk,
    wrk,
)
from _setup import throwaway_database  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.utils import timezone  # noqa: E402
from ingest import BATCH, MODELS, count_and_clear, make_items, timed_pass  # noqa: E402

from apps.audit.services import Actor  # noqa: E402
from apps.gateway.auth import authenticate_token  # noqa: E402
from apps.keys import services as key_services  # noqa: E402
from apps.keys.models import Agent, Project  # noqa: E402
from apps.policy import services as policy_services  # noqa: E402
from apps.policy.models import AdmissionDecision, ModelPrice, PolicyCap, Reservation  # noqa: E402
from apps.telemetry import services as telemetry_services  # noqa: E402
from apps.telemetry.validation import AttemptIn, decode_items  # noqa: E402

ADMISSION_MODEL = "bench-model"
CONNECTIONS = 8
INGEST_WRITERS = 2  # writer processes in-process: one per core, as the server has one worker per core
# Connections over HTTP (--ingest-connections): by default one per request slot of the server (workers x
# threads), so that both workers always have a batch. With only 2 keep-alive connections, both are often
# accepted by the same worker (the kernel hands each connection to whichever worker accepts first), and
# then one process serves both batches under one GIL while the other idles: 2 is kept as an option.
IN_PROCESS_BATCHES = 20  # per writer and pass


def seed() -> str:
    """A project, an agent and its key; prices; one enforced cost cap and one request cap."""
    actor = Actor.system("bench")
    project = key_services.project_save(actor=actor, project=Project(slug="bench", name="bench"))
    agent = key_services.agent_save(actor=actor, agent=Agent(project=project, name="bench-agent"))
    token = key_services.api_key_create(actor=actor, agent=agent, scopes=["tasks:write", "telemetry:write"]).token
    for model in (ADMISSION_MODEL, *MODELS):
        policy_services.model_price_save(actor=actor, price=ModelPrice(
            model=model, input_usd_per_mtok=Decimal(1), output_usd_per_mtok=Decimal(2),
            effective_from=timezone.now() - dt.timedelta(days=1)))
    policy_services.cap_save(actor=actor, cap=PolicyCap(subject_type="global", metric="cost_usd", window="day",
                                                        limit=Decimal(10**9)))
    policy_services.cap_save(actor=actor, cap=PolicyCap(subject_type="agent", agent=agent, metric="requests",
                                                        window="minute", limit=Decimal(10**9)))
    return token


class Endpoints:
    """The requests the benchmark sends, with their bodies on disk for wrk."""

    def __init__(self, base: str, token: str, workdir: Path, *, ingest_connections: int = INGEST_WRITERS) -> None:
        self.base = base
        self.ingest_connections = ingest_connections
        self.auth = {"Authorization": f"Bearer {token}"}
        self.admission_body = workdir / "admission.json"
        self.admission_body.write_text(json.dumps({"model": ADMISSION_MODEL, "estimated_input_tokens": 100,
                                                   "estimated_output_tokens": 50}))
        self.batch = json.dumps({"attempts": make_items(BATCH)}).encode()
        self.batch_body = workdir / "attempts.json"
        self.batch_body.write_bytes(self.batch)

    def readyz(self, seconds: float) -> WrkResult:
        return wrk(f"{self.base}/readyz", seconds=seconds, connections=CONNECTIONS)

    def whoami(self, seconds: float) -> WrkResult:
        return wrk(f"{self.base}/api/v1/whoami", seconds=seconds, connections=CONNECTIONS, headers=self.auth)

    def admission(self, seconds: float) -> WrkResult:
        return wrk(f"{self.base}/api/v1/admissions", seconds=seconds, connections=CONNECTIONS, method="POST",
                   body=self.admission_body, idempotent=True,
                   headers={**self.auth, "Content-Type": "application/json"})

    def attempts(self, seconds: float) -> WrkResult:
        return wrk(f"{self.base}/api/v1/attempts", seconds=seconds, connections=self.ingest_connections, method="POST",
                   body=self.batch_body, idempotent=True, timeout="30s",
                   headers={**self.auth, "Content-Type": "application/json"})


def checked(result: WrkResult, what: str, *, tolerated: float = 0.0) -> WrkResult:
    """Fail on any error, or for readiness more than `tolerated` of the answers: an overloaded
    shared machine can push a check past the cache's 0.5 s timeout (503), which is the server's
    honest answer, not the harness failing; such answers are not counted in the rate."""
    if not result.requests or result.error_count > tolerated * result.requests:
        raise SystemExit(f"{what}: errors {result.errors} in {result.requests} requests (status: non-2xx answers)")
    if result.errors:
        print(f"  note: {what}: errors {result.errors} in {result.requests} requests", file=sys.stderr)
    return result


def ingest_over_http(endpoints: Endpoints, seconds: float) -> float:
    """Attempts/s over HTTP; the rows stored must match the 201s (plus requests cut off at the end)."""
    result = checked(endpoints.attempts(seconds), "POST /api/v1/attempts")
    time.sleep(1.0)  # let requests in flight when wrk stopped finish before counting
    rows = count_and_clear()
    expected = result.requests * BATCH
    if not expected <= rows <= expected + endpoints.ingest_connections * BATCH:
        raise SystemExit(f"attempts over HTTP: {rows} rows stored for {result.requests} accepted batches")
    return expected / result.seconds


def ingest_in_process(body: bytes, token: str) -> float:
    """Attempts/s of bench/ingest.py's batch path (decode + cost + COPY) with the same body."""
    principal = authenticate_token(token)

    def work(_share: int) -> None:
        for _ in range(IN_PROCESS_BATCHES):
            decoded, batch = decode_items(body, AttemptIn, plural="attempts")
            telemetry_services.attempts_record(principal=principal, items=decoded, batch=batch)

    seconds = timed_pass(work, INGEST_WRITERS)
    rows, expected = count_and_clear(), INGEST_WRITERS * IN_PROCESS_BATCHES * BATCH
    if rows != expected:
        raise SystemExit(f"in-process ingest: {rows} rows stored, expected {expected}")
    return rows / seconds


def with_cpu(run, samples: list[dict[str, float]]) -> WrkResult:
    """`run()`'s wrk result; the CPU per answer of each side during it is appended to `samples`."""
    before = cpu_by_side()
    result = run()
    per_answer = cpu_per_answer(before, cpu_by_side(), result.requests)
    if per_answer is not None:
        samples.append(per_answer)
    return result


def fmt(result_list: list[WrkResult]) -> str:
    rate = statistics.median(r.rate for r in result_list)
    p50 = statistics.median(r.p50_ms for r in result_list)
    p99 = statistics.median(r.p99_ms for r in result_list)
    rounds = ", ".join(f"{r.rate:.0f}" for r in result_list)
    return f"{rate:>7.0f}/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   (rounds: {rounds})"


def median_rate(result_list: list[WrkResult]) -> float:
    return statistics.median(r.rate for r in result_list)


def full_run(args, token: str, env: dict[str, str], workdir: Path) -> None:
    model = WorkerModel.parse(args.model) if args.model else deployed_model()
    results: dict[str, list[WrkResult]] = {"readyz": [], "whoami": [], "admission": []}
    http_ingest: list[float] = []
    local_ingest: list[float] = []
    cpu: dict[str, list[dict[str, float]]] = {"readyz": [], "admission": []}
    with gunicorn_server(app="modeloman.wsgi:application", model=model, env=env) as base:
        ingest_connections = args.ingest_connections or model.workers * model.threads
        endpoints = Endpoints(base, token, workdir, ingest_connections=ingest_connections)
        # Warm-up: every worker connects, fills its caches and pages in the code paths.
        endpoints.readyz(args.warmup)  # warm-ups: figures and errors ignored
        endpoints.whoami(args.warmup)
        checked(endpoints.admission(args.warmup), "admission warm-up")
        ingest_over_http(endpoints, args.warmup)
        ingest_in_process(endpoints.batch, token)
        admissions_sent = 0
        for _ in range(args.rounds):  # interleaved: drift on a shared machine hits every figure alike
            results["readyz"].append(with_cpu(lambda: checked(endpoints.readyz(args.seconds), "GET /readyz",
                                                              tolerated=0.01), cpu["readyz"]))
            results["whoami"].append(checked(endpoints.whoami(args.seconds), "GET /api/v1/whoami"))
            admission = with_cpu(lambda: checked(endpoints.admission(args.seconds), "POST /api/v1/admissions"),
                                 cpu["admission"])
            results["admission"].append(admission)
            admissions_sent += admission.requests
            http_ingest.append(ingest_over_http(endpoints, args.seconds))
            local_ingest.append(ingest_in_process(endpoints.batch, token))
        time.sleep(0.5)
        denied = AdmissionDecision.objects.count()
        reserved = Reservation.objects.count()
        if denied or reserved < admissions_sent:
            raise SystemExit(f"admissions: {denied} denied, {reserved} reservations for {admissions_sent} answers")

    print(f"Over the wire: gunicorn {model} (deploy/gunicorn.conf.py), production settings, loopback; "
          f"wrk, {CONNECTIONS} connections; medians of {args.rounds} interleaved rounds of {args.seconds:g} s")
    print(f"GET  /readyz                  {fmt(results['readyz'])}")
    print(f"GET  /api/v1/whoami           {fmt(results['whoami'])}")
    print(f"POST /api/v1/admissions       {fmt(results['admission'])}")
    ratio = median_rate(results["admission"]) / median_rate(results["readyz"])
    p99 = statistics.median(r.p99_ms for r in results["admission"])
    print(f"admission / readyz: {ratio:.2f}x (target >= 0.6x); admission p99 at {CONNECTIONS} connections: "
          f"{p99:.1f} ms (target <= 20 ms); {reserved} reservations, {denied} denied")
    if cpu["readyz"] and cpu["admission"]:
        print("CPU per answer, ms (medians of the rounds; /proc, load generator not counted; idle: all cores): "
              f"readyz {cpu_medians(cpu['readyz'])}; admission {cpu_medians(cpu['admission'])}")
    print(f"Batch ingest, {BATCH}-attempt bodies, {ingest_connections} connections over HTTP to {model} / "
          f"{INGEST_WRITERS} writer processes in-process; rows counted after every pass")
    for label, rates in (("POST /api/v1/attempts (HTTP)", http_ingest),
                         ("in-process batch path (ingest.py)", local_ingest)):
        passes = ", ".join(f"{rate:.0f}" for rate in rates)
        print(f"{label:<34} {statistics.median(rates):>7.0f} attempts/s   (rounds: {passes})")
    print(f"ingest HTTP / in-process: {statistics.median(http_ingest) / statistics.median(local_ingest):.2f}x "
          "(target >= 0.8x)")


def compare(args, token: str, env: dict[str, str], workdir: Path) -> None:
    """readyz and admission for each worker model. Every model's server is up for the whole run, on
    the same database, and wrk alternates between them (order rotated each round): a drift of the
    host hits each round's models alike, so the per-round ratio against the first model is the
    figure to read."""
    models = [WorkerModel.parse(text) for text in args.compare.split(",")]
    results: dict[WorkerModel, dict[str, list[WrkResult]]] = {m: {"readyz": [], "admission": []} for m in models}
    with ExitStack() as servers:
        endpoints = {}
        for model in models:
            base = servers.enter_context(gunicorn_server(app="modeloman.wsgi:application", model=model, env=env))
            endpoints[model] = Endpoints(base, token, workdir)
            endpoints[model].readyz(args.warmup)
            checked(endpoints[model].admission(args.warmup), "admission warm-up")
        for round_number in range(args.rounds):
            shift = round_number % len(models)
            for model in models[shift:] + models[:shift]:
                results[model]["admission"].append(checked(endpoints[model].admission(args.seconds), "admission"))
                results[model]["readyz"].append(checked(endpoints[model].readyz(args.seconds), "GET /readyz",
                                                        tolerated=0.01))
            print(f"  round {round_number + 1}: " + ", ".join(
                f"{model} readyz {results[model]['readyz'][-1].rate:.0f}/s admission "
                f"{results[model]['admission'][-1].rate:.0f}/s" for model in models), flush=True)
    if AdmissionDecision.objects.exists():
        raise SystemExit("some admissions were denied: the caps' limits are too low for this run")
    print(f"Worker models, all servers up, wrk {CONNECTIONS} connections alternating between them; medians of "
          f"{args.rounds} rounds of {args.seconds:g} s (production settings, loopback)")
    print(f"{'model':<12} {'readyz/s':>9} {'admit/s':>8} {'ratio':>6} {'admit p50':>10} {'admit p99':>10} "
          f"{'readyz p99':>11}   per round against {models[0]}: admissions, readyz")
    first = results[models[0]]
    for model, figures in results.items():
        readyz, admission = median_rate(figures["readyz"]), median_rate(figures["admission"])
        against = "" if model == models[0] else "   " + ", ".join(
            per_round(figures[name], first[name]) for name in ("admission", "readyz"))
        print(f"{model!s:<12} {readyz:>9.0f} {admission:>8.0f} {admission / readyz:>6.2f} "
              f"{statistics.median(r.p50_ms for r in figures['admission']):>7.1f} ms "
              f"{statistics.median(r.p99_ms for r in figures['admission']):>7.1f} ms "
              f"{statistics.median(r.p99_ms for r in figures['readyz']):>8.1f} ms{against}")


def per_round(these: list[WrkResult], baseline: list[WrkResult]) -> str:
    """`x1.06 (0.81-1.32)`: the median and range of the rounds' rate ratios."""
    ratios = [mine.rate / theirs.rate for mine, theirs in zip(these, baseline, strict=True)]
    return f"x{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured duration of each wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians reported)")
    parser.add_argument("--model", help="gunicorn worker model, e.g. sync:2 or gthread:2x4 "
                                        "(default: deploy/gunicorn.conf.py)")
    parser.add_argument("--compare", help="comma-separated worker models to compare on readyz and admission")
    parser.add_argument("--ingest-connections", type=int,
                        help="connections sending 1,000-attempt batches (default: the server's workers x threads)")
    parser.add_argument("--database", default="modeloman_bench_http", help="throwaway database (dropped first)")
    args = parser.parse_args()
    require_wrk()
    with throwaway_database(args.database), tempfile.TemporaryDirectory(prefix="bench-http-") as workdir:
        token = seed()
        env = {**os.environ, "DATABASE_URL": database_url(connection.settings_dict)}
        connections.close_all()  # nothing of ours is shared with the server
        (compare if args.compare else full_run)(args, token, env, Path(workdir))


if __name__ == "__main__":
    main()
