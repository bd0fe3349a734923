"""Over-the-wire benchmark helpers: a real gunicorn on a free loopback port, driven by wrk.

The load generator is wrk (C, its own process, Lua for per-request headers), never threads in the
process under test: there the harness's GIL contention, not the server, would set the tail.
Debian/Ubuntu: `apt-get install wrk`.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

BENCH_DIR = Path(__file__).resolve().parent
BASE_DIR = BENCH_DIR.parent
WRK_SCRIPT = BENCH_DIR / "wrk_request.lua"


def require_wrk() -> str:
    """wrk's path, or exit with what to install."""
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("This benchmark needs wrk, the HTTP load generator (a separate C process): "
                         "`apt-get update && apt-get install -y wrk` (Debian/Ubuntu) or `brew install wrk`.")
    return path


def database_url(settings_dict: dict) -> str:
    """A DATABASE_URL for the database a Django connection is using (e.g. a throwaway one)."""
    s = settings_dict
    credentials = f"{quote(s['USER'])}:{quote(s['PASSWORD'] or '')}"
    host, port = s["HOST"] or "127.0.0.1", s["PORT"] or 5432
    if host.startswith("/"):  # a Unix socket directory
        return f"postgres://{credentials}@/{s['NAME']}?host={host}&port={port}"
    return f"postgres://{credentials}@{host}:{port}/{s['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class WorkerModel:
    """gunicorn's worker class and counts, written `sync:2` or `gthread:2x4` (workers x threads)."""

    worker_class: str
    workers: int
    threads: int = 1

    @classmethod
    def parse(cls, text: str) -> WorkerModel:
        worker_class, _, counts = text.partition(":")
        workers, _, threads = counts.partition("x")
        if worker_class not in ("sync", "gthread") or not workers.isdigit() or (threads and not threads.isdigit()):
            raise SystemExit(f"worker model {text!r}: expected sync:N or gthread:NxT")
        return cls(worker_class, int(workers), int(threads or 1))

    def __str__(self) -> str:
        return f"{self.worker_class}:{self.workers}" + (f"x{self.threads}" if self.worker_class == "gthread" else "")


def deployed_model() -> WorkerModel:
    """The worker model deploy/gunicorn.conf.py gives with this environment."""
    config = runpy.run_path(str(BASE_DIR / "deploy" / "gunicorn.conf.py"))
    threads = config.get("threads", 1)
    worker_class = config.get("worker_class", "gthread" if threads > 1 else "sync")
    return WorkerModel(worker_class, config["workers"], threads)


@contextmanager
def gunicorn_server(*, app: str, model: WorkerModel, env: dict[str, str], chdir: Path = BASE_DIR) -> Iterator[str]:
    """Serve `app` with gunicorn and the deployed config (deploy/gunicorn.conf.py) on a free
    loopback port; yield the base URL. Always shut down: SIGTERM (graceful), then SIGKILL."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="bench-gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
    command = [sys.executable, "-m", "gunicorn", app, "--chdir", str(chdir),
               "--config", str(BASE_DIR / "deploy" / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}",
               "--worker-class", model.worker_class, "--workers", str(model.workers),
               "--threads", str(model.threads), "--graceful-timeout", "5",
               # No recycling mid-run: a worker restarted after max_requests drops the keep-alive
               # connections it holds (wrk sees read errors) and starts with cold caches.
               "--max-requests", "0"]
    process = subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:  # noqa: S310  # loopback
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gunicorn did not start ({' '.join(command)}):\n{Path(log.name).read_text()[-3000:]}")
            time.sleep(0.1)
        yield base
    except BaseException:
        # The server's side of a failed run (tracebacks, "readyz: cache unreachable", ...), sans 2xx log lines.
        lines = [line for line in Path(log.name).read_text(errors="replace").splitlines()
                 if not re.search(r'" 2\d\d ', line)]
        sys.stderr.write("gunicorn log (without 2xx), last lines:\n" + "\n".join(lines[-40:]) + "\n")
        raise
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
        os.unlink(log.name)


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]  # non-2xx answers ("status"), connect/read/write errors and timeouts

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rate(self) -> float:
        """Answers per second, not counting non-2xx ones."""
        return (self.requests - self.errors.get("status", 0)) / self.seconds


def wrk(url: str, *, seconds: float, connections: int, threads: int = 2, method: str = "GET",
        body: Path | None = None, headers: dict[str, str] | None = None, idempotent: bool = False,
        timeout: str = "10s", pause_ms: int | None = None) -> WrkResult:
    """Drive `url` from a wrk process for `seconds` with `connections` connections: a closed loop,
    or with `pause_ms` each connection pausing between requests (a paced load; wrk's latency is
    from send to answer, without the pause). With `idempotent`, every request carries its own
    Idempotency-Key."""
    command = [require_wrk(), "--duration", f"{seconds:g}s", "--connections", str(connections),
               "--threads", str(min(threads, connections)), "--timeout", timeout, "--script", str(WRK_SCRIPT)]
    for name, value in (headers or {}).items():
        command += ["--header", f"{name}: {value}"]
    # Arguments after `--` go to the script: method, body file, key prefix (unique per wrk run), pause.
    command += [url, "--", method, str(body) if body else "-", uuid.uuid4().hex if idempotent else "-"]
    if pause_ms is not None:
        command.append(str(pause_ms))
    completed = subprocess.run(command, capture_output=True, text=True, check=False, timeout=seconds + 60)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("BENCH ")]
    if completed.returncode != 0 or not lines:
        raise SystemExit(f"wrk failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    figures = json.loads(lines[-1].removeprefix("BENCH "))
    errors = {name: figures[name] for name in ("status", "connect", "read", "write", "timeout") if figures[name]}
    return WrkResult(requests=figures["requests"], seconds=figures["duration_us"] / 1e6,
                     p50_ms=figures["p50_us"] / 1000, p99_ms=figures["p99_us"] / 1000, errors=errors)


# Per-process CPU, from /proc (Linux): what each side of a run costs per answer. On a machine where
# every core is busy, throughput is the inverse of the CPU one answer costs in total, so this says
# where a ratio between two endpoints comes from. The load generator is not counted (wrk has exited
# when the second sample is taken). "idle" is the machine's cores doing nothing (idle and iowait in
# /proc/stat) per answer: where cores wait, for a commit's flush say, the rate falls short of that
# inverse, and this shows by how much.
CPU_SIDES = {"workers": "gunicorn", "PostgreSQL": "postgres", "Redis": "redis-server"}


def cpu_by_side(sides: dict[str, str] = CPU_SIDES) -> dict[str, float] | None:
    """CPU seconds used so far by the processes of each side (name: a string of their command line;
    processes that have exited are not counted), and the machine's idle seconds (all cores) as
    "idle"; None where there is no /proc."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    used = dict.fromkeys(sides, 0.0)
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        side = next((name for name, marker in sides.items() if marker in command), None)
        if side is not None:
            used[side] += (int(fields[11]) + int(fields[12])) / ticks_per_second  # utime + stime
    ticks = (proc / "stat").read_text().split("\n", 1)[0].split()  # cpu user nice system idle iowait ...
    used["idle"] = (int(ticks[4]) + int(ticks[5])) / ticks_per_second
    return used


def cpu_per_answer(before: dict[str, float] | None, after: dict[str, float] | None,
                   answers: int) -> dict[str, float] | None:
    """Milliseconds of CPU per answer on each side between two `cpu_by_side()` samples."""
    if before is None or after is None or not answers:
        return None
    return {side: max(0.0, after[side] - before[side]) * 1000 / answers for side in before}


def cpu_medians(samples: list[dict[str, float]]) -> str:
    """`side ms, ...`: the median over `samples` (cpu_per_answer results) of each side's CPU."""
    return ", ".join(f"{side} {statistics.median(sample[side] for sample in samples):.2f}" for side in samples[0])
