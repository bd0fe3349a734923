"""grpcserve's configuration: safe defaults, and TLS settings that cannot be half set."""

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from apps.gateway.grpc.server import SERVER_OPTIONS, ServerConfig
from tests.processes import BASE_DIR


def test_defaults_are_loopback_no_reflection_no_tls_and_bounded():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRPC_", "ENABLE_REFLECTION"))}
    code = ("import django; django.setup(); from django.conf import settings as s; "
            "print(s.GRPC_ADDR, s.ENABLE_REFLECTION, repr(s.GRPC_TLS_CERT), s.GRPC_MAX_CONCURRENT_RPCS, "
            "s.GRPC_PROCESSES)")
    env = {**env, "DJANGO_SETTINGS_MODULE": "modeloman.settings.test",
           "DATABASE_URL": "postgres://unused@127.0.0.1:1/unused"}  # parsed, never connected to
    result = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, capture_output=True, text=True, check=True,
                            env=env)
    out = result.stdout.split()
    assert out == ["127.0.0.1:50051", "False", "''", "256", "2"]  # 2 processes: one per core, as gunicorn's
    options = dict(SERVER_OPTIONS)
    assert options["grpc.max_receive_message_length"] == 1024 * 1024
    assert options["grpc.max_send_message_length"] == 2 * 1024 * 1024


@pytest.mark.parametrize(("tls", "message"), [
    ({"tls_cert": "server.crt"}, "go together"),
    ({"tls_key": "server.key"}, "go together"),
    ({"tls_client_ca": "ca.crt"}, "needs GRPC_TLS_CERT"),
])
def test_half_configured_tls_is_refused(tls, message):
    config = ServerConfig(address="127.0.0.1:0", max_workers=4, max_concurrent_rpcs=8, reflection=False,
                          grace_seconds=1, **tls)
    with pytest.raises(ImproperlyConfigured, match=message):
        config.check()
