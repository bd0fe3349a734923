"""pytest settings: real PostgreSQL (DATABASE_URL or the embedded server) and real Redis
when REDIS_URL is set."""

import tempfile

from .base import *  # noqa: F403
from .base import env

SECRET_KEY = "test-secret-key-not-for-production-use-0123456789abcdef"  # noqa: S105  # test-only value
KEY_PEPPER = env.str("KEY_PEPPER", default="test-key-pepper-0123456789abcdef")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test logins only
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Each test run (and the servers its tests start, which inherit the variable) gets its own metrics files.
METRICS_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="") or tempfile.mkdtemp(prefix="modeloman-metrics-")
