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
import datetime as dt
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path

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

BASE_DIR = Path(__file__).resolve().parent.parent
MODEL = "bench-model"
WRK_SCRIPT = """
local counter = 0
local token = os.getenv("BENCH_TOKEN")
local body = '{"model": "MODEL", "estimated_input_tokens": 100, "estimated_output_tokens": 50}'
request = function()
  counter = counter + 1
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token,
                   ["Idempotency-Key"] = string.format("%d-%d-%d", os.time(), math.random(1e9), counter)}
  return wrk.format("POST", "/api/v1/admissions", headers, body)
end
""".replace("MODEL", MODEL)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    s = connection.settings_dict
    host = s["HOST"] or "127.0.0.1"
    if host.startswith("/"):
        return f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@/{s['NAME']}?host={host}&port={s['PORT']}"
    return f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{host}:{s['PORT'] or 5432}/{s['NAME']}"


@contextmanager
def server(*, limits: bool, workers: int):
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "modeloman.settings.production",
        "DATABASE_URL": database_url(),
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
    log = tempfile.NamedTemporaryFile(prefix="bench-gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        # The deployed worker model (deploy/gunicorn.conf.py: threaded workers), `workers` processes.
        [sys.executable, "-m", "gunicorn", "modeloman.wsgi:application", "--config", "deploy/gunicorn.conf.py",
         "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--log-level", "warning"],
        cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2):  # noqa: S310  # loopback
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(Path(log.name).read_text()) from None
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)
        os.unlink(log.name)


def wrk(base: str, token: str, *, seconds: float, connections: int, script: str) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 latency (ms) of one wrk run; fails on any non-2xx answer."""
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s", script, base],  # noqa: S607
        env={**os.environ, "BENCH_TOKEN": token}, capture_output=True, text=True, check=True,
    )
    out = result.stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"some admissions failed:\n{out}")
    requests = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert requests is not None, out
    rate = float(requests.group(1))

    def percentile(label: str) -> float:
        latency = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        assert latency is not None, out
        value, unit = latency.groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return rate, percentile("50"), percentile("99")


def limiter_cost(token: str, calls: int = 5000) -> tuple[float, float]:
    """Median µs of what rate limiting adds to one admission in this process: the write-limit count
    (two Redis round trips) plus the failed-authentication gate (nothing for a healthy address)."""
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
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not os.environ.get("REDIS_URL"):
        sys.exit("REDIS_URL is required: rate limits count in Redis")

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

        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script, ExitStack() as stack:
            script.write(WRK_SCRIPT)
            script.flush()
            bases = {"limits on": stack.enter_context(server(limits=True, workers=args.workers)),
                     "limits off": stack.enter_context(server(limits=False, workers=args.workers))}
            for base in bases.values():  # warm up: connections, caches, the key
                wrk(base, token, seconds=2, connections=args.connections, script=script.name)
            rounds: dict[str, list[tuple[float, float, float]]] = {name: [] for name in bases}
            for _ in range(args.rounds):
                for name, base in bases.items():
                    rounds[name].append(wrk(base, token, seconds=args.seconds, connections=args.connections,
                                            script=script.name))
        os.unlink(script.name)

    print(f"Admission over HTTP (POST /api/v1/admissions, production settings, gunicorn {args.workers} workers), "
          f"wrk {args.connections} connections, {args.rounds} alternating rounds of {args.seconds:g}s")
    medians = {}
    for name, runs in rounds.items():
        rate = statistics.median(r[0] for r in runs)
        medians[name] = rate
        print(f"{name:<11} throughput {rate:>7.0f}/s (rounds: {', '.join(f'{r[0]:.0f}' for r in runs)})   "
              f"p50 {statistics.median(r[1] for r in runs):6.2f} ms  "
              f"p99 {statistics.median(r[2] for r in runs):6.2f} ms")
    with_limits, without = per_call
    print(f"in process, per admission: authenticate + rate limits {with_limits:.1f} µs median vs authenticate "
          f"alone {without:.1f} µs: rate limiting adds {with_limits - without:.1f} µs")
    overhead = 1 - medians["limits on"] / medians["limits off"]
    print(f"rate-limiting overhead: {overhead:.1%} of throughput (target <= 10%)")


if __name__ == "__main__":
    main()
