"""Database backstop: once `revoked_at` is set it can never change, whatever code runs."""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION keys_apikey_revocation_is_final() RETURNS trigger AS $$
BEGIN
    IF OLD.revoked_at IS NOT NULL AND (
        NEW.revoked_at IS DISTINCT FROM OLD.revoked_at
        OR NEW.revoked_reason IS DISTINCT FROM OLD.revoked_reason
    ) THEN
        RAISE EXCEPTION 'API key % is revoked; revocation is final', OLD.key_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS keys_apikey_revocation_is_final ON keys_apikey;
CREATE TRIGGER keys_apikey_revocation_is_final
    BEFORE UPDATE ON keys_apikey
    FOR EACH ROW EXECUTE FUNCTION keys_apikey_revocation_is_final();
"""

REVERSE = """
DROP TRIGGER IF EXISTS keys_apikey_revocation_is_final ON keys_apikey;
DROP FUNCTION IF EXISTS keys_apikey_revocation_is_final();
"""


class Migration(migrations.Migration):
    dependencies = [("keys", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, reverse_sql=REVERSE)]
