"""pytest settings: real PostgreSQL (DATABASE_URL or the embedded server) and real Redis
when REDIS_URL is set."""

import tempfile

from .base import *  # noqa: F403
from .base import DATABASES, DB_LOCK_TIMEOUT_MS, env

SECRET_KEY = "test-secret-key-not-for-production-use-0123456789abcdef"  # noqa: S105  # test-only value
KEY_PEPPER = env.str("KEY_PEPPER", default="test-key-pepper-0123456789abcdef")
REQUEST_SIGNING_KEY = env.str("REQUEST_SIGNING_KEY", default="test-request-signing-key-0123456789abcdef")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test logins only
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Generous limits, so that no test meets them by accident (the suite shares one Redis database and
# its windows across tests); rate-limit tests set tight ones with override_settings, or through the
# environment for server processes.
RATE_LIMIT_GET = env.str("RATE_LIMIT_GET", default="1000000/m")
RATE_LIMIT_MUTATION = env.str("RATE_LIMIT_MUTATION", default="1000000/m")
RATE_LIMIT_AUTH_FAILURES = env.str("RATE_LIMIT_AUTH_FAILURES", default="1000000/m")
# Creating and dropping the test database forces a checkpoint, which on a busy machine can take longer
# than the production statement timeout; tests that need a short one SET it themselves
# (tests/gateway/test_database_timeouts.py checks the production options).
DATABASES["default"]["OPTIONS"]["options"] = f"-c statement_timeout=60000 -c lock_timeout={DB_LOCK_TIMEOUT_MS}"
# Each test run (and the servers its tests start, which inherit the variable) gets its own metrics files.
METRICS_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="") or tempfile.mkdtemp(prefix="modeloman-metrics-")
