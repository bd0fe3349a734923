"""Admission over gRPC and over REST, same run, same data, same concurrency: `manage.py grpcserve`
and gunicorn (deploy/gunicorn.conf.py), both with production settings on loopback, each driven by a
load generator in its own process (this script with --load), never threads in the server.

    .venv/bin/python bench/grpc_vs_rest.py [--seconds 5] [--rounds 3] [--concurrency 8]

The load process runs `--concurrency` threads, each with its own agent client
(clients/python/modeloman_client: gRPC channel, or a keep-alive HTTP/1.1 connection) calling
`admit` in a closed loop with a fresh idempotency key per call, as an agent does. The same Python
client drives both transports, so the generator's own cost is alike on both sides. Needs REDIS_URL
and a DATABASE_URL where this user may create databases (as bench/http_admission.py). Prints
throughput, p50 and p99 per transport (medians of interleaved rounds) and the gRPC/REST ratio
(target >= 1.1x; SPEC §10: p99 <= 15 ms at 8 streams).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BASE_DIR = BENCH_DIR.parent


def load(args) -> None:
    """The load generator (a child process): admissions for `seconds`, figures as one JSON line."""
    sys.path[:0] = [str(BASE_DIR), str(BASE_DIR / "clients" / "python")]
    from modeloman_client import Client, ModeloManError

    def connect() -> Client:
        if args.load == "grpc":
            return Client.grpc(args.target, args.token, max_attempts=1)
        return Client.rest(args.target, args.token, max_attempts=1)

    latencies: list[list[int]] = [[] for _ in range(args.concurrency)]
    errors: list[int] = [0] * args.concurrency
    start = threading.Barrier(args.concurrency + 1)
    stop = threading.Event()

    def worker(i: int) -> None:
        client = connect()
        client.admit(model=args.model, estimated_input_tokens=100, estimated_output_tokens=50)  # connect first
        start.wait()
        mine = latencies[i]
        while not stop.is_set():
            began = time.perf_counter_ns()
            try:
                admission = client.admit(model=args.model, estimated_input_tokens=100, estimated_output_tokens=50)
                if not admission.allowed:
                    errors[i] += 1
            except ModeloManError:
                errors[i] += 1
            mine.append(time.perf_counter_ns() - began)
        client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.concurrency)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(args.seconds)
    stop.set()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    ordered = sorted(sample for mine in latencies for sample in mine)
    print(json.dumps({"requests": len(ordered), "errors": sum(errors), "seconds": seconds,
                      "p50_ms": ordered[len(ordered) // 2] / 1e6,
                      "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1e6}))


def run_load(transport: str, target: str, token: str, args) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--load", transport, "--target", target,
               "--token", token, "--seconds", str(args.seconds), "--concurrency", str(args.concurrency),
               "--model", args.model]
    completed = subprocess.run(command, capture_output=True, text=True, check=False, timeout=args.seconds + 120)
    if completed.returncode != 0:
        raise SystemExit(f"load generator ({transport}) failed:\n{completed.stderr[-3000:]}")
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    if figures["errors"]:
        raise SystemExit(f"{transport}: {figures['errors']} errors or denials in {figures['requests']} admissions")
    figures["rate"] = figures["requests"] / figures["seconds"]
    return figures


def grpc_server(env: dict[str, str]):
    """`manage.py grpcserve` on a free loopback port; returns (process, address)."""
    process = subprocess.Popen([sys.executable, "manage.py", "grpcserve"], cwd=BASE_DIR,
                               env={**env, "GRPC_ADDR": "127.0.0.1:0"}, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("grpcserve listening on "):
        process.kill()
        raise SystemExit(f"grpcserve did not start: {line!r}")
    return process, line.split()[3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--database", default="modeloman_bench_grpc")
    parser.add_argument("--load", choices=["rest", "grpc"], help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="bench-model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        return load(args)

    # The same production settings and seed as bench/http_admission.py (importing it sets them up).
    sys.path.insert(0, str(BENCH_DIR))
    import http_admission
    from _http import database_url, deployed_model, gunicorn_server
    from _setup import throwaway_database
    from django.db import connection, connections

    from apps.policy.models import AdmissionDecision, Reservation

    model = deployed_model()
    with throwaway_database(args.database):
        token = http_admission.seed()
        args.model = http_admission.ADMISSION_MODEL
        env = {**os.environ, "DATABASE_URL": database_url(connection.settings_dict)}
        connections.close_all()
        grpc_process, address = grpc_server(env)
        try:
            with gunicorn_server(app="modeloman.wsgi:application", model=model, env=env) as base:
                targets = {"grpc": address, "rest": base}
                warm = argparse.Namespace(**{**vars(args), "seconds": args.warmup})
                for transport, target in targets.items():
                    run_load(transport, target, token, warm)
                results: dict[str, list[dict]] = {"grpc": [], "rest": []}
                for round_number in range(args.rounds):  # interleaved, order alternating: drift hits both
                    order = ["grpc", "rest"] if round_number % 2 == 0 else ["rest", "grpc"]
                    for transport in order:
                        results[transport].append(run_load(transport, targets[transport], token, args))
        finally:
            grpc_process.terminate()
            grpc_process.wait(timeout=30)
        time.sleep(0.5)
        denied, reserved = AdmissionDecision.objects.count(), Reservation.objects.count()
        sent = sum(r["requests"] for rs in results.values() for r in rs)
        if denied or reserved < sent:
            raise SystemExit(f"admissions: {denied} denied, {reserved} reservations for {sent} answers")

    print(f"Admission, gRPC (grpcserve, GRPC_MAX_WORKERS={os.environ.get('GRPC_MAX_WORKERS', '16')}) vs REST "
          f"(gunicorn {model}), production settings, loopback; load: a separate process, {args.concurrency} "
          f"concurrent clients; medians of {args.rounds} interleaved rounds of {args.seconds:g} s")
    rates = {}
    for transport in ("grpc", "rest"):
        rs = results[transport]
        rounds = ", ".join(f"{r['rate']:.0f}" for r in rs)
        rates[transport] = statistics.median(r["rate"] for r in rs)
        print(f"{transport:<5} {rates[transport]:>7.0f}/s   p50 {statistics.median(r['p50_ms'] for r in rs):6.1f} ms"
              f"   p99 {statistics.median(r['p99_ms'] for r in rs):6.1f} ms   "
              f"(rounds: {rounds})")
    print(f"gRPC / REST: {rates['grpc'] / rates['rest']:.2f}x (target >= 1.1x); {reserved} reservations, "
          f"{denied} denied")


if __name__ == "__main__":
    main()
