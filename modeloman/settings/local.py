"""Developer machines: `make run`. Insecure fallbacks for secrets, clearly labelled.

`manage.py` defaults to these settings, so they are also what an operator gets on a server who
forgets DJANGO_SETTINGS_MODULE. The development pepper is therefore only allowed with the
embedded database: with any DATABASE_URL a real KEY_PEPPER is required, else a key created
with `create_agent_key` would be digested with a pepper that is public (and the server's
real pepper would never match it).
"""

import hashlib
import hmac

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import env

DEVELOPMENT_KEY_PEPPER = "insecure-local-development-key-pepper"

SECRET_KEY = env.str("SECRET_KEY", default="insecure-local-development-secret-key-do-not-deploy")
KEY_PEPPER = env.str("KEY_PEPPER", default=DEVELOPMENT_KEY_PEPPER)
if KEY_PEPPER == DEVELOPMENT_KEY_PEPPER and env.str("DATABASE_URL", default=""):
    raise ImproperlyConfigured(
        "Local settings with DATABASE_URL need KEY_PEPPER: the development pepper is only for the embedded "
        "database. On a production host set DJANGO_SETTINGS_MODULE=modeloman.settings.production."
    )

# Without REQUEST_SIGNING_KEY, signing secrets derive from one computed from the pepper, so that they are
# never derived from a public value when the pepper is real (it must be, with DATABASE_URL).
REQUEST_SIGNING_KEY = env.str("REQUEST_SIGNING_KEY", default="") or hmac.new(
    KEY_PEPPER.encode(), b"modeloman local request signing key", hashlib.sha256).hexdigest()
