-- The two database roles ModeloMan runs with (docs/runbooks.md, "Database roles").
--
--   owner: runs `manage.py migrate` (MIGRATION_DATABASE_URL) and owns every table;
--   app:   the web workers, gRPC and jobs (DATABASE_URL): reads and writes rows, no DDL, and
--          on the audit table SELECT and INSERT only -- it can neither change nor remove history.
--
-- Run as a superuser, connected to the ModeloMan database, before the first migrate and
-- again after every migrate (it is safe to run any number of times):
--
--   psql "postgres://postgres@db/modeloman" -v ON_ERROR_STOP=1 \
--        -v owner=modeloman_owner -v app=modeloman_app \
--        [-v owner_password=...] [-v app_password=...] -f deploy/db_roles.sql
\set ON_ERROR_STOP on
BEGIN;

SELECT format('CREATE ROLE %I LOGIN', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'app')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app') \gexec

-- Neither role may grant itself more than it has; the app role is nobody's member.
SELECT format('ALTER ROLE %I NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS', role)
FROM (VALUES (:'owner'), (:'app')) AS roles (role) \gexec
SELECT format('REVOKE %I FROM %I', granted.rolname, :'app')
FROM pg_auth_members AS m
JOIN pg_roles AS granted ON granted.oid = m.roleid
JOIN pg_roles AS member ON member.oid = m.member
WHERE member.rolname = :'app' \gexec

\if :{?owner_password}
ALTER ROLE :"owner" PASSWORD :'owner_password';
\endif
\if :{?app_password}
ALTER ROLE :"app" PASSWORD :'app_password';
\endif

SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I, %I', current_database(), :'owner', :'app') \gexec
GRANT USAGE, CREATE ON SCHEMA public TO :"owner";
GRANT USAGE ON SCHEMA public TO :"app";

-- Rows in every table, today's and those later migrations create as the owner...
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"app";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO :"app";

-- ...except the audit trail: append and read only (migration audit 0002 revokes the same).
SELECT format('REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON audit_auditevent FROM %I', :'app')
WHERE to_regclass('audit_auditevent') IS NOT NULL \gexec

COMMIT;
