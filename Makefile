# ModeloMan — the two commands a new machine needs are `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
HTTP_ADDR ?= 127.0.0.1:8080

.PHONY: run test lint bench bench-http superuser stop-db

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
	@echo ""
	@echo "ModeloMan is starting on http://$(HTTP_ADDR)/"
	@echo "  operator admin:  http://$(HTTP_ADDR)/$${ADMIN_URL:-admin/}"
	@echo "  operator login:  make superuser   (in another terminal)"
	@echo "  agent key:       $(PY) manage.py create_agent_key --project demo --agent a1 --scopes tasks:write --create"
	@echo ""
	exec $(VENV)/bin/gunicorn modeloman.wsgi:application -c deploy/gunicorn.conf.py --bind $(HTTP_ADDR)

## Run the test suite (real PostgreSQL: DATABASE_URL, else the embedded server).
test: $(VENV)/.dev
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .

# Benchmarks run in throwaway databases; local settings with a DATABASE_URL still need a pepper.
bench: export KEY_PEPPER ?= bench-key-pepper-for-throwaway-databases-only
bench: $(VENV)/.dev
	DJANGO_SETTINGS_MODULE=modeloman.settings.local $(PY) manage.py migrate --noinput --verbosity 0
	$(PY) bench/keys_verify.py
	$(PY) bench/admission.py --seconds 10 --rate 500
	$(PY) bench/ingest.py --rows 50000
	$(MAKE) bench-http

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
