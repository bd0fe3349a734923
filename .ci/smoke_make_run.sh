#!/usr/bin/env bash
# A fresh clone with DATABASE_URL unset: `make run` must install, start the embedded
# PostgreSQL, migrate, and serve /healthz and the admin login page.
set -euo pipefail
src=$(pwd)
work=$(mktemp -d)
trap 'kill -TERM -- -$pid 2>/dev/null || true; sleep 1; rm -rf "$work"' EXIT
git clone --quiet "$src" "$work/modeloman"
cd "$work/modeloman"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Reuse the downloaded wheels; the venv itself is built from scratch.
setsid env -u DATABASE_URL -u REDIS_URL -u KEY_PEPPER -u SECRET_KEY HTTP_ADDR="127.0.0.1:$port" make run >"$work/run.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
  if ! kill -0 $pid 2>/dev/null; then cat "$work/run.log"; exit 1; fi
  sleep 1
done
# Read whole bodies first: `curl | grep -q` fails under pipefail when grep stops reading early.
health=$(curl -fsS "http://127.0.0.1:$port/healthz") || { cat "$work/run.log"; exit 1; }
login=$(curl -fsS "http://127.0.0.1:$port/admin/login/") || { cat "$work/run.log"; exit 1; }
grep -q '"ok"' <<<"$health" || { cat "$work/run.log"; exit 1; }
grep -q 'id="id_password"' <<<"$login" || { cat "$work/run.log"; exit 1; }
# An empty database gets the leaderboard demo, and the run says so.
board=$(curl -fsS "http://127.0.0.1:$port/") || { cat "$work/run.log"; exit 1; }
grep -q '<th scope="row"' <<<"$board" || { cat "$work/run.log"; exit 1; }
grep -q 'Loaded demo data' "$work/run.log" || { cat "$work/run.log"; exit 1; }
echo "make run: /healthz 200, admin login page and a seeded leaderboard served from a clean clone"
# stop the embedded server this clone started
.venv/bin/python -c 'from pathlib import Path; from modeloman.embedded_db import stop_embedded_database as s; s(Path("var"))' || true
