"""Production: every secret comes from the environment, and weak ones are refused."""

import logging
import os

from django.core.exceptions import ImproperlyConfigured

# Checked before importing base, which would otherwise start the embedded development database.
if not os.environ.get("DATABASE_URL"):
    raise ImproperlyConfigured("DATABASE_URL is required in production.")

from modeloman.secret_strength import PEPPER_MIN_LENGTH, SECRET_KEY_MIN_LENGTH, secret_weakness  # noqa: E402

from .base import *  # noqa: E402, F403
from .base import env  # noqa: E402


def _strong_secret(name: str, *, min_length: int, optional: bool = False) -> str:
    value = env.str(name, default="")
    if optional and not value:
        return value
    weakness = secret_weakness(value, min_length=min_length)
    if weakness:
        raise ImproperlyConfigured(
            f"{name} is missing or weak ({weakness}): set at least {min_length} random characters "
            "(`manage.py generate_secrets` prints suitable values)."
        )
    return value


if not env.str("REDIS_URL", default=""):
    raise ImproperlyConfigured("REDIS_URL is required in production (rate limits, shared cache).")

SECRET_KEY = _strong_secret("SECRET_KEY", min_length=SECRET_KEY_MIN_LENGTH)
KEY_PEPPER = _strong_secret("KEY_PEPPER", min_length=PEPPER_MIN_LENGTH)
# Keys digested with the previous pepper still authenticate: it is as much a secret as the current one.
KEY_PEPPER_PREVIOUS = _strong_secret("KEY_PEPPER_PREVIOUS", min_length=PEPPER_MIN_LENGTH, optional=True)
METRICS_TOKEN = _strong_secret("METRICS_TOKEN", min_length=PEPPER_MIN_LENGTH, optional=True)
if KEY_PEPPER_PREVIOUS == KEY_PEPPER:
    raise ImproperlyConfigured("KEY_PEPPER_PREVIOUS must differ from KEY_PEPPER (leave it empty after a rotation).")
# Signing secrets are derived from it: as much a secret as the pepper, and a different one.
REQUEST_SIGNING_KEY = _strong_secret("REQUEST_SIGNING_KEY", min_length=PEPPER_MIN_LENGTH)
REQUEST_SIGNING_KEY_PREVIOUS = _strong_secret("REQUEST_SIGNING_KEY_PREVIOUS", min_length=PEPPER_MIN_LENGTH,
                                              optional=True)
if REQUEST_SIGNING_KEY in (KEY_PEPPER, KEY_PEPPER_PREVIOUS, REQUEST_SIGNING_KEY_PREVIOUS):
    raise ImproperlyConfigured("REQUEST_SIGNING_KEY must differ from KEY_PEPPER, KEY_PEPPER_PREVIOUS and "
                               "REQUEST_SIGNING_KEY_PREVIOUS.")
REQUIRE_SIGNED_WRITES = env.bool("REQUIRE_SIGNED_WRITES", default=True)
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
CSRF_COOKIE_HTTPONLY = True
ADMIN_REQUIRE_OTP = env.bool("ADMIN_REQUIRE_OTP", default=True)
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# One JSON object per line (modeloman.logs). The request line says what Django's "Unauthorized: ..."
# and "Not Found: ..." warnings would repeat; its errors (5xx, with their traceback) are still logged.
LOGGING["handlers"]["console"]["formatter"] = "json"  # noqa: F405
LOGGING["loggers"]["django.request"] = {"level": "ERROR"}  # noqa: F405
logging.captureWarnings(True)  # Python warnings become JSON lines too, not bare text on stderr
