"""Forwarded headers are believed only from FORWARDED_ALLOW_IPS peers (issue 8, item 8)."""

import http.client
import os
import secrets

import pytest
from django.test import RequestFactory

from apps.audit.models import AuditEvent
from apps.gateway.identity import client_ip
from tests.factories import issue_key
from tests.processes import gunicorn_server

PROXY, CLIENT, STRANGER = "127.0.0.1", "198.51.100.7", "203.0.113.9"


@pytest.fixture
def behind_tls(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600


def test_a_direct_client_cannot_claim_https(client, behind_tls):
    response = client.get("/healthz", REMOTE_ADDR=STRANGER, HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 301 and response["Location"].startswith("https://")
    assert "Strict-Transport-Security" not in response


def test_the_proxy_can_say_https(client, behind_tls):
    response = client.get("/healthz", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200 and "Strict-Transport-Security" in response


@pytest.mark.parametrize("peer, forwarded_for, recorded", [
    (PROXY, CLIENT, CLIENT),  # through the proxy: the address it saw
    (STRANGER, CLIENT, STRANGER),  # a direct client's own header is ignored
], ids=["through-the-proxy", "spoofed-by-a-direct-client"])
def test_audit_rows_record_the_forwarded_client_only_from_the_proxy(api_client, bearer, db, peer, forwarded_for,
                                                                     recorded):
    token = issue_key(scopes=["policy:write"]).token
    response = api_client.post("/api/v1/policy/caps", {"subject": "agent", "metric": "tokens", "window": "day",
                                                        "limit": "10"}, format="json", REMOTE_ADDR=peer,
                               HTTP_X_FORWARDED_FOR=forwarded_for, **bearer(token))
    assert response.status_code == 201
    assert AuditEvent.objects.get(action__contains="cap").client_ip == recorded


@pytest.mark.parametrize("peer, chain, allow, expected", [
    (PROXY, "", ["127.0.0.1"], PROXY),  # no header: the peer
    (PROXY, f"{STRANGER}, {CLIENT}", ["127.0.0.1"], CLIENT),  # the proxy appended what it saw; left is hearsay
    (PROXY, f"{CLIENT}, 10.0.0.2", ["127.0.0.1", "10.0.0.2"], CLIENT),  # two trusted hops
    (PROXY, "not-an-ip", ["127.0.0.1"], PROXY),  # garbage ends the walk
    ("::ffff:127.0.0.1", CLIENT, ["127.0.0.1"], CLIENT),  # IPv4-mapped peer
    (STRANGER, CLIENT, ["127.0.0.1"], STRANGER),
    (STRANGER, CLIENT, ["*"], CLIENT),
])
def test_client_ip_walks_the_chain_through_trusted_proxies_only(settings, peer, chain, allow, expected):
    settings.FORWARDED_ALLOW_IPS = allow
    request = RequestFactory().get("/", REMOTE_ADDR=peer, **({"HTTP_X_FORWARDED_FOR": chain} if chain else {}))
    assert client_ip(request) == expected


@pytest.mark.django_db(transaction=True)
def test_production_server_ignores_x_forwarded_proto_from_an_untrusted_peer():
    """Real gunicorn, production settings, loopback not among FORWARDED_ALLOW_IPS: a client that
    says https on plain HTTP gets no HSTS (main answered with HSTS: it believed the header)."""
    env = {"DJANGO_SETTINGS_MODULE": "modeloman.settings.production", "ALLOWED_HOSTS": "127.0.0.1",
           "SECRET_KEY": secrets.token_urlsafe(50), "KEY_PEPPER": secrets.token_urlsafe(40),
           "REQUEST_SIGNING_KEY": secrets.token_urlsafe(40),
           "REDIS_URL": os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
           "FORWARDED_ALLOW_IPS": "192.0.2.1", "SECURE_SSL_REDIRECT": "false"}
    with gunicorn_server(workers=1, env=env) as base:
        connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=5)
        connection.request("GET", "/healthz", headers={"X-Forwarded-Proto": "https"})
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Strict-Transport-Security") is None
        connection.close()
