"""End to end: real gunicorn on a seeded database, headless Chromium (Debian's `chromium`,
driven by Playwright for Python — no browser download), axe-core from npm (tests/e2e).

Loads the overview and a model's detail page at desktop and phone widths, checks the rows
and the charts, that nothing logs an error, that a phone never scrolls sideways, and that
axe finds no serious or critical violation. Screenshots go to var/screenshots/ for a person
to look at. Skipped only where chromium is not installed (CI installs it: .ci/run).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.core.cache import cache
from django.core.management import call_command

from tests.processes import BASE_DIR, database_url, gunicorn_server

if TYPE_CHECKING:
    from playwright.sync_api import Error, ViewportSize

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = BASE_DIR / "var" / "screenshots"
VIEWPORTS: dict[str, ViewportSize] = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310  # loopback test server
        return response.status, dict(response.headers), response.read()


def test_overview_and_detail_in_a_real_browser():
    assert AXE.exists(), "axe-core is missing: run `npm ci` in tests/e2e"
    call_command("seed_demo", "--days", "30", "--attempts-per-day", "300", verbosity=0)
    cache.clear()
    # Local settings (manifest static files) on the test database; they want a real pepper with
    # any DATABASE_URL, and the public pages never digest a key, so any strong value will do.
    settings_env = {"DJANGO_SETTINGS_MODULE": "modeloman.settings.local", "DATABASE_URL": database_url(),
                    "KEY_PEPPER": os.environ.get("KEY_PEPPER") or secrets.token_urlsafe(40)}
    # Production-like static files: hashed names from collectstatic, served by whitenoise.
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"], cwd=BASE_DIR,
                   env={**os.environ, **settings_env}, check=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright  # after every database call: it runs an event loop

    with gunicorn_server(workers=1, env=settings_env) as base:
        _, _, overview_html = _get(f"{base}/?window=30d")
        (stylesheet,) = re.findall(rb'href="(/static/leaderboard/leaderboard\.[0-9a-f]{12}\.css)"', overview_html)
        _, css_headers, _ = _get(base + stylesheet.decode())
        assert "immutable" in css_headers["Cache-Control"]
        assert b"<script" not in overview_html  # nothing needs JavaScript
        detail_link = re.search(rb'href="(/models/[^"?]+/)\?window=30d"', overview_html)
        assert detail_link is not None
        detail = detail_link.group(1).decode()

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync"],
            )
            try:
                for viewport_name, viewport in VIEWPORTS.items():
                    context = browser.new_context(viewport=viewport)
                    page = context.new_page()
                    problems: list[str] = []

                    def on_console(message, problems=problems):
                        if message.type == "error":
                            problems.append(message.text)

                    page.on("console", on_console)
                    def on_page_error(error: Error, problems: list[str] = problems) -> None:
                        problems.append(str(error))

                    page.on("pageerror", on_page_error)
                    for name, path in (("overview", "/?window=30d"), ("model-detail", f"{detail}?window=30d")):
                        response = page.goto(base + path)
                        assert response is not None and response.status == 200, path
                        rows = page.locator("table.board tbody tr")
                        assert rows.count() >= 3, (path, rows.count())
                        if name == "overview":
                            assert page.locator("svg.spark").count() >= 3
                            caption = page.locator("table.board caption")
                            assert caption.count() == 1
                            box = caption.bounding_box()
                            assert box is not None and box["width"] > viewport["width"] * 0.6  # not squeezed
                        else:
                            chart = page.locator("svg.chart")
                            assert chart.count() == 1 and chart.locator("polyline.line").count() >= 1
                            assert "success rate" in (chart.text_content() or "")
                            box = chart.bounding_box()
                            assert box is not None and box["width"] > 200
                        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                        assert overflow <= 0, (path, viewport_name, overflow)
                        page.screenshot(path=str(SCREENSHOTS / f"{name}-{viewport_name}.png"), full_page=True)
                        page.add_script_tag(path=str(AXE))
                        violations = page.evaluate(
                            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
                            ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
                            ".map(v => v.id + ': ' + v.help + ' — ' + v.nodes.map(n => n.target.join(' ')).join(', '))")
                        assert violations == [], (path, viewport_name, violations)
                    assert problems == [], problems
                    context.close()
            finally:
                browser.close()
    for name in ("overview", "model-detail"):
        for viewport_name in VIEWPORTS:
            assert (SCREENSHOTS / f"{name}-{viewport_name}.png").stat().st_size > 5000
