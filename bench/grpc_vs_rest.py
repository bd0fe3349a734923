"""Admission and 1,000-attempt batch ingest over gRPC and over REST, same run, same data, same
concurrency: `manage.py grpcserve` and gunicorn (deploy/gunicorn.conf.py), both with production
settings on loopback, each driven by a load generator in its own process, never threads in the server.

    .venv/bin/python bench/grpc_vs_rest.py [--seconds 5] [--rounds 3] [--concurrency 8] [--generator go|python]

The load generator runs `--concurrency` callers, each with its own connection (a gRPC channel, or a
keep-alive HTTP/1.1 connection), calling `admit` in a closed loop with a fresh idempotency key per
call, as an agent does. By default it is bench/loadgen, a compiled Go program (bench/_loadgen.py
builds it; needs `apt-get install -y golang-go golang-google-grpc-dev`) sending the agent client's
request bodies; `--generator python` runs this script again (`--load`) with one agent client
(clients/python/modeloman_client) per thread. The same generator drives both transports. Needs
REDIS_URL and a DATABASE_URL where this user may create databases (as bench/http_admission.py).
Prints throughput, p50 and p99 per transport (medians of interleaved rounds) and the gRPC/REST
ratio (target >= 1.1x; issue 11: p99 <= 15 ms at 8 streams).

Batch ingest: the same generator calls `record_attempts` with 1,000 attempts (RecordPromptAttempts
over gRPC, POST /api/v1/attempts over REST), a fresh idempotency key per call; every answer must be
a success (the Python client: accepted == 1000), and the stored rows must equal 1,000 x the calls.
Prints attempts/s, p50 and p99 per call, and the gRPC/REST ratio.
"""

import argparse
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BASE_DIR = BENCH_DIR.parent
BATCH = 1000
sys.path.insert(0, str(BENCH_DIR))
import _loadgen  # noqa: E402
from _http import cpu_by_side, cpu_medians, cpu_per_answer  # noqa: E402  # needs no Django


def batch_items() -> list[dict]:
    """1,000 attempts as an agent reports them (bench/ingest.py's shape, without Django)."""
    now = dt.datetime.now(dt.UTC)
    models = [f"bench-model-{i}" for i in range(4)]  # priced by http_admission.seed() (ingest.MODELS)
    items = [{"time": (now - dt.timedelta(milliseconds=i)).isoformat(), "model": models[i % 4],
              "prompt_name": "summarize", "prompt_version": f"v{i % 3}", "success": i % 10 != 0,
              "input_tokens": 800 + i % 400, "output_tokens": 200 + i % 100, "latency_ms": 300 + i % 2000}
             for i in range(BATCH)]
    for i in range(0, BATCH, 5):
        items[i]["attributes"] = {"region": "eu"}
    return items


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

    def admit(client: Client) -> bool:
        return client.admit(model=args.model, estimated_input_tokens=100, estimated_output_tokens=50).allowed

    def ingest(client: Client) -> bool:
        return client.record_attempts(items).accepted == BATCH

    items = batch_items()
    call = ingest if args.operation == "ingest" else admit

    def worker(i: int) -> None:
        client = connect()
        if args.operation == "ingest":
            client.whoami()  # connect first, without writing rows nobody counts
        else:
            admit(client)  # connect first
        start.wait()
        mine = latencies[i]
        while not stop.is_set():
            began = time.perf_counter_ns()
            try:
                if not call(client):
                    errors[i] += 1
            except ModeloManError:
                errors[i] += 1
            mine.append(time.perf_counter_ns() - began)
        client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.concurrency)]
    for thread in threads:
        thread.start()
    start.wait()
    began, cpu_began = time.perf_counter(), time.process_time()
    time.sleep(args.seconds)
    stop.set()
    for thread in threads:
        thread.join()
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu_began
    ordered = sorted(sample for mine in latencies for sample in mine)
    print(json.dumps({"requests": len(ordered), "errors": sum(errors), "seconds": seconds, "cpu_seconds": cpu_seconds,
                      "p50_ms": ordered[len(ordered) // 2] / 1e6,
                      "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1e6}))


# The server of each transport, and what both share: CPU per answer is sampled around each load run.
SIDES = {"grpcserve": "grpcserve", "gunicorn": "gunicorn", "PostgreSQL": "postgres", "Redis": "redis-server"}
SERVER = {"grpc": "grpcserve", "rest": "gunicorn"}


# What the Go generator calls for each operation.
GRPC_METHODS = {"admit": "/modeloman.v1.ControlPlane/Admit",
                "ingest": "/modeloman.v1.ControlPlane/RecordPromptAttempts"}
REST_PATHS = {"admit": "/api/v1/admissions", "ingest": "/api/v1/attempts"}
GENERATORS = {"go": "bench/loadgen (Go) in its own process",
              "python": "the Python agent client in threads of its own process"}


def run_load(transport: str, target: str, token: str, args) -> dict:
    """One load run; its figures, with `cpu`: ms of CPU per answer of the transport's server,
    PostgreSQL, Redis and the load generator (None without /proc)."""
    before = cpu_by_side(SIDES)
    if args.generator == "go":
        command = _loadgen.command(transport=transport, target=target, token=token,
                                   body=args.bodies[args.operation, transport], concurrency=args.concurrency,
                                   seconds=args.seconds, grpc_method=GRPC_METHODS[args.operation],
                                   rest_path=REST_PATHS[args.operation])
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--load", transport, "--target", target,
                   "--token", token, "--seconds", str(args.seconds), "--concurrency", str(args.concurrency),
                   "--model", args.model, "--operation", args.operation]
    completed = subprocess.run(command, capture_output=True, text=True, check=False, timeout=args.seconds + 120)
    if completed.returncode != 0:
        raise SystemExit(f"load generator ({transport}) failed:\n{completed.stderr[-3000:]}")
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    if figures["errors"]:
        raise SystemExit(f"{transport} {args.operation}: {figures['errors']} errors, denials or short batches "
                         f"in {figures['requests']} calls")
    figures["rate"] = figures["requests"] / figures["seconds"]
    figures["written"] = figures["requests"] + figures.get("warmup", 0)  # the Go generator's first calls write
    sides = cpu_per_answer(before, cpu_by_side(SIDES), figures["requests"])
    figures["cpu"] = sides and {"server": sides[SERVER[transport]], "PostgreSQL": sides["PostgreSQL"],
                                "Redis": sides["Redis"],
                                "load generator": figures["cpu_seconds"] * 1000 / figures["requests"]}
    return figures


def grpc_server(env: dict[str, str]):
    """`manage.py grpcserve` on a free loopback port (GRPC_PROCESSES and the rest of its settings from
    the environment); returns (process, address, number of server processes)."""
    process = subprocess.Popen([sys.executable, "manage.py", "grpcserve"], cwd=BASE_DIR,
                               env={**env, "GRPC_ADDR": "127.0.0.1:0"}, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("grpcserve listening on "):
        process.kill()
        raise SystemExit(f"grpcserve did not start: {line!r}")
    processes = re.search(r"processes: (\d+)", line)
    return process, line.split()[3], int(processes[1]) if processes else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--database", default="modeloman_bench_grpc")
    parser.add_argument("--generator", choices=["go", "python"], default="go",
                        help="go: bench/loadgen, compiled (default); python: the agent client library in "
                             "threads of one process")
    parser.add_argument("--load", choices=["rest", "grpc"], help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="bench-model", help=argparse.SUPPRESS)
    parser.add_argument("--operation", choices=["admit", "ingest"], default="admit", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        return load(args)

    # The same production settings and seed as bench/http_admission.py (importing it sets them up).
    import http_admission
    from _http import database_url, deployed_model, gunicorn_server
    from _setup import throwaway_database
    from django.db import connection, connections

    from apps.gateway.grpc.server import MAX_RECEIVE_BYTES
    from apps.policy.models import AdmissionDecision, Reservation

    model = deployed_model()
    if args.generator == "go":
        _loadgen.build()  # before any server starts: a missing toolchain says so at once
    size = grpc_batch_bytes()
    if size > MAX_RECEIVE_BYTES:
        raise SystemExit(f"a {BATCH}-attempt RecordPromptAttempts message is {size} bytes, over the "
                         f"server's {MAX_RECEIVE_BYTES}-byte receive limit")
    operations = ("admit", "ingest")
    with throwaway_database(args.database), tempfile.TemporaryDirectory(prefix="bench-grpc-") as workdir:
        token = http_admission.seed()
        args.model = http_admission.ADMISSION_MODEL
        args.bodies = request_bodies(args.model, Path(workdir))
        env = {**os.environ, "DATABASE_URL": database_url(connection.settings_dict)}
        connections.close_all()
        grpc_process, address, grpc_processes = grpc_server(env)
        results: dict[tuple[str, str], list[dict]] = {(o, t): [] for o in operations for t in ("grpc", "rest")}
        ingest_calls = 0
        try:
            with gunicorn_server(app="modeloman.wsgi:application", model=model, env=env) as base:
                targets = {"grpc": address, "rest": base}
                for operation in operations:
                    warm = argparse.Namespace(**{**vars(args), "seconds": args.warmup, "operation": operation})
                    for transport, target in targets.items():
                        figures = run_load(transport, target, token, warm)
                        ingest_calls += figures["written"] if operation == "ingest" else 0
                for round_number in range(args.rounds):  # interleaved, order alternating: drift hits both
                    order = ["grpc", "rest"] if round_number % 2 == 0 else ["rest", "grpc"]
                    for operation in operations:
                        these = argparse.Namespace(**{**vars(args), "operation": operation})
                        for transport in order:
                            figures = run_load(transport, targets[transport], token, these)
                            results[operation, transport].append(figures)
                            ingest_calls += figures["written"] if operation == "ingest" else 0
        finally:
            grpc_process.terminate()
            grpc_process.wait(timeout=30)
        time.sleep(0.5)
        denied, reserved = AdmissionDecision.objects.count(), Reservation.objects.count()
        sent = sum(r["requests"] for t in ("grpc", "rest") for r in results["admit", t])
        if denied or reserved < sent:
            raise SystemExit(f"admissions: {denied} denied, {reserved} reservations for {sent} answers")
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM prompt_attempts")
            stored = cursor.fetchone()[0]
        if stored != ingest_calls * BATCH:
            raise SystemExit(f"ingest: {stored} rows stored for {ingest_calls} answers of {BATCH} accepted")

    print(f"Admission, gRPC (grpcserve, {grpc_processes} process{'es' if grpc_processes > 1 else ''} x "
          f"GRPC_MAX_WORKERS={os.environ.get('GRPC_MAX_WORKERS', '16')}) vs REST "
          f"(gunicorn {model}), production settings, loopback; load: {GENERATORS[args.generator]}, {args.concurrency} "
          f"concurrent clients; medians of {args.rounds} interleaved rounds of {args.seconds:g} s")
    rates = {}
    for transport in ("grpc", "rest"):
        rs = results["admit", transport]
        rounds = ", ".join(f"{r['rate']:.0f}" for r in rs)
        rates[transport] = statistics.median(r["rate"] for r in rs)
        print(f"{transport:<5} {rates[transport]:>7.0f}/s   p50 {statistics.median(r['p50_ms'] for r in rs):6.1f} ms"
              f"   p99 {statistics.median(r['p99_ms'] for r in rs):6.1f} ms   "
              f"(rounds: {rounds})")
    print(f"gRPC / REST: {rates['grpc'] / rates['rest']:.2f}x (target >= 1.1x); {reserved} reservations, "
          f"{denied} denied")
    print_cpu(results, "admit")

    print(f"\nBatch ingest, {BATCH} attempts per call (RecordPromptAttempts: {size} bytes, limit "
          f"{MAX_RECEIVE_BYTES}; POST /api/v1/attempts), same servers, clients and rounds")
    rates = {}
    for transport in ("grpc", "rest"):
        rs = results["ingest", transport]
        rounds = ", ".join(f"{r['rate'] * BATCH:.0f}" for r in rs)
        rates[transport] = statistics.median(r["rate"] for r in rs) * BATCH
        print(f"{transport:<5} {rates[transport]:>7.0f} attempts/s   per call p50 "
              f"{statistics.median(r['p50_ms'] for r in rs):6.1f} ms   p99 "
              f"{statistics.median(r['p99_ms'] for r in rs):6.1f} ms   (rounds: {rounds})")
    print(f"gRPC / REST: {rates['grpc'] / rates['rest']:.2f}x; {ingest_calls} calls answered accepted={BATCH}, "
          f"{stored} rows stored")
    print_cpu(results, "ingest")


def print_cpu(results: dict[tuple[str, str], list[dict]], operation: str) -> None:
    """CPU per call of each side, medians of the rounds."""
    for transport in ("grpc", "rest"):
        samples = [r["cpu"] for r in results[operation, transport] if r.get("cpu")]
        if samples:
            print(f"  CPU per call, {transport}, ms (medians; /proc): {cpu_medians(samples)}")


def grpc_batch_bytes() -> int:
    """The serialized size of the benchmark's 1,000-attempt RecordPromptAttempts message."""
    return len(grpc_message("ingest", {"attempts": batch_items()}))


def grpc_message(operation: str, payload: dict) -> bytes:
    from google.protobuf import json_format

    from apps.gateway.grpc.gen.modeloman.v1 import control_plane_pb2 as pb

    message_class = pb.AdmitRequest if operation == "admit" else pb.RecordPromptAttemptsRequest
    return json_format.ParseDict(payload, message_class()).SerializeToString()


def request_bodies(model: str, directory: Path) -> dict[tuple[str, str], Path]:
    """The Go load generator's request bodies, as the agent client sends them: what it sends for
    `admit` and for `record_attempts` of the 1,000-attempt batch, over each transport."""
    payloads: dict[str, dict] = {
        "admit": {"model": model, "estimated_input_tokens": 100, "estimated_output_tokens": 50},
        "ingest": {"attempts": batch_items()}}
    bodies = {}
    for operation, payload in payloads.items():
        bodies[operation, "grpc"] = directory / f"{operation}.pb"
        bodies[operation, "grpc"].write_bytes(grpc_message(operation, payload))
        bodies[operation, "rest"] = directory / f"{operation}.json"
        bodies[operation, "rest"].write_text(json.dumps(payload, separators=(",", ":")))
    return bodies


if __name__ == "__main__":
    main()
