"""bench/loadgen (Go): a compiled closed-loop load generator for gRPC and REST calls.

Built on first use from Debian's Go toolchain and its packaged grpc-go, in GOPATH mode (nothing is
downloaded from a module proxy): `apt-get install -y golang-go golang-google-grpc-dev`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
SOURCE = BENCH_DIR / "loadgen" / "main.go"
BINARY = BENCH_DIR.parent / "var" / "bench" / "loadgen"
GOPATH = "/usr/share/gocode"  # where Debian's golang-*-dev packages put their sources


def build() -> Path:
    """The load generator's binary, (re)built when its source is newer; exits with what to install."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    go = shutil.which("go")
    if go is None or not Path(GOPATH, "src", "google.golang.org", "grpc").is_dir():
        raise SystemExit("The Go load generator needs Go and grpc-go: `apt-get update && apt-get install -y "
                         "golang-go golang-google-grpc-dev` (Debian), or run with --generator python.")
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH, "GOFLAGS": "",
           "GOCACHE": str(BINARY.parent / "go-cache")}
    completed = subprocess.run([go, "build", "-o", str(BINARY), "."], cwd=SOURCE.parent, env=env,
                               capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"go build of bench/loadgen failed:\n{completed.stderr[-3000:]}")
    return BINARY


def command(*, transport: str, target: str, token: str, body: Path, concurrency: int, seconds: float,
            grpc_method: str = "", rest_path: str = "") -> list[str]:
    """The command of one closed-loop run; it prints its figures as one JSON line (requests, warmup,
    errors, seconds, cpu_seconds, p50_ms, p99_ms)."""
    arguments = [str(build()), "-transport", "grpc" if transport == "grpc" else "http", "-target", target,
                 "-token", token, "-body", str(body), "-concurrency", str(concurrency), "-seconds", str(seconds)]
    return arguments + (["-method", grpc_method] if transport == "grpc" else ["-path", rest_path])
