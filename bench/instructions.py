"""Instructions per request in a worker, counted by valgrind (callgrind): the same count to a fraction
of a percent run after run, where throughput on a shared 2-core VM varies by ±15% (docs/benchmarks.md).
For changes too small to show over the wire; not a substitute for bench/http_admission.py.

    .venv/bin/python bench/instructions.py [--requests 100] [--over-the-wire]
                                                                (needs valgrind: apt-get install valgrind)

Seeds a throwaway database as bench/http_admission.py does (production settings, one cost cap and one
request cap), then runs the WSGI application in a second process under callgrind, in process (no
socket, no gunicorn): each request type warmed up, then counted over --requests requests with
collection switched on only around them (`callgrind_control`) and the garbage collector off. Prints
instructions per request for GET /readyz, GET /api/v1/whoami and POST /api/v1/admissions, and each
against readiness.

With --over-the-wire, the second process is gunicorn with deploy/gunicorn.conf.py and one sync
worker, and the requests come over loopback, each on a connection of its own as wrk's do against
sync workers: the count is everything the worker runs for a request (gunicorn's parsing and
writing, the request log, its share of garbage collection), what bench/http_admission.py's CPU
figures time.
"""

import argparse
import gc
import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

WARMUP = 50


def the_requests(call: Callable[..., None], admission: bytes) -> dict[str, Callable[[], None]]:
    """name: a function sending that request with `call(path, method=, body=, auth=)`."""
    return {"GET  /readyz": lambda: call("/readyz", auth=False),
            "GET  /api/v1/whoami": lambda: call("/api/v1/whoami"),
            "POST /api/v1/admissions": lambda: call("/api/v1/admissions", method="POST", body=admission)}


def requests_to_count(token: str, admission: bytes) -> dict[str, Callable[[], None]]:
    """name: a function sending that request to the WSGI application (in this process)."""
    from modeloman.wsgi import application

    def call(path: str, *, method: str = "GET", body: bytes = b"", auth: bool = True) -> None:
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
                   "SERVER_PORT": "8000", "HTTP_HOST": "127.0.0.1", "REMOTE_ADDR": "127.0.0.1",
                   "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
                   "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)), "wsgi.errors": sys.stderr,
                   "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False}
        if auth:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        if method == "POST":
            environ.update(CONTENT_TYPE="application/json", HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)
        statuses: list[str] = []

        def start_response(status: str, headers: list, exc_info: object = None) -> Callable[[bytes], object]:
            statuses.append(status)
            return lambda data: None  # the write() callable of WSGI, which Django does not use

        answer = application(environ, start_response)
        b"".join(answer)
        answer.close()
        if not statuses[0].startswith("200"):
            raise SystemExit(f"{method} {path}: {statuses[0]}")

    return the_requests(call, admission)


def requests_over_the_wire(port: int, token: str, admission: bytes) -> dict[str, Callable[[], None]]:
    """name: a function sending that request to the server on `port`, on a new connection."""

    def call(path: str, *, method: str = "GET", body: bytes | None = None, auth: bool = True) -> None:
        headers = {"Authorization": f"Bearer {token}"} if auth else {}
        if method == "POST":
            headers.update({"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex})
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)  # valgrind is slow
        try:
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
        finally:
            connection.close()
        if answer.status != 200:
            raise SystemExit(f"{method} {path}: {answer.status}")

    return the_requests(call, admission)


def counted(token: str, admission: bytes, count: int) -> None:
    """The process under callgrind: for each request type, warm up, then say `start NAME` and wait
    for a line on stdin, run `count` requests, say `stop NAME` and wait again. The garbage collector
    is off while counting: a full collection of the process (~40 M instructions) lands in one window
    or another depending on what else the process holds, and would add 0.4 M to every request of
    that window; spread over a worker's life it is ~1.5% of a request, the same for every type."""
    import _setup  # noqa: F401  # Django, configured by the environment the parent passed on

    for name, send in requests_to_count(token, admission).items():
        for _ in range(WARMUP):
            send()
        gc.collect()
        gc.disable()
        for step in ("start", "stop"):
            print(step, name, flush=True)
            sys.stdin.readline()
            if step == "start":
                for _ in range(count):
                    send()
        gc.enable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="requests counted per request type")
    parser.add_argument("--over-the-wire", action="store_true",
                        help="count a gunicorn sync worker serving the requests over loopback")
    parser.add_argument("--child", nargs=2, metavar=("TOKEN", "BODY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        counted(args.child[0], args.child[1].encode(), args.requests)
        return
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        raise SystemExit("bench/instructions.py needs valgrind: apt-get install -y valgrind")

    import http_admission  # production settings and throwaway secrets for this run and the child
    from _http import database_url
    from _setup import throwaway_database
    from django.db import connection, connections

    admission = json.dumps({"model": http_admission.ADMISSION_MODEL, "estimated_input_tokens": 100,
                            "estimated_output_tokens": 50})
    with throwaway_database("modeloman_bench_instructions"), tempfile.TemporaryDirectory() as workdir:
        token = http_admission.seed()
        env = {**os.environ, "DATABASE_URL": database_url(connection.settings_dict), "PYTHONHASHSEED": "0"}
        connections.close_all()
        if args.over_the_wire:
            figures = count_over_the_wire(Path(workdir), env, token, admission.encode(), args.requests)
            where = "in one gunicorn sync worker, over loopback"
        else:
            figures = count_in_process(Path(workdir), env, token, admission, args.requests)
            where = "in process"

    readiness = figures["GET  /readyz"]
    print(f"Instructions per request {where} (callgrind; production settings; {args.requests} requests "
          f"after {WARMUP} warm-up ones)")
    for name, instructions in figures.items():
        print(f"{name:<26} {instructions / 1e6:6.3f} M   {instructions / readiness:5.2f}x readiness")


def count_in_process(workdir: Path, env: dict[str, str], token: str, admission: str, count: int) -> dict[str, float]:
    """Instructions per request of each type in a child process running the WSGI application (`counted`)."""
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
               f"--callgrind-out-file={workdir}/callgrind.out", sys.executable, __file__,
               "--requests", str(count), "--child", token, admission]
    figures: dict[str, float] = {}
    log = workdir / "child.log"  # valgrind's own messages and anything the child says on stderr
    with log.open("w") as stderr, subprocess.Popen(command, env=env, text=True, stdin=subprocess.PIPE,
                                                   stdout=subprocess.PIPE, stderr=stderr) as child:
        assert child.stdin and child.stdout
        for line in child.stdout:
            step, name = line.rstrip("\n").split(" ", 1)
            if step == "start":
                callgrind_control(child.pid, "--zero", "--instr=on")
            else:
                callgrind_control(child.pid, "--instr=off", "--dump")
                figures[name] = newest_total(workdir) / count
            child.stdin.write("go\n")
            child.stdin.flush()
    if child.returncode or len(figures) != 3:
        raise SystemExit(f"the counted process failed ({child.returncode}):\n{log.read_text()[-3000:]}")
    return figures


def count_over_the_wire(workdir: Path, env: dict[str, str], token: str, admission: bytes,
                        count: int) -> dict[str, float]:
    """Instructions per request of each type in a gunicorn sync worker, the requests sent from here."""
    from _http import BASE_DIR, free_port

    port = free_port()
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=yes",
               f"--callgrind-out-file={workdir}/callgrind.out.%p", sys.executable, "-m", "gunicorn",
               "modeloman.wsgi:application", "--config", str(BASE_DIR / "deploy" / "gunicorn.conf.py"),
               "--bind", f"127.0.0.1:{port}", "--worker-class", "sync", "--workers", "1",
               "--max-requests", "0", "--timeout", "600"]
    log = workdir / "server.log"
    figures: dict[str, float] = {}
    with log.open("w") as output, subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=output,
                                                   stderr=subprocess.STDOUT, start_new_session=True) as server:
        try:
            send = requests_over_the_wire(port, token, admission)
            deadline = time.monotonic() + 300  # gunicorn and Django start slowly under valgrind
            while True:
                try:
                    send["GET  /readyz"]()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"gunicorn did not start:\n{log.read_text()[-3000:]}") from None
                    time.sleep(1)
            worker = int(subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True,
                                        check=True).stdout.split()[0])
            for request in send.values():  # all warmed up first: the worker's first full collection lands here
                for _ in range(WARMUP):
                    request()
            for name, request in send.items():
                callgrind_control(worker, "--zero", "--instr=on")
                for _ in range(count):
                    request()
                callgrind_control(worker, "--instr=off", "--dump")
                figures[name] = newest_total(workdir) / count
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
    return figures


def callgrind_control(pid: int, *options: str) -> None:
    for option in options:
        subprocess.run(["callgrind_control", option, str(pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def newest_total(workdir: Path) -> int:
    """The `totals:` line of the newest callgrind dump (one per --dump) in `workdir`."""
    newest = max(workdir.glob("callgrind.out*"), key=lambda path: path.stat().st_mtime_ns)
    for line in newest.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {newest}")


if __name__ == "__main__":
    main()
