"""`policy_admit_once(...)`: an admission under its idempotency key as ONE statement (issue 10).

In autocommit, one statement is one transaction: the claim (`idempotency_claim`, gateway migration
0003), the reservation (`policy_reserve`) and the stored response commit together, in one round trip
instead of five (BEGIN, claim, reserve, store, COMMIT). apps.policy.ledger.admit_in_one_statement
calls it for the common case only: every rule passed (Python decides those from the cached policy),
so all that is left to decide is whether the caps fit.

`p_body` is the response the transport rendered with every cap's figures still to fill; this fills
`limit`, `used`, `reserved` and `remaining` of `caps[i]` from the ledger row reserved for cap i
(decimal strings with six places, as both transports render money) and stores it as the record's
response. The row returned is `idempotency_claim`'s: a new claim comes back `completed` with that
body, which is the answer; a key already used comes back as it stands, to replay or refuse, and
nothing is reserved.

Anything the common case does not cover raises, which undoes the whole statement (the claim
too) so the caller can run the full path in its place: an enforced cap that does not fit
(`policy_reserve`'s MM001) and a dry-run cap that would deny (MM002): both are recorded as an
admission decision there.
"""

from django.db import migrations

FORWARD = r"""
CREATE OR REPLACE FUNCTION policy_admit_once(
    p_principal text, p_key text, p_operation text, p_fingerprint text,
    p_now timestamptz, p_record_expires_at timestamptz, p_lease_cutoff timestamptz,
    p_caps jsonb, p_reservation_id uuid, p_agent_id bigint, p_model text, p_tokens bigint, p_cost numeric,
    p_reservation_expires_at timestamptz, p_status integer, p_body jsonb
) RETURNS TABLE (claim_id bigint, record_state text, record_fingerprint text, record_status integer,
                 record_body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    claim record;
    cap record;
    i integer := 0;
    body jsonb := p_body;
    cap_ids bigint[];
    window_starts timestamptz[];
    amounts numeric[];
    enforce boolean[];
    metrics text[];
BEGIN
    SELECT * INTO claim FROM idempotency_claim(p_principal, p_key, p_operation, p_fingerprint, p_now,
                                               p_record_expires_at, p_lease_cutoff);
    claim_id := claim.claim_id; record_state := claim.record_state;
    record_fingerprint := claim.record_fingerprint; record_status := claim.record_status;
    record_body := claim.record_body;
    IF claim_id IS NULL THEN  -- the key was used: replay or refuse, reserve nothing
        RETURN NEXT;
        RETURN;
    END IF;
    -- The caps come as one JSON array, [[cap id, window start, amount, enforce, metric], ...] in cap-id
    -- order: five SQL arrays cost the client several times more to send (psycopg adapts them in Python).
    SELECT array_agg((c->>0)::bigint ORDER BY n), array_agg((c->>1)::timestamptz ORDER BY n),
           array_agg((c->>2)::numeric ORDER BY n), array_agg((c->>3)::boolean ORDER BY n), array_agg(c->>4 ORDER BY n)
      INTO cap_ids, window_starts, amounts, enforce, metrics
      FROM jsonb_array_elements(p_caps) WITH ORDINALITY AS e(c, n);
    FOR cap IN SELECT * FROM policy_reserve(cap_ids, window_starts, amounts, enforce, metrics, p_reservation_id,
                                            p_agent_id, p_model, p_tokens, p_cost, p_now,
                                            p_reservation_expires_at) LOOP
        IF NOT cap.held THEN
            RAISE EXCEPTION 'dry-run cap % would deny', cap.cap_id USING ERRCODE = 'MM002';
        END IF;
        body := jsonb_set(body, ARRAY['caps', i::text, 'limit'], to_jsonb(round(cap.limit_snapshot, 6)::text));
        body := jsonb_set(body, ARRAY['caps', i::text, 'used'], to_jsonb(round(cap.used, 6)::text));
        body := jsonb_set(body, ARRAY['caps', i::text, 'reserved'], to_jsonb(round(cap.reserved, 6)::text));
        body := jsonb_set(body, ARRAY['caps', i::text, 'remaining'],
                          to_jsonb(round(greatest(cap.limit_snapshot - cap.used - cap.reserved, 0), 6)::text));
        i := i + 1;
    END LOOP;
    UPDATE telemetry_idempotencyrecord SET state = 'completed', response_status = p_status, response_body = body
     WHERE id = claim_id;
    record_state := 'completed'; record_status := p_status; record_body := body;
    RETURN NEXT;
END;
$$;
"""

REVERSE = """
DROP FUNCTION IF EXISTS policy_admit_once(text, text, text, text, timestamptz, timestamptz, timestamptz, jsonb, uuid,
                                          bigint, text, bigint, numeric, timestamptz, integer, jsonb);
"""


class Migration(migrations.Migration):
    dependencies = [("policy", "0008_policy_reserve_or_deny"), ("gateway", "0003_idempotency_claim_function")]

    operations = [migrations.RunSQL(FORWARD, reverse_sql=REVERSE)]
