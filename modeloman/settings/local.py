"""Developer machines: `make run`. Insecure fallbacks for secrets, clearly labelled."""

from .base import *  # noqa: F403
from .base import env

SECRET_KEY = env.str("SECRET_KEY", default="insecure-local-development-secret-key-do-not-deploy")
KEY_PEPPER = env.str("KEY_PEPPER", default="insecure-local-development-key-pepper")
