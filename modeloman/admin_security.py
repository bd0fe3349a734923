"""The operator door: the second factor, the login lockout's audit row, and the client address
django-axes counts failures against.

The middleware enforces the second factor on every path under ADMIN_URL, whichever view serves
it; `modeloman.admin_site.ModeloManAdminSite` uses the login form below, which asks for the TOTP code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from axes.helpers import get_cache, get_cache_timeout, get_client_username, make_cache_key_list
from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.signals import user_login_failed
from django.db import transaction
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django_otp import devices_for_user
from django_otp.admin import OTPAdminAuthenticationForm

from apps.audit.services import Actor, audit_record
from apps.gateway.identity import client_ip

if TYPE_CHECKING:
    from django_otp.plugins.otp_totp.models import TOTPDevice


def login_client_ip(request: HttpRequest) -> str | None:
    """The address django-axes locks out (AXES_CLIENT_IP_CALLABLE): the project's one rule, which
    believes X-Forwarded-For only from the trusted reverse proxy."""
    return client_ip(request)


def _under_admin(request: HttpRequest) -> bool:
    return request.path_info.startswith(f"/{settings.ADMIN_URL}")


class AdminOTPMiddleware:
    """With ADMIN_REQUIRE_OTP, a session that has not passed the second factor is anonymous on every
    admin page: the admin answers each with its login page, whose form asks for the TOTP code.
    (Such a session exists only if it began before OTP was required, or through another door.)"""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if settings.ADMIN_REQUIRE_OTP and _under_admin(request):
            user = request.user
            # django_otp's OTPMiddleware (earlier in MIDDLEWARE) gives request.user its is_verified().
            if user.is_authenticated and not user.is_verified():  # type: ignore[attr-defined]
                request.user = AnonymousUser()
        return self.get_response(request)


class AdminLoginForm(OTPAdminAuthenticationForm):
    """The admin login: password, then (with ADMIN_REQUIRE_OTP) the code of the user's TOTP device,
    in the same form. A user with one device need not pick it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if not settings.ADMIN_REQUIRE_OTP:
            for name in ("otp_device", "otp_token", "otp_challenge"):
                del self.fields[name]

    def clean(self) -> dict:
        cleaned = super(OTPAdminAuthenticationForm, self).clean()  # the password (and is_staff)
        if settings.ADMIN_REQUIRE_OTP:
            self.clean_otp(self.get_user())
        return cleaned

    def _update_form(self, user) -> None:  # django-otp's hook after a refused code
        super()._update_form(user)
        self.fields["password"].widget.render_value = False  # never echo the password into the page

    def _chosen_device(self, user):  # django-otp's hook: the device the code is checked against
        device = super()._chosen_device(user)
        if device is None:
            devices = list(devices_for_user(user, confirmed=True, for_verify=True))
            device = devices[0] if len(devices) == 1 else None
        return device


def _counters(username: str | None, ip_address: str | None) -> list[tuple[str, str]]:
    """(lockout parameter, django-axes's failure counter key in the cache) for this attempt."""
    return [(parameter, make_cache_key_list([{parameter: value}])[0])
            for parameter, value in (("username", username), ("ip_address", ip_address)) if value]


@receiver(user_login_failed, dispatch_uid="modeloman.admin_security.new_failure_series")
def _new_failure_series(sender: object, credentials: dict, request: HttpRequest | None = None,
                        **kwargs: object) -> None:
    """A counter at 1 starts a new series (after the cool-off, or `axes_reset_*`): forget that the
    last lockout of that username or address was audited. Runs after django-axes's own receiver
    (connected when its app loaded), so the counters already include this failure."""
    if request is None or not getattr(settings, "AXES_ENABLED", True):  # axes' default when unset
        return
    cache = get_cache()
    username = get_client_username(request, credentials)
    for _, counter in _counters(username, getattr(request, "axes_ip_address", None)):
        if cache.get(counter) == 1:
            cache.delete(f"{counter}-audited")


@receiver(user_locked_out, dispatch_uid="modeloman.admin_security.audit_lockout")
def audit_lockout(sender: object, request: HttpRequest, username: str | None, ip_address: str | None,
                  **kwargs: object) -> None:
    """One audit row when a username or an address becomes locked out. django-axes signals every
    refused attempt during a lockout too; a marker in the shared cache (for as long as the lockout
    lasts) keeps those from each writing a row, which would let anyone fill the audit trail."""
    cache = get_cache()
    timeout = get_cache_timeout(request)
    newly_locked, markers = [], []
    for parameter, counter in _counters(username, ip_address):
        marker = f"{counter}-audited"
        if (cache.get(counter, 0) or 0) >= settings.AXES_FAILURE_LIMIT and cache.add(marker, 1, timeout=timeout):
            newly_locked.append(parameter)
            markers.append(marker)
    if not newly_locked:
        return
    user_model = get_user_model()
    name = (username or "")[:150]
    user = user_model.objects.filter(**{user_model.USERNAME_FIELD: name}).first() if name else None
    try:
        with transaction.atomic():
            audit_record(
                actor=Actor.system("login-lockout"), action="admin.login_locked_out",
                target=user or user_model(**{user_model.USERNAME_FIELD: name}),
                after={"username": name, "ip_address": ip_address, "locked": newly_locked,
                       "failure_limit": settings.AXES_FAILURE_LIMIT, "lockout_seconds": timeout},
                reason=f"{settings.AXES_FAILURE_LIMIT} failed admin logins",
            )
    except Exception:
        cache.delete_many(markers)  # the next refused attempt tries again
        raise


@transaction.atomic
def totp_device_enrol(*, actor: Actor, user, name: str = "authenticator", replace: bool = False,
                      reason: str = "") -> TOTPDevice:
    """Give `user` a confirmed TOTP device and return it (its `config_url` is the provisioning URI,
    to be shown once). `replace` first removes the user's TOTP devices: the way back in after a
    lost phone. Audited; the audit row never holds the device's secret."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    removed = list(TOTPDevice.objects.select_for_update().filter(user=user).values_list("name", flat=True))
    if removed and not replace:
        raise ValueError(f"{user.get_username()} already has a TOTP device; pass replace to swap it.")
    TOTPDevice.objects.filter(user=user).delete()
    device = TOTPDevice.objects.create(user=user, name=name, confirmed=True)
    audit_record(actor=actor, action="admin_otp.replace" if removed else "admin_otp.enrol", target=user,
                 before={"totp_devices": removed} if removed else None,
                 after={"totp_devices": [device.name]}, reason=reason)
    return device
