"""Audit rows become append-only and hash-chained (SPEC §9).

1. The chain head: one row holding the last `chain_seq` and `hash`; every insert locks it.
2. Existing rows are chained in id order (the order they were written), and the head is set.
3. `chain_seq`, `prev_hash` and `hash` become mandatory (NOT NULL, a CHECK on their shape).
4. Triggers: UPDATE and DELETE are refused for every role, the owner included; TRUNCATE is
   refused unless the session has set `modeloman.allow_audit_truncate = on`. That setting
   exists for the test suite, whose transactional tests reset the database by truncating
   every table (tests/conftest.py sets it on its connections). It weakens nothing: a role that
   may TRUNCATE the table at all is its owner (the runtime role has no TRUNCATE privilege),
   and the owner can disable any trigger anyway; the trigger is there to stop accidents,
   the privileges are what stop the application.
5. No role but the owner keeps UPDATE, DELETE or TRUNCATE on the table, whatever was granted
   before (deploy/db_roles.sql grants the runtime role SELECT and INSERT only).

It imports `apps.audit.chain`, the frozen version-1 encoding (pure, no models): the stored
hashes are defined by it, and `verify_audit` must recompute them with it forever, so it
cannot drift away from what this migration wrote.
"""

import django.db.models
from django.db import migrations, models

from apps.audit.chain import GENESIS_HASH, row_hash  # frozen v1 encoding; see the docstring

FORWARD = """
CREATE OR REPLACE FUNCTION audit_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit rows are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION audit_auditevent_no_truncate() RETURNS trigger AS $$
BEGIN
    IF current_setting('modeloman.allow_audit_truncate', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit rows are append-only: TRUNCATE on % refused', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS audit_auditevent_append_only ON audit_auditevent;
CREATE TRIGGER audit_auditevent_append_only
    BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_auditevent_append_only();

DROP TRIGGER IF EXISTS audit_auditevent_no_truncate ON audit_auditevent;
CREATE TRIGGER audit_auditevent_no_truncate
    BEFORE TRUNCATE ON audit_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION audit_auditevent_no_truncate();

DO $$
DECLARE
    grantee_oid oid;
BEGIN
    FOR grantee_oid IN
        SELECT DISTINCT acl.grantee
        FROM pg_class AS c, aclexplode(c.relacl) AS acl
        WHERE c.oid = 'audit_auditevent'::regclass
          AND acl.grantee <> c.relowner
          AND acl.privilege_type IN ('UPDATE', 'DELETE', 'TRUNCATE')
    LOOP
        EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON audit_auditevent FROM %s',
                       CASE WHEN grantee_oid = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(grantee_oid)) END);
    END LOOP;
END;
$$;
"""

# Revoked privileges are not granted back: who should hold them is the deploy's decision.
REVERSE = """
DROP TRIGGER IF EXISTS audit_auditevent_no_truncate ON audit_auditevent;
DROP TRIGGER IF EXISTS audit_auditevent_append_only ON audit_auditevent;
DROP FUNCTION IF EXISTS audit_auditevent_no_truncate();
DROP FUNCTION IF EXISTS audit_auditevent_append_only();
"""

CHAINED = ("created_at", "actor_type", "actor_label", "actor_user_id", "actor_key_id", "action", "target_type",
           "target_id", "target_repr", "api_key_id", "before", "after", "reason", "client_ip", "request_id")


def chain_existing_rows(apps, schema_editor):
    """Chain the rows written before the chain existed, oldest id first, in pages of 1,000."""
    alias = schema_editor.connection.alias
    AuditEvent = apps.get_model("audit", "AuditEvent")
    AuditChainHead = apps.get_model("audit", "AuditChainHead")
    events = AuditEvent.objects.using(alias)
    if events.filter(chain_seq__isnull=False).exists():
        raise RuntimeError("audit rows already carry chain_seq values; chain them by hand before migrating")
    seq, prev_hash, last_id = 0, GENESIS_HASH, 0
    while page := list(events.filter(id__gt=last_id).order_by("id").values("id", *CHAINED)[:1000]):
        for row in page:
            seq += 1
            row.update(chain_seq=seq, prev_hash=prev_hash)
            prev_hash = row_hash(row)
            events.filter(id=row["id"]).update(chain_seq=seq, prev_hash=row["prev_hash"], hash=prev_hash)
        last_id = page[-1]["id"]
    AuditChainHead.objects.using(alias).create(id=1, seq=seq, hash=prev_hash)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="AuditChainHead",
            fields=[
                ("id", models.SmallIntegerField(default=1, primary_key=True, serialize=False)),
                ("seq", models.BigIntegerField(default=0)),
                ("hash", models.CharField(max_length=64)),
            ],
            options={
                "constraints": [models.CheckConstraint(condition=models.Q(("id", 1)),
                                                       name="audit_chainhead_single_row")],
            },
        ),
        # Reversing leaves the chain values in place (harmless: the columns stay).
        migrations.RunPython(chain_existing_rows, reverse_code=migrations.RunPython.noop),
        migrations.AlterField(
            model_name="auditevent",
            name="chain_seq",
            field=models.BigIntegerField(unique=True),
        ),
        migrations.AddConstraint(
            model_name="auditevent",
            constraint=models.CheckConstraint(
                condition=django.db.models.Q(chain_seq__gte=1, prev_hash__regex="^[0-9a-f]{64}$",
                                             hash__regex="^[0-9a-f]{64}$"),
                name="audit_chain_columns_filled",
            ),
        ),
        migrations.RunSQL(FORWARD, reverse_sql=REVERSE),
    ]
