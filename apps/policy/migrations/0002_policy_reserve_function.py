"""`policy_reserve(...)`: the admission reservation as one server-side call.

It does exactly what SPEC §6 describes — per cap, in the given (cap-id) order: one
conditional `UPDATE ... SET reserved = reserved + x WHERE used + reserved + x <= limit_snapshot`,
creating the window's row with `INSERT ... ON CONFLICT DO NOTHING` on first use — but in one
round trip instead of one per cap. An enforce-mode cap that does not fit raises SQLSTATE
MM001 with the cap id, which undoes every reservation the call made.
"""

from django.db import migrations

FORWARD = r"""
CREATE OR REPLACE FUNCTION policy_reserve(
    p_cap_ids bigint[], p_window_starts timestamptz[], p_amounts numeric[], p_enforce boolean[],
    p_metrics text[], p_reservation_id uuid, p_agent_id bigint, p_model text, p_tokens bigint, p_cost numeric,
    p_created_at timestamptz, p_expires_at timestamptz
) RETURNS TABLE (cap_id bigint, used numeric, reserved numeric, limit_snapshot numeric, held boolean)
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    row_id bigint;
    holds jsonb := '[]'::jsonb;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_cap_ids, 1), 0) LOOP
        held := true;
        UPDATE policy_usageledger l SET reserved = l.reserved + p_amounts[i]
         WHERE l.cap_id = p_cap_ids[i] AND l.window_start = p_window_starts[i]
           AND l.used + l.reserved + p_amounts[i] <= l.limit_snapshot
        RETURNING l.id, l.used, l.reserved, l.limit_snapshot INTO row_id, used, reserved, limit_snapshot;
        IF NOT FOUND THEN
            -- First use of this window? Create the row, then try once more.
            INSERT INTO policy_usageledger (cap_id, window_start, used, reserved, overrun, limit_snapshot)
            SELECT c.id, p_window_starts[i], 0, 0, 0, c."limit" FROM policy_policycap c WHERE c.id = p_cap_ids[i]
            ON CONFLICT ON CONSTRAINT ledger_one_row_per_window DO NOTHING;
            UPDATE policy_usageledger l SET reserved = l.reserved + p_amounts[i]
             WHERE l.cap_id = p_cap_ids[i] AND l.window_start = p_window_starts[i]
               AND l.used + l.reserved + p_amounts[i] <= l.limit_snapshot
            RETURNING l.id, l.used, l.reserved, l.limit_snapshot INTO row_id, used, reserved, limit_snapshot;
        END IF;
        IF FOUND THEN
            holds := holds || jsonb_build_object('cap', p_cap_ids[i], 'ledger', row_id, 'metric', p_metrics[i],
                                                 'amount', p_amounts[i]::text);
        ELSIF p_enforce[i] THEN
            RAISE EXCEPTION 'cap % exceeded', p_cap_ids[i] USING ERRCODE = 'MM001', DETAIL = p_cap_ids[i]::text;
        ELSE
            held := false;  -- dry-run cap: report it, never block
            SELECT l.used, l.reserved, l.limit_snapshot INTO used, reserved, limit_snapshot
              FROM policy_usageledger l WHERE l.cap_id = p_cap_ids[i] AND l.window_start = p_window_starts[i];
        END IF;
        cap_id := p_cap_ids[i];
        RETURN NEXT;
    END LOOP;
    IF jsonb_array_length(holds) > 0 THEN
        INSERT INTO policy_reservation (id, agent_id, model, estimated_tokens, estimated_cost_usd, holds, state,
                                        created_at, expires_at)
        VALUES (p_reservation_id, p_agent_id, p_model, p_tokens, p_cost, holds, 'held', p_created_at, p_expires_at);
    END IF;
END;
$$;
"""

REVERSE = """
DROP FUNCTION IF EXISTS policy_reserve(bigint[], timestamptz[], numeric[], boolean[], text[], uuid, bigint, text, bigint,
                                       numeric, timestamptz, timestamptz);
"""


class Migration(migrations.Migration):
    dependencies = [("policy", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, reverse_sql=REVERSE)]
