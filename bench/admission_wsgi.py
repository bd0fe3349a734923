"""The two admission paths of bench/admission.py behind a bare WSGI app, for gunicorn and wrk.

Served by bench/admission.py itself (gunicorn --chdir bench admission_wsgi:application) against
its throwaway database, so its latency figures come from a load generator in another process,
not from threads sharing the harness's GIL. No Django request stack: what is timed is the path
(`ours` or `naive`) plus a socket, as in the in-process figures.
"""

from admission import naive, ours  # django.setup() runs in _setup, with the parent's settings

PATHS = {"/ours": ours, "/naive": naive}


def application(environ, start_response):
    path = PATHS.get(environ["PATH_INFO"])
    if environ["PATH_INFO"] == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    if path is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    token = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
    allowed = path(token)
    # A denial would mean the harness's caps are too low: make it an error wrk counts.
    start_response("200 OK" if allowed else "409 Conflict", [("Content-Type", "application/json")])
    return [b'{"allowed": true}' if allowed else b'{"allowed": false}']
