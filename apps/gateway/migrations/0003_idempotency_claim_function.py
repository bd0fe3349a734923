"""`idempotency_claim(...)`: claiming an idempotency key as one server-side call (issue 10).

The claim rules of apps.gateway.idempotency in one place that both the full path (a claim, then
the write, then the stored response, in one transaction) and a write done in one statement
(`policy_admit_once`, policy migration 0009) call:

- the key is free: a new `in_flight` record, its id returned (`claim_id`);
- a record of an expired key, or an `in_flight` record older than the lease (a former-scheme
  claim whose writer died), is taken over: its id returned;
- otherwise the record as it stands (`claim_id` NULL): the caller replays it, or refuses (another
  fingerprint: 422; still in flight: 409).

A concurrent claim of the same key waits on the first one's uncommitted row (the unique index),
then sees it committed (replay) or gone (claim again: at most three passes, then "in flight").
"""

from django.db import migrations

FORWARD = r"""
CREATE OR REPLACE FUNCTION idempotency_claim(
    p_principal text, p_key text, p_operation text, p_fingerprint text,
    p_now timestamptz, p_expires_at timestamptz, p_lease_cutoff timestamptz
) RETURNS TABLE (claim_id bigint, record_state text, record_fingerprint text, record_status integer,
                 record_body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    attempt integer;
    record_id bigint;
BEGIN
    FOR attempt IN 1 .. 3 LOOP
        INSERT INTO telemetry_idempotencyrecord (principal, key, operation, fingerprint, state, created_at,
                                                 expires_at)
        VALUES (p_principal, p_key, p_operation, p_fingerprint, 'in_flight', p_now, p_expires_at)
        ON CONFLICT (principal, key) DO NOTHING
        RETURNING id INTO claim_id;
        IF claim_id IS NOT NULL THEN
            record_state := 'in_flight'; record_fingerprint := p_fingerprint;
            RETURN NEXT;
            RETURN;
        END IF;
        SELECT r.id, r.state, r.fingerprint, r.response_status, r.response_body
          INTO record_id, record_state, record_fingerprint, record_status, record_body
          FROM telemetry_idempotencyrecord r WHERE r.principal = p_principal AND r.key = p_key;
        CONTINUE WHEN NOT FOUND;  -- deleted since the INSERT (reaped, or its writer rolled back)
        UPDATE telemetry_idempotencyrecord r
           SET operation = p_operation, fingerprint = p_fingerprint, state = 'in_flight', created_at = p_now,
               expires_at = p_expires_at, response_status = NULL, response_body = NULL
         WHERE r.id = record_id
           AND (r.expires_at <= p_now OR (r.state = 'in_flight' AND r.created_at <= p_lease_cutoff))
        RETURNING r.id INTO claim_id;
        IF claim_id IS NOT NULL THEN
            record_state := 'in_flight'; record_fingerprint := p_fingerprint;
            record_status := NULL; record_body := NULL;
        END IF;
        RETURN NEXT;
        RETURN;
    END LOOP;
    -- The key kept vanishing: other requests with it keep failing. Answer as for one in flight.
    claim_id := NULL; record_state := 'in_flight'; record_fingerprint := p_fingerprint;
    record_status := NULL; record_body := NULL;
    RETURN NEXT;
END;
$$;
"""

REVERSE = "DROP FUNCTION IF EXISTS idempotency_claim(text, text, text, text, timestamptz, timestamptz, timestamptz);"


class Migration(migrations.Migration):
    dependencies = [("gateway", "0002_signed_write_nonce")]

    operations = [migrations.RunSQL(FORWARD, reverse_sql=REVERSE)]
