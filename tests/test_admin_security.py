"""The operator door (issue 14): the admin only at ADMIN_URL, a second factor for staff, a login
lockout per user and per address that the audit trail records, and TOTP enrolment."""

from __future__ import annotations

import html
import os
import re
import secrets
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from io import StringIO
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.audit.models import AuditEvent
from apps.audit.services import Actor
from modeloman.admin_security import totp_device_enrol
from tests.processes import BASE_DIR, database_url, gunicorn_server

PASSWORD = "correct horse battery staple"  # noqa: S105


def current_code(device: TOTPDevice) -> str:
    return f"{TOTP(device.bin_key, device.step, device.t0, device.digits).token():0{device.digits}d}"


def staff_with_device(username: str = "operator") -> tuple[User, TOTPDevice]:
    user = User.objects.create_superuser(username, f"{username}@example.com", PASSWORD)
    return user, totp_device_enrol(actor=Actor.system("tests"), user=user)


# --- production settings, over the wire --------------------------------------------------------------


class Browser:
    """Just enough of a browser over plain HTTP behind a (pretend) TLS proxy: keeps cookies, including
    Secure ones, sends X-Forwarded-Proto from the trusted loopback, does not follow redirects."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict | None = None) -> tuple[int, str, dict]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)  # noqa: S310  # loopback
        request.add_header("X-Forwarded-Proto", "https")
        request.add_header("Origin", self.base.replace("http://", "https://"))
        if self.cookies:
            request.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        opener = urllib.request.build_opener(NoRedirect)
        try:
            response = opener.open(request, timeout=10)
        except urllib.error.HTTPError as error:
            response = error
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return response.status, response.read().decode(), dict(response.headers)

    def login(self, admin_url: str, username: str, password: str, token: str | None = None) -> tuple[int, str, dict]:
        status, page, _ = self.request("GET", f"/{admin_url}login/")
        assert status == 200, page
        csrf_field = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert csrf_field is not None, page
        csrf = csrf_field.group(1)
        form = {"csrfmiddlewaretoken": csrf, "username": username, "password": password,
                "next": f"/{admin_url}"}
        if token is not None:
            form["otp_token"] = token
        return self.request("POST", f"/{admin_url}login/", form)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.mark.django_db(transaction=True)
def test_production_admin_lives_only_at_admin_url_and_needs_the_second_factor():
    user, device = staff_with_device()
    # Production checks passwords with its own (slow) hasher, not the test settings' fast one.
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, PBKDF2PasswordHasher().salt())
    user.save(update_fields=["password"])
    admin_url = f"ops-{secrets.token_hex(4)}/"
    env = {"DJANGO_SETTINGS_MODULE": "modeloman.settings.production", "ADMIN_URL": admin_url,
           "ALLOWED_HOSTS": "127.0.0.1", "SECRET_KEY": secrets.token_urlsafe(50),
           "KEY_PEPPER": secrets.token_urlsafe(40), "REQUEST_SIGNING_KEY": secrets.token_urlsafe(40),
           "SECURE_SSL_REDIRECT": "false"}
    # As a deployment does: production serves the admin's static files from the hashed manifest.
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"], cwd=BASE_DIR,
                   env={**os.environ, **env, "DATABASE_URL": database_url()}, check=True, timeout=120)
    with gunicorn_server(workers=1, env=env) as base:
        browser = Browser(base)
        assert browser.request("GET", "/admin/")[0] == 404
        assert browser.request("GET", "/admin/login/")[0] == 404
        status, _, headers = browser.request("GET", f"/{admin_url}")
        assert status == 302 and f"/{admin_url}login/" in headers["Location"]

        status, page, _ = browser.login(admin_url, "operator", PASSWORD)  # the password alone
        assert status == 200 and "Authenticator code" in page
        assert "Please enter your OTP token" in html.unescape(page), re.findall(r"errornote.{0,300}", page, re.S)
        assert browser.request("GET", f"/{admin_url}")[0] == 302
        assert browser.request("GET", f"/{admin_url}policy/policycap/")[0] == 302

        status, page, _ = browser.login(admin_url, "operator", PASSWORD, token="000000" if current_code(
            device) != "000000" else "111111")
        assert status == 200 and "Invalid token" in html.unescape(page)
        assert browser.request("GET", f"/{admin_url}")[0] == 302
        TOTPDevice.objects.get(pk=device.pk).throttle_reset()  # a failed code delays the next try by a second

        status, _, headers = browser.login(admin_url, "operator", PASSWORD, token=current_code(device))
        assert status == 302, "password and a valid TOTP code log in"
        cookie_headers = headers.get("Set-Cookie", "")
        assert "Secure" in cookie_headers and "HttpOnly" in cookie_headers
        status, page, _ = browser.request("GET", f"/{admin_url}")
        assert status == 200 and "<title>Console | ModeloMan operators</title>" in page  # the operator console
        assert browser.request("GET", f"/{admin_url}policy/policycap/")[0] == 200


# --- the second factor in process ---------------------------------------------------------------------


@pytest.fixture
def otp_required(settings):
    settings.ADMIN_REQUIRE_OTP = True


@pytest.mark.django_db
def test_a_staff_session_without_the_second_factor_reaches_no_admin_page(otp_required, client):
    client.force_login(User.objects.create_superuser("operator", "op@example.com", PASSWORD))
    login = reverse("admin:login")
    pages = [reverse("admin:index"), reverse("admin:password_change")]
    pages += [reverse(f"admin:{m._meta.app_label}_{m._meta.model_name}_changelist") for m in admin.site._registry]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 302 and response["Location"].startswith(login), page
    assert client.post(reverse("admin:policy_policycap_add"), {}).status_code == 302
    assert client.get(login).status_code == 200  # the way in stays open


@pytest.mark.django_db
def test_a_valid_code_from_the_users_own_device_logs_in(otp_required, client):
    user, device = staff_with_device()
    _, other_device = staff_with_device("someone-else")
    login = reverse("admin:login")
    form = {"username": "operator", "password": PASSWORD}

    someone_elses = client.post(login, {**form, "otp_device": other_device.persistent_id,
                                        "otp_token": current_code(other_device)})
    assert someone_elses.status_code == 200 and client.get(reverse("admin:index")).status_code == 302
    device.refresh_from_db()
    assert device.throttling_failure_count == 1  # the code was tried against the user's own device
    device.throttle_reset()  # (else the next try must wait a second)

    assert client.post(login, {**form, "otp_token": current_code(device)}).status_code == 302
    assert client.get(reverse("admin:index")).status_code == 200


@pytest.mark.django_db
def test_without_otp_required_the_password_is_enough(settings, client):
    settings.ADMIN_REQUIRE_OTP = False
    User.objects.create_superuser("operator", "op@example.com", PASSWORD)
    page = client.get(reverse("admin:login")).content.decode()
    assert "otp_token" not in page
    assert client.post(reverse("admin:login"), {"username": "operator", "password": PASSWORD}).status_code == 302
    assert client.get(reverse("admin:index")).status_code == 200


# --- lockout ------------------------------------------------------------------------------------------


@pytest.fixture
def clean_lockouts():
    cache.clear()  # failure counters live in the shared cache, across tests
    yield
    cache.clear()


def attempt(username: str, password: str, address: str, **headers: Any) -> int:
    return Client(REMOTE_ADDR=address, **headers).post(
        reverse("admin:login"), {"username": username, "password": password}).status_code


@pytest.mark.django_db
def test_repeated_failures_lock_the_account_and_the_address_and_are_audited_once(settings, clean_lockouts):
    assert settings.AXES_FAILURE_LIMIT == 5
    User.objects.create_superuser("alice", "a@example.com", PASSWORD)
    User.objects.create_superuser("bob", "b@example.com", PASSWORD)
    User.objects.create_superuser("carol", "c@example.com", PASSWORD)

    assert [attempt("alice", "wrong", "203.0.113.7") for _ in range(4)] == [200] * 4
    assert not AuditEvent.objects.filter(action="admin.login_locked_out").exists()
    assert attempt("alice", "wrong", "203.0.113.7") == 429

    assert attempt("alice", PASSWORD, "198.51.100.1") == 429, "the account is locked from every address"
    assert attempt("bob", PASSWORD, "203.0.113.7") == 429, "the address is locked for every account"
    assert attempt("bob", PASSWORD, "203.0.113.7", HTTP_X_FORWARDED_FOR="192.0.2.99") == 429, \
        "a direct client cannot claim another address"
    assert attempt("carol", PASSWORD, "198.51.100.2") == 302, "another account from another address is unaffected"

    event = AuditEvent.objects.get(action="admin.login_locked_out")
    assert (event.actor_label, event.target_type, event.client_ip) == (
        "system:login-lockout", "auth.user", "203.0.113.7")
    assert event.after is not None
    assert event.after["locked"] == ["username", "ip_address"]
    assert (event.after["username"], event.after["ip_address"]) == ("alice", "203.0.113.7")


@pytest.mark.django_db
def test_an_unknown_username_locks_too_and_names_what_was_typed(clean_lockouts):
    for _ in range(5):
        attempt("nobody", "guess", "203.0.113.8")
    event = AuditEvent.objects.get(action="admin.login_locked_out")
    assert event.after is not None
    assert event.after["username"] == "nobody" and event.target_repr == "nobody"


@pytest.mark.django_db
def test_after_a_manual_reset_the_next_lockout_is_audited_again(clean_lockouts):
    for _ in range(5):
        attempt("alice", "wrong", "203.0.113.9")
    for _ in range(3):  # refused attempts during the lockout write no further rows
        attempt("alice", "wrong", "203.0.113.9")
    assert AuditEvent.objects.filter(action="admin.login_locked_out").count() == 1
    call_command("axes_reset_username", "alice", stdout=StringIO())
    call_command("axes_reset_ip", "203.0.113.9", stdout=StringIO())
    assert attempt("alice", "wrong", "203.0.113.9") == 200
    for _ in range(4):
        attempt("alice", "wrong", "203.0.113.9")
    assert AuditEvent.objects.filter(action="admin.login_locked_out").count() == 2


# --- enrolment ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_enrol_prints_the_provisioning_uri_once_and_replace_recovers_a_lost_device():
    User.objects.create_superuser("operator", "op@example.com", PASSWORD)
    out = StringIO()
    call_command("enrol_otp_device", "operator", stdout=out)
    uri = out.getvalue().strip()
    device = TOTPDevice.objects.get(user__username="operator")
    assert uri.startswith("otpauth://totp/ModeloMan%3Aoperator?secret=") and device.confirmed
    event = AuditEvent.objects.get(action="admin_otp.enrol")
    assert device.key not in str(event.after) and event.after == {"totp_devices": ["authenticator"]}

    with pytest.raises(CommandError, match="already has a TOTP device"):
        call_command("enrol_otp_device", "operator", stdout=StringIO())

    call_command("enrol_otp_device", "operator", "--replace", "--reason", "lost phone", stdout=StringIO())
    assert not TOTPDevice.objects.filter(pk=device.pk).exists()
    assert TOTPDevice.objects.filter(user__username="operator").count() == 1
    assert AuditEvent.objects.get(action="admin_otp.replace").reason == "lost phone"


@pytest.mark.django_db
def test_every_admin_request_renews_the_idle_expiry(settings, client):
    assert settings.SESSION_COOKIE_AGE == 30 * 60 and settings.SESSION_SAVE_EVERY_REQUEST
    client.force_login(User.objects.create_superuser("operator", "op@example.com", PASSWORD))
    response = client.get(reverse("admin:index"))
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert response.status_code == 200 and cookie["max-age"] == 30 * 60 and cookie["httponly"]
