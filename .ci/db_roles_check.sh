#!/usr/bin/env bash
# CI: the two database roles end to end. A fresh database; deploy/db_roles.sql; the owner
# migrates it from nothing; the script again (safe to repeat); the runtime role issues a key
# (audited) and verifies the chain, and cannot UPDATE, DELETE or TRUNCATE audit rows.
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${ROLES_CI_DB:-modeloman_roles_ci} OWNER=${ROLES_CI_OWNER:-modeloman_ci_owner} APP=${ROLES_CI_APP:-modeloman_ci_app}
PSQL=(psql -X -q -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1)
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
roles() { "${PSQL[@]}" -d "$DB" -v owner="$OWNER" -v app="$APP" -f deploy/db_roles.sql; }
roles
export DJANGO_SETTINGS_MODULE=modeloman.settings.local
export DATABASE_URL="postgres://$APP@127.0.0.1:5432/$DB" MIGRATION_DATABASE_URL="postgres://$OWNER@127.0.0.1:5432/$DB"
.venv/bin/python manage.py migrate --noinput --verbosity 0
roles
.venv/bin/python manage.py create_agent_key --project roles --agent a1 --scopes tasks:write --create >/dev/null
.venv/bin/python manage.py verify_audit
for sql in "UPDATE audit_auditevent SET reason = 'x'" "DELETE FROM audit_auditevent" "TRUNCATE audit_auditevent CASCADE"; do
  if psql -X -q -h 127.0.0.1 -U "$APP" -d "$DB" -v ON_ERROR_STOP=1 -c "$sql" 2>/dev/null; then
    echo "the runtime role could run: $sql" >&2
    exit 1
  fi
done
"${PSQL[@]}" -d postgres -c "DROP DATABASE $DB"
echo "two database roles: OK"
