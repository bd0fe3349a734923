"""gunicorn settings for `make run` and production (see README, Deployment)."""

import os

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "1"))
timeout = 30
graceful_timeout = 20
max_requests = 10000
max_requests_jitter = 1000
# Only the local reverse proxy (Caddy) may set X-Forwarded-For / -Proto: gunicorn applies this to
# the scheme; Django applies the same variable to both (apps.gateway.identity).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = "-"
errorlog = "-"
