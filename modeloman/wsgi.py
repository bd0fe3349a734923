import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modeloman.settings.production")

application = get_wsgi_application()

# TIMESCALE=required: refuse to start without TimescaleDB (a check only; never DDL).
from django.db import connections  # noqa: E402

from apps.telemetry.checks import verify_timescale  # noqa: E402  # needs the app registry loaded above

verify_timescale()
connections.close_all()  # don't hand this connection to forked workers
