"""Admissions may name their run (SPEC §5): the reservation and the decision record it.

`Reservation.run` and `AdmissionDecision.run`: no database-level foreign key and no index (see the
models). `policy_admit_once` takes the run as `p_run_id` (NULL: none) and, for a new claim, checks
that it is one of the agent's own runs before it reserves anything: if not, it raises MM003, which
undoes the whole statement (the claim too), and the full path (`apps.policy.ledger.admit`) answers
404 `run_not_found`, as for any other error of the request. Otherwise the function is migration
0011's, with the run written into the reservation.
"""

from importlib import import_module

import django.db.models.deletion
from django.db import migrations, models

FORWARD = r"""
DROP FUNCTION policy_admit_once(text, text, text, text, timestamptz, timestamptz, timestamptz, jsonb, uuid, bigint,
                                text, bigint, numeric, timestamptz, integer, jsonb);
CREATE FUNCTION policy_admit_once(
    p_principal text, p_key text, p_operation text, p_fingerprint text,
    p_now timestamptz, p_record_expires_at timestamptz, p_lease_cutoff timestamptz,
    p_caps jsonb, p_reservation_id uuid, p_agent_id bigint, p_run_id uuid, p_model text, p_tokens bigint,
    p_cost numeric, p_reservation_expires_at timestamptz, p_status integer, p_body jsonb
) RETURNS TABLE (claim_id bigint, record_state text, record_fingerprint text, record_status integer,
                 record_body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    claim record;
    cap jsonb;  -- [cap id, window start, amount, enforce, metric]
    amount numeric;
    body jsonb := p_body;
    holds jsonb := '[]'::jsonb;
    ledger_id bigint;
    ledger_used numeric;
    ledger_reserved numeric;
    ledger_limit numeric;
BEGIN
    INSERT INTO telemetry_idempotencyrecord (principal, key, operation, fingerprint, state, created_at, expires_at)
    VALUES (p_principal, p_key, p_operation, p_fingerprint, 'in_flight', p_now, p_record_expires_at)
    ON CONFLICT (principal, key) DO NOTHING
    RETURNING id INTO claim_id;
    IF claim_id IS NULL THEN  -- the key is taken: idempotency_claim's rules for it
        SELECT * INTO claim FROM idempotency_claim(p_principal, p_key, p_operation, p_fingerprint, p_now,
                                                   p_record_expires_at, p_lease_cutoff);
        claim_id := claim.claim_id; record_state := claim.record_state;
        record_fingerprint := claim.record_fingerprint; record_status := claim.record_status;
        record_body := claim.record_body;
        IF claim_id IS NULL THEN  -- replay or refuse, reserve nothing
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    IF p_run_id IS NOT NULL
       AND NOT EXISTS (SELECT FROM telemetry_run r WHERE r.id = p_run_id AND r.agent_id = p_agent_id) THEN
        RAISE EXCEPTION 'run % is not this agent''s', p_run_id USING ERRCODE = 'MM003';
    END IF;
    FOR n IN 0 .. jsonb_array_length(p_caps) - 1 LOOP  -- not FOR ... IN SELECT: no query of its own
        cap := p_caps->n;
        amount := (cap->>2)::numeric;
        ledger_id := NULL;  -- stays NULL unless an UPDATE below reserves
        FOR attempt IN 1 .. 2 LOOP
            UPDATE policy_usageledger l SET reserved = l.reserved + amount
             WHERE l.cap_id = (cap->>0)::bigint AND l.window_start = (cap->>1)::timestamptz
               AND l.used + l.reserved + amount <= l.limit_snapshot
            RETURNING l.id, l.used, l.reserved, l.limit_snapshot
                 INTO ledger_id, ledger_used, ledger_reserved, ledger_limit;
            EXIT WHEN FOUND OR attempt = 2;
            -- First use of this window? Create the row, then try once more.
            INSERT INTO policy_usageledger (cap_id, window_start, used, reserved, overrun, limit_snapshot)
            SELECT c.id, (cap->>1)::timestamptz, 0, 0, 0, c."limit" FROM policy_policycap c
             WHERE c.id = (cap->>0)::bigint
            ON CONFLICT ON CONSTRAINT ledger_one_row_per_window DO NOTHING;
        END LOOP;
        IF ledger_id IS NULL THEN
            IF (cap->>3)::boolean THEN
                RAISE EXCEPTION 'cap % exceeded', cap->>0 USING ERRCODE = 'MM001', DETAIL = cap->>0;
            END IF;
            RAISE EXCEPTION 'dry-run cap % would deny', cap->>0 USING ERRCODE = 'MM002';
        END IF;
        holds := holds || jsonb_build_object('cap', (cap->>0)::bigint, 'ledger', ledger_id, 'metric', cap->>4,
                                             'amount', amount::text);
        body := jsonb_set(body, ARRAY['caps', n::text], (body->'caps'->n) || jsonb_build_object(
            'limit', round(ledger_limit, 6)::text, 'used', round(ledger_used, 6)::text,
            'reserved', round(ledger_reserved, 6)::text,
            'remaining', round(greatest(ledger_limit - ledger_used - ledger_reserved, 0), 6)::text));
    END LOOP;
    IF jsonb_array_length(holds) > 0 THEN
        INSERT INTO policy_reservation (id, agent_id, run_id, model, estimated_tokens, estimated_cost_usd, holds,
                                        state, created_at, expires_at)
        VALUES (p_reservation_id, p_agent_id, p_run_id, p_model, p_tokens, p_cost, holds, 'held', p_now,
                p_reservation_expires_at);
    END IF;
    UPDATE telemetry_idempotencyrecord SET state = 'completed', response_status = p_status, response_body = body
     WHERE id = claim_id;
    record_state := 'completed'; record_fingerprint := p_fingerprint; record_status := p_status;
    record_body := body;
    RETURN NEXT;
END;
$$;
"""

REVERSE = r"""
DROP FUNCTION policy_admit_once(text, text, text, text, timestamptz, timestamptz, timestamptz, jsonb, uuid, bigint,
                                uuid, text, bigint, numeric, timestamptz, integer, jsonb);
""" + import_module("apps.policy.migrations.0011_policy_admit_once_inline").FORWARD


class Migration(migrations.Migration):
    dependencies = [("policy", "0011_policy_admit_once_inline"), ("telemetry", "0007_idempotencyrecord_to_gateway")]

    operations = [
        migrations.AddField(
            model_name="reservation",
            name="run",
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True,
                                    on_delete=django.db.models.deletion.SET_NULL, related_name="reservations",
                                    to="telemetry.run"),
        ),
        migrations.AddField(
            model_name="admissiondecision",
            name="run",
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True,
                                    on_delete=django.db.models.deletion.SET_NULL, related_name="admission_decisions",
                                    to="telemetry.run"),
        ),
        migrations.RunSQL(FORWARD, reverse_sql=REVERSE),
    ]
