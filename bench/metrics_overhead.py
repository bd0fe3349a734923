"""The cost of metrics (and the per-request log line's metrics twin) on the admission path, over
the wire: real gunicorn (2 workers, deploy/gunicorn.conf.py) with METRICS_ENABLED=true and =false,
alternated on the same throwaway database in the same run, driven by client processes (never
threads inside the server).

    .venv/bin/python bench/metrics_overhead.py [--seconds 8] [--clients 4] [--rounds 2]

Prints admissions/s and p50/p99 for each setting and the overhead of metrics (target ≤ 10%).
"""

import argparse
import multiprocessing
import statistics
import tempfile
import time
import urllib.request
import uuid
from decimal import Decimal

from _setup import throwaway_database
from django.conf import settings

from apps.audit.services import Actor
from apps.keys import services as key_services
from apps.keys.models import Agent, Project
from apps.policy import services as policy_services
from apps.policy.models import ModelPrice, PolicyCap
from tests.processes import database_url, gunicorn_server

MODEL = "bench-model"
BODY = b'{"model": "bench-model", "estimated_input_tokens": 100, "estimated_output_tokens": 50}'


def client(args: tuple[str, str, float]) -> list[float]:
    """One load-generating process: admissions back to back until the deadline; latencies in s."""
    url, token, deadline = args
    latencies = []
    while time.time() < deadline:
        request = urllib.request.Request(url, data=BODY, method="POST", headers={  # noqa: S310  # loopback
            "Authorization": f"Bearer {token}", "Content-Type": "application/json",
            "Idempotency-Key": uuid.uuid4().hex})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310  # loopback bench server
            response.read()
            assert response.status == 200
        latencies.append(time.perf_counter() - started)
    return latencies


def run(enabled: bool, token: str, *, seconds: float, clients: int) -> dict[str, float]:
    env = {"DJANGO_SETTINGS_MODULE": "modeloman.settings.local", "DATABASE_URL": database_url(),
           "KEY_PEPPER": settings.KEY_PEPPER, "METRICS_ENABLED": str(enabled).lower(),
           "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="bench-metrics-"), "LOG_LEVEL": "WARNING"}
    with gunicorn_server(workers=2, env=env) as base:
        url = f"{base}/api/v1/admissions"
        client((url, token, time.time() + 1.0))  # warm up: key and policy caches, connections
        deadline = time.time() + seconds
        with multiprocessing.get_context("fork").Pool(clients) as pool:
            results = pool.map(client, [(url, token, deadline)] * clients)
    latencies = sorted(x for r in results for x in r)
    return {"rate": len(latencies) / seconds, "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with throwaway_database("modeloman_bench_metrics"):
        actor = Actor.system("bench")
        agent = Agent.objects.create(project=Project.objects.create(slug="bench", name="Bench"), name="a1")
        token = key_services.api_key_create(actor=actor, agent=agent, scopes=["tasks:write"]).token
        policy_services.model_price_save(actor=actor, price=ModelPrice(
            model=MODEL, input_usd_per_mtok=Decimal(1), output_usd_per_mtok=Decimal(2)))
        policy_services.cap_save(actor=actor, cap=PolicyCap(subject_type="global", metric="cost_usd", window="day",
                                                            limit=Decimal(10**9)))
        policy_services.cap_save(actor=actor, cap=PolicyCap(subject_type="agent", agent=agent, metric="requests",
                                                            window="hour", limit=Decimal(10**9)))
        figures: dict[bool, list[dict]] = {True: [], False: []}
        for _ in range(args.rounds):  # alternated, so drift in a shared machine hits both alike
            for enabled in (False, True):
                figures[enabled].append(run(enabled, token, seconds=args.seconds, clients=args.clients))
    print(f"Admission over HTTP (gunicorn 2 workers, {args.clients} client processes, "
          f"{args.rounds} x {args.seconds:.0f} s each, alternated)")
    best = {}
    for enabled, label in ((False, "baseline: METRICS_ENABLED=false"), (True, "ours: METRICS_ENABLED=true")):
        rate = statistics.mean(f["rate"] for f in figures[enabled])
        p50 = statistics.median(f["p50_ms"] for f in figures[enabled])
        p99 = statistics.median(f["p99_ms"] for f in figures[enabled])
        best[enabled] = rate
        print(f"  {label:<34} {rate:8.1f} admissions/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    print(f"  metrics overhead: {(1 - best[True] / best[False]) * 100:.1f}% of throughput (target ≤ 10%)")


if __name__ == "__main__":
    main()
