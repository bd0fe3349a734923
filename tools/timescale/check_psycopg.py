"""Smoke-check a running tools/timescale server from Python psycopg 3.

Usage: python tools/timescale/check_psycopg.py [DATABASE_URL]
Default URL: postgresql://postgres:postgres@127.0.0.1:$TIMESCALE_PORT/postgres

Each check prints `PASS name` or `FAIL name: <exact error>`; checks marked
(expected to fail) are known engine limits and print `LIMIT` instead. Exits 1
if an unexpected check failed. Needs only psycopg (3.2+).
"""

import datetime as dt
import os
import sys
import threading
import time
import traceback

import psycopg

PORT = os.environ.get("TIMESCALE_PORT", "55432")
URL = (
    sys.argv[1]
    if len(sys.argv) > 1
    else f"postgresql://postgres:postgres@127.0.0.1:{PORT}/postgres"
)
results = []


def check(name, expect_fail=False):
    def deco(fn):
        t0 = time.monotonic()
        try:
            detail = fn()
            ok = True
        except Exception as e:  # noqa: BLE001 - we report everything
            ok = False
            detail = f"{type(e).__module__}.{type(e).__name__}: {e}".strip()
            if os.environ.get("CHECK_TRACE"):
                traceback.print_exc()
        ms = (time.monotonic() - t0) * 1000
        if ok:
            tag = "PASS" if not expect_fail else "PASS (limit lifted?)"
        else:
            tag = "LIMIT" if expect_fail else "FAIL"
        extra = f": {detail}" if detail not in (None, "") else ""
        print(f"{tag} {name} [{ms:.0f} ms]{extra}", flush=True)
        results.append((name, ok, expect_fail))
        return fn

    return deco


T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
conn = psycopg.connect(URL, autocommit=True, connect_timeout=10)
cur = conn.cursor()


@check("connect: user/database/version")
def _():
    return conn.execute(
        "select current_user, current_database(), current_setting('server_version')"
    ).fetchone()


@check("timescaledb extension version")
def _():
    (v,) = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname='timescaledb'"
    ).fetchone()
    return v


@check("create table + create_hypertable")
def _():
    conn.execute("DROP MATERIALIZED VIEW IF EXISTS m_hourly CASCADE")
    conn.execute("DROP TABLE IF EXISTS m CASCADE")
    conn.execute(
        "CREATE TABLE m (ts timestamptz NOT NULL, sensor int NOT NULL, v double precision)"
    )
    return conn.execute(
        "SELECT create_hypertable('m', by_range('ts', INTERVAL '1 day'))"
    ).fetchone()


@check("multi-row INSERT (VALUES ..., ...)")
def _():
    cur.execute(
        "INSERT INTO m VALUES (%s,1,1.0),(%s,2,2.0),(%s,1,3.0)",
        (T0, T0 + dt.timedelta(hours=1), T0 + dt.timedelta(days=1)),
    )
    return f"rowcount={cur.rowcount}"


@check("executemany (300 rows over 3 days)")
def _():
    rows = [
        (T0 + dt.timedelta(minutes=15 * i), i % 3, float(i)) for i in range(300)
    ]
    cur.executemany("INSERT INTO m VALUES (%s, %s, %s)", rows)
    return f"rowcount={cur.rowcount}"


@check("executemany(returning=True)")
def _():
    cur.executemany(
        "INSERT INTO m VALUES (%s, 9, %s) RETURNING v",
        [(T0 + dt.timedelta(seconds=i), float(i)) for i in range(3)],
        returning=True,
    )
    out = []
    while True:
        out.append(cur.fetchone()[0])
        if not cur.nextset():
            break
    return out


@check("prepared statements (prepare=True and auto after prepare_threshold)")
def _():
    for i in range(3):
        conn.execute("SELECT count(*) FROM m WHERE sensor = %s", (i,), prepare=True)
    for i in range(10):  # default prepare_threshold=5 -> auto-prepared
        conn.execute("SELECT %s::int + 1", (i,)).fetchone()
    n = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
    return f"pg_prepared_statements={n}"


@check("binary parameters and results")
def _():
    c = conn.cursor(binary=True)
    c.execute("SELECT %b::int, %b::text, %b::timestamptz", (42, "x", T0))
    return c.fetchone()


@check("named (server-side) cursor, as Django .iterator() uses")
def _():
    with conn.transaction():
        with conn.cursor(name="srv_cur") as sc:
            sc.itersize = 50
            sc.execute("SELECT ts, v FROM m ORDER BY ts")
            n = sum(1 for _ in sc)
    with conn.cursor(name="srv_cur_hold", withhold=True) as sc:
        sc.execute("SELECT 1 FROM generate_series(1, 10)")
        n2 = len(sc.fetchall())
    return f"{n} rows, withhold {n2} rows"


@check("Django-style: BEGIN/SAVEPOINT/ROLLBACK TO/RELEASE/COMMIT, SET TIME ZONE")
def _():
    conn.autocommit = False
    try:
        cur.execute("SET TIME ZONE 'UTC'")
        cur.execute("SELECT set_config('application_name', 'django-check', false)")
        cur.execute("SAVEPOINT s1")
        cur.execute("INSERT INTO m VALUES (%s, 7, 7.0)", (T0,))
        cur.execute("ROLLBACK TO SAVEPOINT s1")
        cur.execute("SAVEPOINT s2")
        cur.execute("INSERT INTO m VALUES (%s, 8, 8.0)", (T0,))
        cur.execute("RELEASE SAVEPOINT s2")
        conn.commit()
        with conn.transaction():  # psycopg-managed BEGIN + nested savepoint
            with conn.transaction():
                cur.execute("SELECT 1")
        tz = conn.execute("SHOW TIME ZONE").fetchone()[0]
        conn.commit()
        n7 = conn.execute("SELECT count(*) FROM m WHERE sensor=7").fetchone()[0]
        n8 = conn.execute("SELECT count(*) FROM m WHERE sensor=8").fetchone()[0]
        conn.commit()
        assert (n7, n8) == (0, 1), (n7, n8)
        return f"TimeZone={tz}"
    finally:
        conn.rollback()
        conn.autocommit = True


@check("error inside a transaction, then rollback and continue")
def _():
    conn.autocommit = False
    try:
        try:
            cur.execute("SELECT 1/0")
        except psycopg.errors.DivisionByZero as e:
            err = str(e)
        conn.rollback()
        cur.execute("SELECT 2")
        assert cur.fetchone()[0] == 2
        conn.commit()
        return f"got: {err!r}"
    finally:
        conn.autocommit = True


@check("ALTER TABLE ... SET (timescaledb.compress, segmentby, orderby)")
def _():
    conn.execute(
        "ALTER TABLE m SET (timescaledb.compress, "
        "timescaledb.compress_segmentby = 'sensor', "
        "timescaledb.compress_orderby = 'ts DESC')"
    )


@check("add_compression_policy")
def _():
    return conn.execute(
        "SELECT add_compression_policy('m', INTERVAL '7 days')"
    ).fetchone()[0]


@check("add_retention_policy")
def _():
    return conn.execute(
        "SELECT add_retention_policy('m', INTERVAL '365 days')"
    ).fetchone()[0]


@check("CREATE MATERIALIZED VIEW ... WITH (timescaledb.continuous)")
def _():
    conn.execute(
        "CREATE MATERIALIZED VIEW m_hourly WITH (timescaledb.continuous) AS "
        "SELECT time_bucket('1 hour', ts) AS bucket, sensor, avg(v) AS avg_v, "
        "count(*) AS n FROM m GROUP BY bucket, sensor WITH NO DATA"
    )


@check("add_continuous_aggregate_policy")
def _():
    return conn.execute(
        "SELECT add_continuous_aggregate_policy('m_hourly', "
        "start_offset => NULL, end_offset => INTERVAL '1 hour', "
        "schedule_interval => INTERVAL '1 hour')"
    ).fetchone()[0]


@check("CALL refresh_continuous_aggregate(...)")
def _():
    conn.execute("CALL refresh_continuous_aggregate('m_hourly', NULL, NULL)")
    return conn.execute("SELECT count(*), sum(n) FROM m_hourly").fetchone()


@check("compress_chunk on first chunk")
def _():
    (chunk,) = conn.execute(
        "SELECT show_chunks('m') ORDER BY 1 LIMIT 1"
    ).fetchone()
    conn.execute("SELECT compress_chunk(%s::regclass)", (chunk,))
    return conn.execute(
        "SELECT chunk_name, is_compressed FROM timescaledb_information.chunks "
        "WHERE hypertable_name='m' ORDER BY range_start"
    ).fetchall()


@check("late INSERT into a compressed chunk, then read it back")
def _():
    before = conn.execute("SELECT count(*) FROM m WHERE ts < %s", (T0 + dt.timedelta(days=1),)).fetchone()[0]
    conn.execute("INSERT INTO m VALUES (%s, 5, 55.5)", (T0 + dt.timedelta(minutes=7),))
    after = conn.execute("SELECT count(*) FROM m WHERE ts < %s", (T0 + dt.timedelta(days=1),)).fetchone()[0]
    assert after == before + 1, (before, after)
    row = conn.execute("SELECT v FROM m WHERE sensor=5").fetchone()
    return f"count {before}->{after}, row={row}"


@check("UPDATE/DELETE on compressed chunk")
def _():
    conn.execute("UPDATE m SET v = 66.6 WHERE sensor=5")
    conn.execute("DELETE FROM m WHERE sensor=5")


@check("decompress_chunk / recompress")
def _():
    (chunk,) = conn.execute("SELECT show_chunks('m') ORDER BY 1 LIMIT 1").fetchone()
    conn.execute("SELECT decompress_chunk(%s::regclass)", (chunk,))
    conn.execute("SELECT compress_chunk(%s::regclass)", (chunk,))


@check("CALL run_job(<compression job>) (manual job run)")
def _():
    (job,) = conn.execute(
        "SELECT job_id FROM timescaledb_information.jobs "
        "WHERE proc_name='policy_compression' AND hypertable_name='m'"
    ).fetchone()
    conn.execute("CALL run_job(%s)", (job,))
    return f"job {job}"


@check("drop_chunks (retention by hand)")
def _():
    return conn.execute(
        "SELECT count(*) FROM drop_chunks('m', older_than => TIMESTAMPTZ '2023-01-01')"
    ).fetchone()[0]


for view in ("hypertables", "jobs", "continuous_aggregates", "compression_settings"):

    @check(f"timescaledb_information.{view}")
    def _(view=view):
        rows = conn.execute(f"SELECT * FROM timescaledb_information.{view}").fetchall()
        return f"{len(rows)} rows"


@check("job_stats shows that background jobs never ran")
def _():
    return conn.execute(
        "SELECT job_id, total_runs FROM timescaledb_information.job_stats ORDER BY 1"
    ).fetchall()


@check("large statement (~4 MB, split across TCP packets)")
def _():
    big = "x" * (4 * 1024 * 1024)
    (n,) = conn.execute("SELECT length(%s::text)", (big,)).fetchone()
    assert n == len(big)
    vals = ",".join(f"('{T0.isoformat()}'::timestamptz + interval '{i} sec', 3, {i})" for i in range(20000))
    cur.execute(f"INSERT INTO m VALUES {vals}")
    return f"echoed {n} chars; 20000-row VALUES insert rowcount={cur.rowcount}"


@check("COPY ... FROM STDIN", expect_fail=True)
def _():
    with cur.copy("COPY m (ts, sensor, v) FROM STDIN") as cp:
        cp.write_row((T0, 4, 4.0))


# Safety net: reconnect if the previous check left the connection unusable.
try:
    conn.execute("SELECT 1")
except Exception as e:  # noqa: BLE001
    print(f"INFO connection unusable after COPY: {type(e).__name__}: {e}")
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass
    conn = psycopg.connect(URL, autocommit=True, connect_timeout=10)
    cur = conn.cursor()


@check("COPY ... TO STDOUT")
def _():
    with cur.copy("COPY (SELECT 1, 'a') TO STDOUT") as cp:
        return [r for r in cp.rows()]


@check("pipeline mode (200 statements; error mid-pipeline)")
def _():
    conn.execute("CREATE TEMP TABLE pp (x int PRIMARY KEY)")
    with conn.pipeline() as p:
        curs = [conn.execute("INSERT INTO pp VALUES (%s) RETURNING x", (i,)) for i in range(200)]
        p.sync()
        total = sum(c.fetchone()[0] for c in curs)
    try:
        with conn.pipeline():
            conn.execute("INSERT INTO pp VALUES (1000)")
            conn.execute("INSERT INTO pp VALUES (1)")  # duplicate key
    except psycopg.errors.UniqueViolation:
        pass
    else:
        raise AssertionError("duplicate key not reported")
    (n,) = conn.execute("SELECT count(*) FROM pp").fetchone()
    assert (total, n) == (19900, 200), (total, n)
    return f"sum={total}, rows after failed pipeline={n}"


try:
    conn.execute("SELECT 1")
except Exception as e:  # noqa: BLE001
    print(f"INFO connection unusable after pipeline: {type(e).__name__}: {e}")
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass
    conn = psycopg.connect(URL, autocommit=True, connect_timeout=10)
    cur = conn.cursor()

conn.close()


@check("sequential connections: connect/close x5")
def _():
    for i in range(5):
        with psycopg.connect(URL, connect_timeout=10) as c:
            assert c.execute("SELECT %s::int", (i,)).fetchone()[0] == i


@check("session state does NOT leak to the next connection (SET, temp table, prepared)")
def _():
    with psycopg.connect(URL, autocommit=True) as c:
        c.execute("SET TIME ZONE 'Asia/Tokyo'")
        c.execute("CREATE TEMP TABLE leak_probe (x int)")
        c.execute("PREPARE leak_stmt AS SELECT 1")
    with psycopg.connect(URL, autocommit=True) as c:
        tz = c.execute("SHOW TIME ZONE").fetchone()[0]
        tmp = c.execute("SELECT to_regclass('pg_temp.leak_probe')").fetchone()[0]
        prep = c.execute("SELECT count(*) FROM pg_prepared_statements WHERE name='leak_stmt'").fetchone()[0]
    leaks = []
    if tz == "Asia/Tokyo":
        leaks.append(f"TimeZone={tz}")
    if tmp is not None:
        leaks.append("temp table survives")
    if prep:
        leaks.append("PREPARE survives")
    assert not leaks, "; ".join(leaks)


@check("open transaction on close does NOT leak to the next connection")
def _():
    c = psycopg.connect(URL)  # autocommit off
    c.execute("CREATE TABLE IF NOT EXISTS tx_probe (x int)")
    c.execute("INSERT INTO tx_probe VALUES (1)")
    c.close()  # psycopg closes without COMMIT
    with psycopg.connect(URL, autocommit=True) as c2:
        st = c2.info.transaction_status.name
        n = c2.execute("SELECT count(*) FROM tx_probe").fetchone()[0] if c2.execute(
            "SELECT to_regclass('tx_probe')").fetchone()[0] else None
    assert st == "IDLE", f"new connection starts in transaction status {st}"
    assert not n, f"uncommitted rows visible to next connection: {n}"
    return f"status={st}, tx_probe rows={n}"


@check("auto-prepared statements in two successive connections")
def _():
    for _ in range(2):
        with psycopg.connect(URL, autocommit=True) as c:
            for i in range(8):  # > prepare_threshold (5): psycopg PREPAREs _pg3_N
                c.execute("SELECT %s::int * 2", (i,)).fetchone()


@check("CREATE DATABASE / connect to it / DROP DATABASE (Django test runner)")
def _():
    with psycopg.connect(URL, autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS test_probe")
        c.execute("CREATE DATABASE test_probe")
    other = URL.rsplit("/", 1)[0] + "/test_probe"
    with psycopg.connect(other, autocommit=True) as c:
        db = c.execute("SELECT current_database()").fetchone()[0]
        has_m = c.execute("SELECT to_regclass('m') IS NOT NULL").fetchone()[0]
    with psycopg.connect(URL, autocommit=True) as c:
        c.execute("DROP DATABASE test_probe")
    return f"connected to test_probe -> current_database()={db}, sees table m: {has_m}"


@check("2nd concurrent connection is queued until the 1st closes")
def _():
    c1 = psycopg.connect(URL, autocommit=True)
    got = {}

    def second():
        t = time.monotonic()
        try:
            with psycopg.connect(URL, autocommit=True, connect_timeout=30) as c2:
                got["v"] = c2.execute("SELECT 2").fetchone()[0]
        except Exception as e:  # noqa: BLE001
            got["err"] = f"{type(e).__name__}: {e}"
        got["wait"] = time.monotonic() - t

    th = threading.Thread(target=second)
    th.start()
    time.sleep(1.5)
    assert th.is_alive(), f"2nd connection did not wait: {got}"
    c1.execute("SELECT 1")  # 1st still works while the 2nd waits
    c1.close()
    th.join(30)
    assert got.get("v") == 2, got
    return f"2nd connected after {got['wait']:.1f}s (when the 1st closed)"


@check("2nd concurrent connection with short connect_timeout (client gives up)")
def _():
    c1 = psycopg.connect(URL, autocommit=True)
    try:
        t = time.monotonic()
        try:
            psycopg.connect(URL, connect_timeout=2).close()
            return "unexpectedly connected"
        except psycopg.OperationalError as e:
            msg = f"after {time.monotonic() - t:.1f}s: {e}"
        c1.execute("SELECT 1")
    finally:
        c1.close()
    with psycopg.connect(URL) as c3:  # server still healthy afterwards
        c3.execute("SELECT 1")
    return msg


bad = [n for n, ok, exp in results if not ok and not exp]
# "skipped" = checks of known engine limits that failed as expected.
print(f"\n{sum(ok for _, ok, _ in results)} passed, {len(bad)} failed, "
      f"{sum((not ok) and exp for _, ok, exp in results)} skipped")
sys.exit(1 if bad else 0)
