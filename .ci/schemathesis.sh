#!/usr/bin/env bash
# The OpenAPI document as a contract: Schemathesis (requirements-dev.txt) runs every phase
# (examples, coverage, fuzzing, stateful) with its default checks against a live gunicorn on a
# free loopback port, serving a freshly migrated database, with a key that holds every scope.
# A hook (.ci/schemathesis_hooks.py) sends a fresh Idempotency-Key with every write. Zero
# failures, or this script fails.
#
# Needs DATABASE_URL (its server is used; the database is <its name>_schemathesis, dropped and
# created anew) and REDIS_URL. Bounded: SCHEMATHESIS_MAX_EXAMPLES cases per operation and phase
# (default 40) and a hard SCHEMATHESIS_TIMEOUT (default 900 s).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATABASE_URL:?DATABASE_URL is required}" "${REDIS_URL:?REDIS_URL is required}"
PY=.venv/bin/python

server_url=${DATABASE_URL%/*}
db="${DATABASE_URL##*/}_schemathesis"
psql "$server_url/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"

# Production settings (DEBUG off: errors render as they would for a real client), plain HTTP on
# loopback, rate limits far above what the fuzzer sends.
export DATABASE_URL="$server_url/$db" DJANGO_SETTINGS_MODULE=modeloman.settings.production
export SECRET_KEY="$($PY -c 'import secrets; print(secrets.token_urlsafe(50))')"
export KEY_PEPPER="$($PY -c 'import secrets; print(secrets.token_urlsafe(48))')"
export REQUEST_SIGNING_KEY="$($PY -c 'import secrets; print(secrets.token_urlsafe(48))')"
# A fuzzer cannot sign what it generates, so signed writes are not required here (production
# requires them; tests/gateway/test_signing.py covers every refusal). A generated signature header
# is still checked, and its 401 is an answer Schemathesis accepts.
export REQUIRE_SIGNED_WRITES=false
export ALLOWED_HOSTS=127.0.0.1 SECURE_SSL_REDIRECT=false RATE_LIMIT_GET=1000000/m RATE_LIMIT_MUTATION=1000000/m
$PY manage.py migrate --noinput --verbosity 0
scopes=$($PY manage.py shell --no-imports -c 'from apps.gateway.access import ALL_SCOPES; print(",".join(sorted(ALL_SCOPES)))')
export SCHEMATHESIS_TOKEN
# create_agent_key prints the token, then the key's signing secret.
SCHEMATHESIS_TOKEN=$($PY manage.py create_agent_key --project schemathesis --agent fuzzer --scopes "$scopes" --create \
  | sed -n 1p)

mkdir -p var
log=var/schemathesis-gunicorn.log
port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
WEB_CONCURRENCY=2 WEB_THREADS=4 setsid .venv/bin/gunicorn modeloman.wsgi:application -c deploy/gunicorn.conf.py \
  --bind "127.0.0.1:$port" >"$log" 2>&1 &
gunicorn_pid=$!
trap 'kill -TERM -- -$gunicorn_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 $gunicorn_pid 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.5
done

status=0
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$PWD/.ci" timeout "${SCHEMATHESIS_TIMEOUT:-900}" \
  .venv/bin/st --config-file .ci/schemathesis.toml run "http://127.0.0.1:$port/api/schema/?format=json" \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-40}" \
  --workers 2 --request-timeout 10 \
  --report junit --report-dir var/schemathesis-report \
  ${SCHEMATHESIS_SEED:+--seed "$SCHEMATHESIS_SEED"} || status=$?
if [[ $status -ne 0 ]]; then
  echo "Schemathesis failed (exit $status); server errors, if any:" >&2
  grep -n "Traceback\|Error" "$log" | head -40 >&2 || true
fi
psql "$server_url/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
exit $status
