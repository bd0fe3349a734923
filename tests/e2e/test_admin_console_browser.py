"""End to end: the operator's console in headless Chromium (Debian's `chromium` through Playwright
for Python), served by real gunicorn with local settings on the test database: log in, read the
console, engage the global kill switch through its confirmation page, see it engaged. A screenshot
of the console goes to var/screenshots/ for a person to look at."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from apps.audit.models import AuditEvent
from apps.policy.models import Policy
from tests.e2e.test_leaderboard_browser import CHROMIUM, SCREENSHOTS
from tests.factories import issue_key, make_cap, make_price
from tests.processes import BASE_DIR, database_url, gunicorn_server

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]


def test_console_and_global_kill_switch_in_a_real_browser():
    # Hashed as the server (local settings) checks it; the test settings' fast hasher is not there.
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.PBKDF2PasswordHasher"]):
        User.objects.create_superuser("operator", "op@example.com", "correct horse battery staple")
    make_price("gpt-test")
    make_cap(subject=issue_key().api_key.agent, limit="50")
    settings_env = {"DJANGO_SETTINGS_MODULE": "modeloman.settings.local", "DATABASE_URL": database_url(),
                    "KEY_PEPPER": os.environ.get("KEY_PEPPER") or secrets.token_urlsafe(40),
                    "ADMIN_REQUIRE_OTP": "false"}  # production asks for the TOTP code too
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"], cwd=BASE_DIR,
                   env={**os.environ, **settings_env}, check=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "admin-console.png"

    from playwright.sync_api import sync_playwright  # after every database call: it runs an event loop

    with gunicorn_server(workers=1, env=settings_env) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{base}/admin/")
            page.fill("#id_username", "operator")
            page.fill("#id_password", "correct horse battery staple")
            page.click("input[type=submit]")
            page.wait_for_selector("#console-admissions")
            assert page.title() == "Console | ModeloMan operators"
            assert page.locator("#site-name").inner_text().strip() == "ModeloMan"
            assert page.get_attribute("#user-tools a[href='/']", "href") == "/"  # "view site": the public board
            for section in ("#console-kill-switches", "#console-admissions", "#console-spenders",
                            "#console-rate-limited"):
                assert page.locator(section).is_visible(), section
            assert "No kill switch is engaged." in page.locator("#console-kill-switches").inner_text()

            page.click("#engage-global-kill-switch")
            page.wait_for_selector("#confirm-kill-switch")
            page.fill("#id_reason", "browser test: incident drill")
            page.click("#confirm-kill-switch")
            page.wait_for_selector("#release-global-kill-switch")
            switches = page.locator("#console-kill-switches").inner_text()
            assert "ENGAGED" in switches and "incident drill" in switches
            page.screenshot(path=str(shot), full_page=True)
            assert errors == []
        finally:
            browser.close()

    assert Policy.objects.get(subject_type="global").kill_switch is True
    audit = AuditEvent.objects.filter(target_type="policy.policy").latest("chain_seq")
    assert (audit.actor_label, audit.reason) == ("user:operator", "browser test: incident drill")
    assert shot.stat().st_size > 5000
