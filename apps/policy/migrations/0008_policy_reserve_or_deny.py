"""`policy_reserve_or_deny(...)`: `policy_reserve` with its denial as a row instead of an error.

`policy_reserve` raises SQLSTATE MM001 when an enforced cap does not fit, which undoes the
reservations it made but aborts the caller's transaction too; inside the idempotent write's one
transaction (issue 10) the caller therefore had to wrap it in a SAVEPOINT/RELEASE pair: two more
round trips per admission. This wrapper catches MM001 in a PL/pgSQL exception block (a
subtransaction on the server, no round trip) and returns one row `denied = true` with the cap's id
instead; otherwise `policy_reserve`'s rows with `denied = false`. `policy_reserve` itself stays
(unchanged, for whatever still calls it).
"""

from django.db import migrations

FORWARD = r"""
CREATE OR REPLACE FUNCTION policy_reserve_or_deny(
    p_cap_ids bigint[], p_window_starts timestamptz[], p_amounts numeric[], p_enforce boolean[],
    p_metrics text[], p_reservation_id uuid, p_agent_id bigint, p_model text, p_tokens bigint, p_cost numeric,
    p_created_at timestamptz, p_expires_at timestamptz
) RETURNS TABLE (cap_id bigint, used numeric, reserved numeric, limit_snapshot numeric, held boolean,
                 denied boolean)
LANGUAGE plpgsql AS $$
DECLARE
    detail text;
    result record;
BEGIN
    BEGIN
        -- policy_reserve (PL/pgSQL) produces all its rows before the first is read here, so a
        -- denial comes before any RETURN NEXT: a denied call returns the denial row only.
        FOR result IN SELECT * FROM policy_reserve(p_cap_ids, p_window_starts, p_amounts, p_enforce, p_metrics,
                                                   p_reservation_id, p_agent_id, p_model, p_tokens, p_cost,
                                                   p_created_at, p_expires_at) LOOP
            cap_id := result.cap_id; used := result.used; reserved := result.reserved;
            limit_snapshot := result.limit_snapshot; held := result.held; denied := false;
            RETURN NEXT;
        END LOOP;
    EXCEPTION WHEN SQLSTATE 'MM001' THEN
        GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
        cap_id := detail::bigint; used := NULL; reserved := NULL; limit_snapshot := NULL; held := false;
        denied := true;
        RETURN NEXT;
    END;
END;
$$;
"""

REVERSE = """
DROP FUNCTION IF EXISTS policy_reserve_or_deny(bigint[], timestamptz[], numeric[], boolean[], text[], uuid, bigint,
                                               text, bigint, numeric, timestamptz, timestamptz);
"""


class Migration(migrations.Migration):
    dependencies = [("policy", "0007_console_indexes")]

    operations = [migrations.RunSQL(FORWARD, reverse_sql=REVERSE)]
