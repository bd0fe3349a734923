"""The audit table is append-only: the runtime role has no UPDATE, DELETE or TRUNCATE privilege
on it (deploy/db_roles.sql), and triggers stop even the table's owner."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.db import DatabaseError, connection, transaction

from apps.audit.models import AuditEvent
from apps.keys import services
from tests.factories import TEST_ACTOR, issue_key
from tests.processes import BASE_DIR, database_url

STATEMENTS = {
    "update": "UPDATE audit_auditevent SET reason = 'rewritten'",
    "delete": "DELETE FROM audit_auditevent",
    "truncate": "TRUNCATE audit_auditevent CASCADE",
}


def run_db_roles_script(owner: str, app: str) -> subprocess.CompletedProcess:
    s = connection.settings_dict
    env = {"PGHOST": s["HOST"] or "127.0.0.1", "PGPORT": str(s["PORT"] or 5432), "PGUSER": s["USER"],
           "PGPASSWORD": s["PASSWORD"] or "", "PGDATABASE": s["NAME"], "PATH": "/usr/bin:/bin"}
    return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"owner={owner}", "-v", f"app={app}",
                           "-f", str(BASE_DIR / "deploy" / "db_roles.sql")],
                          env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def roles(django_db_blocker):
    """The deploy script's two roles on the test database (role names are cluster-wide, so
    they carry the test database's name), dropped again afterwards."""
    name = connection.settings_dict["NAME"]
    owner, app = f"{name}_owner", f"{name}_app"
    first, second = run_db_roles_script(owner, app), run_db_roles_script(owner, app)
    assert (first.returncode, first.stderr) == (0, "")
    assert (second.returncode, second.stderr) == (0, ""), "the script must be safe to run twice"
    yield owner, app
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        for role in (app, owner):
            cursor.execute(f'DROP OWNED BY "{role}"')
            cursor.execute(f'DROP ROLE "{role}"')


def execute(*statements: str) -> None:
    with transaction.atomic(), connection.cursor() as cursor:  # a savepoint: the test goes on after a refusal
        for sql in statements:
            cursor.execute(sql)


@pytest.mark.django_db(transaction=True)
def test_the_runtime_role_writes_audited_changes_but_cannot_change_or_remove_audit_rows(roles):
    _, app = roles
    issued = issue_key()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f'SET LOCAL ROLE "{app}"')
            cursor.execute("SELECT current_user")
            assert cursor.fetchone() == (app,)
        # The application's own work goes through: an audited change, as the runtime role.
        services.api_key_revoke(actor=TEST_ACTOR, api_key=issued.api_key, reason="test")
        for sql in STATEMENTS.values():
            with pytest.raises(DatabaseError, match="permission denied for table audit_auditevent"):
                execute(sql)
        with pytest.raises(DatabaseError, match="must be owner of table audit_auditevent"):
            execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_auditevent_append_only")
    assert AuditEvent.objects.filter(action="api_key.revoke", api_key=issued.api_key).count() == 1
    assert AuditEvent.objects.filter(reason="rewritten").count() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("statement", ["update", "delete", "truncate"])
def test_triggers_stop_the_owner_too(statement):
    issue_key()
    rows = list(AuditEvent.objects.values_list("id", "reason"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableowner = current_user FROM pg_tables WHERE tablename = 'audit_auditevent'")
        assert cursor.fetchone() == (True,)
    with pytest.raises(DatabaseError, match=f"audit rows are append-only: {statement.upper()}"):
        # The test connections may truncate to reset the database; other sessions may not.
        execute("SET LOCAL modeloman.allow_audit_truncate = off", STATEMENTS[statement])
    assert list(AuditEvent.objects.values_list("id", "reason")) == rows != []


@pytest.mark.django_db(transaction=True)
def test_migrate_connects_as_the_owner_and_everything_else_as_the_runtime_role():
    owner_url = database_url()
    runtime_url = owner_url.replace(f"//{connection.settings_dict['USER']}:", "//no_such_runtime_role:", 1)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "modeloman.settings.test", "DATABASE_URL": runtime_url,
           "MIGRATION_DATABASE_URL": owner_url}

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    migrated = manage("migrate", "--noinput")
    assert (migrated.returncode, migrated.stderr) == (0, "")
    verified = manage("verify_audit")
    assert verified.returncode == 1
    assert 'role "no_such_runtime_role" does not exist' in verified.stderr
