import pytest

pytestmark = pytest.mark.django_db


def test_healthz_is_ok_without_touching_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_checks_database_and_cache(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "cache": "ok"}


def test_readyz_is_503_when_the_cache_is_unreachable(client, settings):
    settings.CACHES = {"default": {
        "BACKEND": "modeloman.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
    }}  # Django's setting_changed signal rebuilds the cache handler
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["cache"] == "unavailable"


def test_openapi_schema_lists_the_api(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert "/api/v1/whoami" in response.json()["paths"]


def test_openapi_describes_telemetry_bodies_from_the_validating_structs(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    body = schema["paths"]["/api/v1/attempts"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    one, batch = body["oneOf"]
    assert set(one["required"]) == {"model", "success", "input_tokens", "output_tokens", "latency_ms"}
    assert one["properties"]["latency_ms"]["maximum"] == 3_600_000
    assert batch["properties"]["attempts"]["maxItems"] == 1000
    assert "\\Z" not in str(schema)  # patterns are ECMA-262 in the document


def test_unknown_api_path_is_a_problem_document(client):
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"


def test_write_method_on_read_only_endpoint_is_405_problem(api_client, bearer):
    from tests.factories import issue_key

    response = api_client.post("/api/v1/whoami", {}, format="json", **bearer(issue_key().token))
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_access_table_denies_missing_scope_and_unknown_operations():
    from apps.gateway.access import MissingScope, require_access
    from apps.gateway.auth import authenticate_token
    from apps.gateway.errors import Forbidden
    from tests.factories import issue_key

    principal = authenticate_token(issue_key(scopes=["policy:read"]).token)
    require_access("GetPolicy", principal)
    with pytest.raises(MissingScope):
        require_access("SetPolicy", principal)
    with pytest.raises(Forbidden):
        require_access("NoSuchOperation", principal)


@pytest.mark.parametrize("secret_key, pepper", [("", "p" * 40), ("change-me-" * 5, "p" * 40),
                                                ("s" * 40, ""), ("a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8", "short")])
def test_production_settings_refuse_missing_or_weak_secrets(secret_key, pepper):
    import os
    import subprocess
    import sys

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "modeloman.settings.production",
           "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none", "REDIS_URL": "redis://127.0.0.1:1/0",
           "SECRET_KEY": secret_key, "KEY_PEPPER": pepper}
    result = subprocess.run([sys.executable, "manage.py", "check"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode != 0
    assert "missing or weak" in result.stderr


def test_production_settings_refuse_to_start_without_a_database_url():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DJANGO_SETTINGS_MODULE"] = "modeloman.settings.production"
    result = subprocess.run([sys.executable, "manage.py", "check"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode != 0 and "DATABASE_URL is required" in result.stderr
