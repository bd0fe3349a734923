"""The cost of rate limiting on the admission path, over the wire: the same gunicorn app with
RATE_LIMITS_ENABLED=true and =false, same data, same run, driven by wrk from another process.

    make bench        (or: .venv/bin/python bench/ratelimits.py [--seconds 10] [--rounds 3])

Both servers run production settings on a throwaway database, with limits far above the offered
load (so every call is counted and none refused). With limits on, each admission also does the
failed-authentication check and the write-limit count in Redis (REDIS_URL). Rounds alternate
between the two servers so that background noise on the machine falls on both alike; the figure
is the median round.
"""

import argparse
import dataclasses
import datetime as dt
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path

from _http import WrkResult, database_url, deployed_model, gunicorn_server, require_wrk, wrk
from _setup import throwaway_database
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from apps.audit.services import Actor
from apps.keys import services as key_services
from apps.keys.models import Agent, Project
from apps.policy import services as policy_services
from apps.policy.models import ModelPrice, PolicyCap
from modeloman.invalidation import listener

MODEL = "bench-model"


def server_env(*, limits: bool) -> dict[str, str]:
    """Production settings against the throwaway database, rate limits on or off (when on, far above
    the load: every call is counted, none refused)."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "modeloman.settings.production",
        "DATABASE_URL": database_url(connection.settings_dict),
        "SECRET_KEY": secrets.token_urlsafe(60),
        "KEY_PEPPER": settings.KEY_PEPPER,
        "REQUEST_SIGNING_KEY": secrets.token_urlsafe(40),  # production refuses to start without one
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "RATE_LIMITS_ENABLED": "true" if limits else "false",
        "RATE_LIMIT_MUTATION": "100000000/m",
        "RATE_LIMIT_GET": "100000000/m",
        "LOG_LEVEL": "WARNING",
    }


def admissions(base: str, token: str, body: Path, *, seconds: float, connections: int) -> WrkResult:
    """One wrk run of admissions, each with its own Idempotency-Key; fails on any error."""
    result = wrk(f"{base}/api/v1/admissions", seconds=seconds, connections=connections, method="POST", body=body,
                 idempotent=True, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    if not result.requests or result.error_count:
        raise SystemExit(f"admissions: errors {result.errors} in {result.requests} requests")
    return result


def limiter_cost(token: str, calls: int = 5000) -> tuple[float, float]:
    """Median µs of what rate limiting adds to one admission in this process: the write-limit count
    (one Redis round trip) plus the failed-authentication gate (nothing for a healthy address)."""
    from apps.gateway import ratelimits
    from apps.gateway.access import OPERATIONS, Op
    from apps.gateway.auth import authenticate_token

    operation = OPERATIONS[Op.ADMIT]
    principal = authenticate_token(token)

    def timed(fn) -> float:
        samples = []
        for _ in range(calls):
            start = time.perf_counter_ns()
            fn()
            samples.append(time.perf_counter_ns() - start)
        return statistics.median(samples) / 1000

    with override_settings(RATE_LIMIT_MUTATION="100000000/m"):  # counted, never refused
        with_limits = timed(lambda: (ratelimits.authenticate(token), ratelimits.check(operation, principal)))
    without = timed(lambda: authenticate_token(token))
    return with_limits, without


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: deploy/gunicorn.conf.py's)")
    args = parser.parse_args()
    if not os.environ.get("REDIS_URL"):
        sys.exit("REDIS_URL is required: rate limits count in Redis")
    require_wrk()

    with throwaway_database("modeloman_bench_ratelimits"):
        assert listener.wait_until_healthy(), "invalidation listener did not connect"
        actor = Actor.system("bench")
        project = key_services.project_save(actor=actor, project=Project(slug="bench", name="bench"))
        agent = key_services.agent_save(actor=actor, agent=Agent(project=project, name="bench-agent"))
        token = key_services.api_key_create(actor=actor, agent=agent, scopes=["tasks:write"]).token
        policy_services.model_price_save(actor=actor, price=ModelPrice(
            model=MODEL, input_usd_per_mtok=Decimal(1), output_usd_per_mtok=Decimal(2),
            effective_from=timezone.now() - dt.timedelta(days=1)))
        policy_services.cap_save(actor=actor, cap=PolicyCap(subject_type="global", metric="cost_usd",
                                                            window="day", limit=Decimal(10**9)))
        policy_services.cap_save(actor=actor, cap=PolicyCap(subject_type="agent", agent=agent, metric="requests",
                                                            window="minute", limit=Decimal(10**9)))
        per_call = limiter_cost(token)
        listener.stop()
        connection.close()  # the servers are the only clients while measuring

        # The deployed worker model (deploy/gunicorn.conf.py), with `--workers` processes if given.
        model = deployed_model()
        if args.workers:
            model = dataclasses.replace(model, workers=args.workers)
        with tempfile.TemporaryDirectory(prefix="bench-ratelimits-") as workdir, ExitStack() as stack:
            body = Path(workdir) / "admission.json"
            body.write_text(json.dumps({"model": MODEL, "estimated_input_tokens": 100, "estimated_output_tokens": 50}))
            bases = {name: stack.enter_context(gunicorn_server(app="modeloman.wsgi:application", model=model,
                                                               env=server_env(limits=limits)))
                     for name, limits in (("limits on", True), ("limits off", False))}
            for base in bases.values():  # warm up: connections, caches, the key
                admissions(base, token, body, seconds=2, connections=args.connections)
            rounds: dict[str, list[WrkResult]] = {name: [] for name in bases}
            for _ in range(args.rounds):
                for name, base in bases.items():
                    rounds[name].append(admissions(base, token, body, seconds=args.seconds,
                                                   connections=args.connections))

    print(f"Admission over HTTP (POST /api/v1/admissions, production settings, gunicorn {model}), "
          f"wrk {args.connections} connections, {args.rounds} alternating rounds of {args.seconds:g}s")
    medians = {}
    for name, runs in rounds.items():
        rate = statistics.median(r.rate for r in runs)
        medians[name] = rate
        print(f"{name:<11} throughput {rate:>7.0f}/s (rounds: {', '.join(f'{r.rate:.0f}' for r in runs)})   "
              f"p50 {statistics.median(r.p50_ms for r in runs):6.2f} ms  "
              f"p99 {statistics.median(r.p99_ms for r in runs):6.2f} ms")
    with_limits, without = per_call
    print(f"in process, per admission: authenticate + rate limits {with_limits:.1f} µs median vs authenticate "
          f"alone {without:.1f} µs: rate limiting adds {with_limits - without:.1f} µs")
    overhead = 1 - medians["limits on"] / medians["limits off"]
    print(f"rate-limiting overhead: {overhead:.1%} of throughput (target <= 10%)")


if __name__ == "__main__":
    main()
