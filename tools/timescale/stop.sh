#!/usr/bin/env bash
# Stop the server started by start.sh (SIGTERM, then SIGKILL after 15 s).
# env: TIMESCALE_PID_FILE (default tools/timescale/.pid). Exits 0 if not running.
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PID_FILE="${TIMESCALE_PID_FILE:-$DIR/.pid}"

[[ -f "$PID_FILE" ]] || { echo "not running (no $PID_FILE)" >&2; exit 0; }
pid="$(cat "$PID_FILE" 2>/dev/null || true)"
rm -f "$PID_FILE"
if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
  echo "not running (stale pid file)" >&2
  exit 0
fi
if ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'server.mjs'; then
  echo "pid $pid is not the timescale server; not touching it" >&2
  exit 0
fi
kill -TERM "$pid"
for _ in $(seq 1 75); do
  kill -0 "$pid" 2>/dev/null || { echo "stopped (pid $pid)" >&2; exit 0; }
  sleep 0.2
done
echo "pid $pid did not stop after 15s; sending SIGKILL" >&2
kill -KILL "$pid" 2>/dev/null || true
