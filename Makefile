# ModeloMan — the two commands a new machine needs are `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
HTTP_ADDR ?= 127.0.0.1:8080
GRPC_ADDR ?= 127.0.0.1:50051

.PHONY: run test lint bench bench-http superuser stop-db protos

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

## Run ModeloMan locally: embedded PostgreSQL unless DATABASE_URL is set.
run: export DJANGO_SETTINGS_MODULE ?= modeloman.settings.local
run: $(VENV)/.runtime
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	@# An empty database gets demo data for the public leaderboard (it says so; seed_demo --clear removes it).
	$(PY) manage.py seed_demo --if-empty
	@echo ""
	@echo "ModeloMan is starting on http://$(HTTP_ADDR)/ (REST, pages, admin) and $(GRPC_ADDR) (gRPC)"
	@echo "  leaderboard:     http://$(HTTP_ADDR)/"
	@echo "  agent gRPC:      $(GRPC_ADDR)   (modeloman.v1.ControlPlane, protos/modeloman/v1/control_plane.proto)"
	@echo "  operator admin:  http://$(HTTP_ADDR)/$${ADMIN_URL:-admin/}"
	@echo "  operator login:  make superuser   (in another terminal)"
	@echo "  agent key:       $(PY) manage.py create_agent_key --project demo --agent a1 --scopes tasks:write --create"
	@echo ""
	@# Both servers in one process group: Ctrl-C (or either one exiting) stops the other too.
	GRPC_ADDR=$(GRPC_ADDR) $(PY) manage.py grpcserve & grpc=$$!; \
	trap 'kill -TERM $$grpc 2>/dev/null; wait $$grpc' EXIT INT TERM; \
	$(VENV)/bin/gunicorn modeloman.wsgi:application -c deploy/gunicorn.conf.py --bind $(HTTP_ADDR)

## Run the test suite (real PostgreSQL: DATABASE_URL, else the embedded server).
test: $(VENV)/.dev tests/e2e/node_modules/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

# axe-core for the browser test (tests/e2e); the test itself skips where chromium is absent.
tests/e2e/node_modules/.installed: tests/e2e/package-lock.json
	cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Benchmarks run in throwaway databases; local settings with a DATABASE_URL still need a pepper.
# Load generators: wrk (apt-get install wrk) and bench/loadgen, built from Debian's Go packages
# (apt-get install golang-go golang-google-grpc-dev) on first use.
bench: export KEY_PEPPER ?= bench-key-pepper-for-throwaway-databases-only
bench: $(VENV)/.dev
	DJANGO_SETTINGS_MODULE=modeloman.settings.local $(PY) manage.py migrate --noinput --verbosity 0
	$(PY) bench/keys_verify.py
	$(PY) bench/admission.py --seconds 10 --rate 500
	$(PY) bench/ingest.py --rows 50000
	$(MAKE) bench-http
	$(PY) bench/grpc_vs_rest.py --seconds 5 --rounds 3
	$(PY) bench/ratelimits.py --seconds 5 --rounds 6
	$(PY) bench/metrics_overhead.py --seconds 8

## Over the wire: real gunicorn (production settings) on loopback, driven by wrk (apt-get install wrk).
## Needs REDIS_URL; DATABASE_URL unset means the embedded server. Its own database, dropped after.
bench-http: $(VENV)/.dev
	$(PY) bench/http_admission.py $(BENCH_HTTP_ARGS)

superuser: export DJANGO_SETTINGS_MODULE ?= modeloman.settings.local
superuser: $(VENV)/.runtime
	$(PY) manage.py createsuperuser

## Stop the embedded PostgreSQL (its data stays in var/pgdata).
stop-db: $(VENV)/.runtime
	$(PY) -c 'from pathlib import Path; from modeloman.embedded_db import stop_embedded_database as s; s(Path("var"))'

## Regenerate the gRPC code from protos/ (checked in; CI fails when it differs from this output).
# The .proto keeps its canonical name (modeloman/v1/control_plane.proto, what every client compiles);
# protoc writes `from modeloman.v1 import ...` in the stubs, which would resolve to our settings
# package, so that one import is made relative.
GRPC_GEN := apps/gateway/grpc/gen
protos: $(VENV)/.dev
	rm -rf $(GRPC_GEN)/modeloman
	$(PY) -m grpc_tools.protoc -I protos --python_out=$(GRPC_GEN) --pyi_out=$(GRPC_GEN) \
		--grpc_python_out=$(GRPC_GEN) protos/modeloman/v1/control_plane.proto
	sed -i 's/^from modeloman\.v1 import /from . import /' $(GRPC_GEN)/modeloman/v1/control_plane_pb2_grpc.py
	touch $(GRPC_GEN)/modeloman/__init__.py $(GRPC_GEN)/modeloman/v1/__init__.py
