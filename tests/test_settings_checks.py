"""Production refuses what it should (issue 8, item 10): the settings check agrees with
`check --deploy`, the previous pepper is checked, and local settings never digest keys with the
development pepper outside the embedded database."""

import os
import secrets
import subprocess
import sys

import pytest
from django.core.checks.security.base import check_secret_key

from apps.keys.models import Agent, ApiKey
from modeloman.secret_strength import SECRET_KEY_MIN_LENGTH, secret_weakness
from tests.processes import database_url


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   if k not in {"DJANGO_SETTINGS_MODULE", "KEY_PEPPER", "KEY_PEPPER_PREVIOUS", "SECRET_KEY",
                                "REQUEST_SIGNING_KEY", "REQUEST_SIGNING_KEY_PREVIOUS", "REQUIRE_SIGNED_WRITES"}}
    return subprocess.run([sys.executable, "manage.py", *args], env={**environment, **env}, capture_output=True,
                          text=True, timeout=60, check=False)


def production(**env: str) -> dict[str, str]:
    return {"DJANGO_SETTINGS_MODULE": "modeloman.settings.production", "ALLOWED_HOSTS": "modeloman.example.com",
            "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none", "REDIS_URL": "redis://127.0.0.1:1/0",
            "SECRET_KEY": secrets.token_urlsafe(50), "KEY_PEPPER": secrets.token_urlsafe(40),
            "REQUEST_SIGNING_KEY": secrets.token_urlsafe(40), **env}


def random_text(length: int, alphabet: str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


@pytest.mark.parametrize("value", [random_text(n) for n in (32, 40, 49, 50, 80)]
                         + [random_text(60, "abcd"), "django-insecure-" + random_text(50)])
def test_no_secret_key_passes_the_settings_check_and_fails_the_deploy_check(settings, value):
    settings.SECRET_KEY = value
    if secret_weakness(value, min_length=SECRET_KEY_MIN_LENGTH) is None:
        assert check_secret_key(None) == []


def test_production_refuses_a_secret_key_that_check_deploy_would_warn_about():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **production(SECRET_KEY=random_text(40)))
    assert result.returncode != 0
    assert "SECRET_KEY is missing or weak" in result.stderr and "security.W009" not in result.stderr


def test_production_settings_with_strong_secrets_pass_check_deploy():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **production())
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("previous", ["short", "p" * 40, "same"], ids=["short", "few-distinct", "same-as-current"])
def test_production_refuses_a_weak_previous_pepper(previous):
    env = production()
    env["KEY_PEPPER_PREVIOUS"] = env["KEY_PEPPER"] if previous == "same" else previous
    result = manage("check", **env)
    assert result.returncode != 0 and "KEY_PEPPER_PREVIOUS" in result.stderr


@pytest.mark.parametrize("value", ["", "short", "s" * 40, "insecure-" + random_text(40), "same-as-pepper",
                                   "same-as-previous"])
def test_production_refuses_a_missing_or_weak_request_signing_key(value):
    env = production()
    if value == "same-as-pepper":
        value = env["KEY_PEPPER"]
    elif value == "same-as-previous":
        value = env["REQUEST_SIGNING_KEY_PREVIOUS"] = env["REQUEST_SIGNING_KEY"]
    env["REQUEST_SIGNING_KEY"] = value
    result = manage("check", **env)
    assert result.returncode != 0 and "REQUEST_SIGNING_KEY" in result.stderr


@pytest.mark.parametrize(("settings_module", "env", "required"), [
    ("production", {}, "True"),
    ("production", {"REQUIRE_SIGNED_WRITES": "false"}, "False"),
    ("local", {"KEY_PEPPER": random_text(40)}, "False"),
    ("test", {}, "False"),
])
def test_signed_writes_are_required_by_default_in_production_only(settings_module, env, required):
    environment = {**production(), "DJANGO_SETTINGS_MODULE": f"modeloman.settings.{settings_module}", **env}
    if settings_module != "production":
        del environment["REQUEST_SIGNING_KEY"]  # local and test have their own
    result = manage("shell", "-v", "0", "-c", "from django.conf import settings; print(settings.REQUIRE_SIGNED_WRITES, "
                    "len(settings.REQUEST_SIGNING_KEY) >= 32)", **environment)
    assert result.stdout.split() == [required, "True"], result.stderr


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("pepper", [None, "insecure-local-development-key-pepper"], ids=["unset", "explicit"])
def test_manage_py_on_a_real_database_refuses_the_development_pepper(pepper):
    """An operator on a server who forgets DJANGO_SETTINGS_MODULE gets local settings: with a real
    database they must not create a key digested with the public development pepper."""
    env = {"DATABASE_URL": database_url(), **({"KEY_PEPPER": pepper} if pepper else {})}
    result = manage("create_agent_key", "--project", "prod", "--agent", "a1", "--scopes", "tasks:write", "--create",
                    **env)
    assert result.returncode != 0
    assert "need KEY_PEPPER" in result.stderr and "mmk_" not in result.stdout
    assert not ApiKey.objects.exists() and not Agent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_manage_py_on_a_real_database_works_with_a_real_pepper():
    result = manage("create_agent_key", "--project", "dev", "--agent", "a1", "--scopes", "tasks:write", "--create",
                    DATABASE_URL=database_url(), KEY_PEPPER=secrets.token_urlsafe(40))
    assert result.returncode == 0, result.stderr
    assert ApiKey.objects.filter(agent__name="a1").count() == 1
