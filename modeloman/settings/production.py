"""Production: every secret comes from the environment, and weak ones are refused."""

import os

from django.core.exceptions import ImproperlyConfigured

# Checked before importing base, which would otherwise start the embedded development database.
if not os.environ.get("DATABASE_URL"):
    raise ImproperlyConfigured("DATABASE_URL is required in production.")

from .base import *  # noqa: E402, F403
from .base import env  # noqa: E402

_WEAK_MARKERS = ("insecure", "change-me", "changeme", "example", "secret-key")


def _strong_secret(name: str) -> str:
    value = env.str(name, default="")
    if len(value) < 32 or len(set(value)) < 10 or any(m in value.lower() for m in _WEAK_MARKERS):
        raise ImproperlyConfigured(
            f"{name} is missing or weak: set at least 32 random characters "
            "(`manage.py generate_secrets` prints suitable values)."
        )
    return value


if not env.str("REDIS_URL", default=""):
    raise ImproperlyConfigured("REDIS_URL is required in production (rate limits, shared cache).")

SECRET_KEY = _strong_secret("SECRET_KEY")
KEY_PEPPER = _strong_secret("KEY_PEPPER")
DEBUG = False

# Believed only from FORWARDED_ALLOW_IPS peers: RequestContextMiddleware drops it from anyone else.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
