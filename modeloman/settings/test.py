"""pytest settings: real PostgreSQL (DATABASE_URL or the embedded server) and real Redis
when REDIS_URL is set."""

from .base import *  # noqa: F403
from .base import env

SECRET_KEY = "test-secret-key-not-for-production-use-0123456789abcdef"  # noqa: S105  # test-only value
KEY_PEPPER = env.str("KEY_PEPPER", default="test-key-pepper-0123456789abcdef")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test logins only
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Transactional tests reset the database by truncating every table; the audit table refuses
# TRUNCATE unless the session says so (migration audit 0002 explains why that is safe).
DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c modeloman.allow_audit_truncate=on"  # noqa: F405
