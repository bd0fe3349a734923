"""Admission: our path (cached key + cached policy + one conditional UPDATE per cap) vs a naive
ORM check-then-update, same data, same run, in a throwaway database.

    make bench        (or: .venv/bin/python bench/admission.py [--seconds 5] [--rate 500])

Both paths do the same work: verify the key, check agent status and kill switches, price the
model, and reserve against two caps (a global cost cap and an agent request cap).
Throughput is a closed loop with several threads; latency is an open loop at a fixed offered
rate, measured from each request's scheduled start (so queueing delay counts). Threads in this
process share its GIL, so the harness itself adds to that tail; the same two paths are therefore
also served by gunicorn (the deployed worker model, bench/admission_wsgi.py: the path plus a socket,
no Django request stack) and driven by wrk from its own process: throughput and p50/p99 at 8
connections, and p50/p99 with the load paced near the offered rate. Needs wrk (apt-get install wrk).
"""

import argparse
import datetime as dt
import hmac
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from _http import BENCH_DIR, WrkResult, database_url, deployed_model, gunicorn_server, require_wrk, wrk
from _setup import summarize, throwaway_database
from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import Q
from django.utils import timezone

from apps.audit.services import Actor
from apps.gateway.auth import authenticate_token
from apps.keys import services as key_services
from apps.keys import tokens
from apps.keys.models import Agent, ApiKey, Project
from apps.policy import ledger
from apps.policy import services as policy_services
from apps.policy.models import ModelPrice, Policy, PolicyCap, Reservation, UsageLedger
from apps.policy.windows import window_start
from modeloman.invalidation import listener

MODEL = "bench-model"


def ours(token: str) -> bool:
    principal = authenticate_token(token)
    return ledger.admit(principal=principal, model=MODEL, estimated_input_tokens=100,
                                 estimated_output_tokens=50).allowed


def naive(token: str) -> bool:
    """What a straightforward ORM implementation does on every request."""
    parsed = tokens.parse(token)
    if parsed is None:
        return False
    key = ApiKey.objects.select_related("agent__project").get(key_id=parsed.key_id)
    expected = tokens.digest(parsed.key_id, parsed.secret, settings.KEY_PEPPER)
    agent = key.agent
    if not hmac.compare_digest(expected, key.digest) or key.revoked_at or agent is None or agent.status != "active":
        return False
    subject = Q(subject_type="global") | Q(project_id=agent.project_id) | Q(agent_id=agent.pk)
    if Policy.objects.filter(subject, kill_switch=True).exists():
        return False
    price = ModelPrice.objects.filter(model=MODEL).order_by("-effective_from").first()
    assert price is not None, "the setup prices MODEL"
    cost = (100 * price.input_usd_per_mtok + 50 * price.output_usd_per_mtok) / Decimal(1_000_000)
    now = timezone.now()
    with transaction.atomic():
        holds = []
        for cap in PolicyCap.objects.filter(enabled=True).order_by("id"):
            amount = cost if cap.metric == "cost_usd" else Decimal(1)
            ledger, _ = UsageLedger.objects.get_or_create(
                cap=cap, window_start=window_start(cap.window, now), defaults={"limit_snapshot": cap.limit})
            if ledger.used + ledger.reserved + amount > cap.limit:  # check …
                return False
            ledger.reserved += amount  # … then act (racy: concurrent requests overshoot)
            ledger.save(update_fields=["reserved"])
            holds.append({"cap": cap.pk, "ledger": ledger.pk, "metric": cap.metric, "amount": str(amount)})
        Reservation.objects.create(agent=agent, model=MODEL, estimated_tokens=150, estimated_cost_usd=cost,
                                   holds=holds, expires_at=now)
    return True


def closed_loop(fn, token: str, *, threads: int, seconds: float) -> float:
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def worker(i: int) -> None:
        try:
            while time.monotonic() < stop:
                fn(token)
                counts[i] += 1
        finally:
            connections.close_all()

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counts) / seconds


def open_loop(fn, token: str, *, rate: int, seconds: float, workers: int = 8) -> dict:
    interval = 1.0 / rate
    total = int(rate * seconds)
    latencies: list[int] = []
    lock = threading.Lock()
    ready = threading.Barrier(workers)

    def warm_up(_: int) -> None:
        # Every worker opens its connection and runs once before the clock starts, as a
        # long-running server's workers would have.
        fn(token)
        ready.wait()

    def one(i: int) -> None:
        scheduled = start + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        fn(token)
        with lock:
            latencies.append(int((time.perf_counter() - scheduled) * 1e9))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(warm_up, range(workers)))
        start = time.perf_counter() + 0.05
        list(pool.map(one, range(total)))
    elapsed = time.perf_counter() - start
    figures = summarize(latencies)
    ordered = sorted(latencies)
    figures["p99_us"] = ordered[int(len(ordered) * 0.99)] / 1000
    figures["achieved_rate"] = total / elapsed
    return figures


def over_the_wire(token: str, *, rate: int, seconds: float) -> dict[str, tuple[WrkResult, WrkResult]]:
    """Both paths behind gunicorn, driven by wrk: (closed loop at 8 connections, paced at `rate`)."""
    env = {**os.environ, "DATABASE_URL": database_url(connection.settings_dict)}
    connections.close_all()
    paced_connections = 16
    pause_ms = round(1000 * paced_connections / rate)
    auth = {"Authorization": f"Bearer {token}"}
    results = {}
    with gunicorn_server(app="admission_wsgi:application", model=deployed_model(), env=env, chdir=BENCH_DIR) as base:
        for name, path in (("ours", "/ours"), ("naive ORM", "/naive")):
            wrk(base + path, seconds=2, connections=8, headers=auth)  # warm-up
            closed = wrk(base + path, seconds=seconds, connections=8, headers=auth)
            paced = wrk(base + path, seconds=seconds, connections=paced_connections, headers=auth,
                        pause_ms=pause_ms)
            for result in (closed, paced):
                if result.error_count:
                    raise SystemExit(f"{name} over HTTP: errors {result.errors} (status: denied or failed admissions)")
            results[name] = (closed, paced)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    require_wrk()

    with throwaway_database():
        assert listener.wait_until_healthy(), "invalidation listener did not connect"
        actor = Actor.system("bench")
        project = key_services.project_save(actor=actor, project=Project(slug="bench", name="bench"))
        agent = key_services.agent_save(actor=actor, agent=Agent(project=project, name="bench-agent"))
        token = key_services.api_key_create(actor=actor, agent=agent, scopes=["tasks:write"]).token
        policy_services.model_price_save(actor=actor, price=ModelPrice(
            model=MODEL, input_usd_per_mtok=Decimal(1), output_usd_per_mtok=Decimal(2),
            effective_from=timezone.now() - dt.timedelta(days=1)))
        policy_services.policy_set(actor=actor, subject_type="global", max_tokens_per_attempt=10**6)
        policy_services.cap_save(actor=actor, cap=PolicyCap(subject_type="global", metric="cost_usd",
                                                            window="day", limit=Decimal(10**9)))
        policy_services.cap_save(actor=actor, cap=PolicyCap(subject_type="agent", agent=agent, metric="requests",
                                                            window="minute", limit=Decimal(10**9)))
        assert ours(token) and naive(token)

        results = {}
        for name, fn in (("ours", ours), ("naive ORM", naive)):
            throughput = closed_loop(fn, token, threads=args.threads, seconds=args.seconds)
            latency = open_loop(fn, token, rate=args.rate, seconds=args.seconds)
            results[name] = (throughput, latency)
        listener.stop()
        wire = over_the_wire(token, rate=args.rate, seconds=args.seconds)

    print(f"Admission (auth + kill switch + price + 2 caps reserved), {args.threads} threads closed loop, "
          f"open loop at {args.rate}/s for {args.seconds:g}s")
    for name, (throughput, latency) in results.items():
        print(f"{name:<10} throughput {throughput:>7.0f}/s   at {args.rate}/s offered: achieved "
              f"{latency['achieved_rate']:.0f}/s  p50 {latency['median_us'] / 1000:6.2f} ms  "
              f"p99 {latency['p99_us'] / 1000:6.2f} ms")
    ratio = results["ours"][0] / results["naive ORM"][0]
    print(f"throughput ratio ours/naive: {ratio:.2f}x (target >= 1.5x); "
          f"our p99 at {args.rate}/s: {results['ours'][1]['p99_us'] / 1000:.2f} ms (target <= 15 ms)")
    print(f"Same paths over a socket: gunicorn {deployed_model()} (bench/admission_wsgi.py), wrk in its own process; "
          f"8 connections closed loop, and 16 connections each pausing to offer ~{args.rate}/s")
    for name, (closed, paced) in wire.items():
        print(f"{name:<10} throughput {closed.rate:>7.0f}/s   p50 {closed.p50_ms:6.2f} ms  p99 {closed.p99_ms:6.2f} ms"
              f"   paced: achieved {paced.rate:.0f}/s  p50 {paced.p50_ms:6.2f} ms  p99 {paced.p99_ms:6.2f} ms")
    ours_wire, naive_wire = wire["ours"], wire["naive ORM"]
    print(f"over the wire: throughput ratio ours/naive {ours_wire[0].rate / naive_wire[0].rate:.2f}x; "
          f"our p99 paced at ~{args.rate}/s: {ours_wire[1].p99_ms:.2f} ms (target <= 15 ms)")


if __name__ == "__main__":
    main()
