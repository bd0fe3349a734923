"""The audit hash chain: concurrent inserts neither fork it nor leave gaps, a rollback takes
its sequence number back, and verify_audit finds the first altered row."""

from __future__ import annotations

import decimal
import os
import subprocess
import sys
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction

from apps.audit.chain import CHAINED_FIELDS, GENESIS_HASH, row_hash
from apps.audit.models import AuditChainHead, AuditEvent
from apps.audit.services import Actor, audit_record
from apps.gateway.identity import request_context
from apps.keys import services
from tests.factories import TEST_ACTOR, ProjectFactory, issue_key
from tests.processes import BASE_DIR, database_url


def chain() -> list[tuple[int, str, str]]:
    return list(AuditEvent.objects.order_by("chain_seq").values_list("chain_seq", "prev_hash", "hash"))


def assert_linked(rows: list[tuple[int, str, str]]) -> None:
    assert [seq for seq, _, _ in rows] == list(range(1, len(rows) + 1))  # gapless
    assert [prev for _, prev, _ in rows] == [GENESIS_HASH] + [h for _, _, h in rows[:-1]]  # one line, no fork
    head = AuditChainHead.objects.get()
    assert (head.seq, head.hash) == (rows[-1][0], rows[-1][2])


def verify(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_forty_concurrent_inserts_form_one_gapless_chain():
    project = ProjectFactory.create()
    barrier = threading.Barrier(40)
    errors = []

    def worker(n: int) -> None:
        try:
            barrier.wait()
            with transaction.atomic():
                audit_record(actor=Actor.system(f"worker-{n}"), action="test.concurrent", target=project,
                             after={"n": n})
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connections.close_all()  # each thread had its own connection

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    rows = chain()
    assert len(rows) == 40
    assert_linked(rows)
    assert sorted(AuditEvent.objects.values_list("after__n", flat=True)) == list(range(40))
    assert verify().startswith("audit chain OK: 40 rows, head 40:")


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_change_leaves_no_row_and_no_gap():
    issued = issue_key()
    before = chain()

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        services.api_key_revoke(actor=TEST_ACTOR, api_key=issued.api_key, reason="rolled back")
        raise Abort
    assert chain() == before
    assert not AuditEvent.objects.filter(action="api_key.revoke").exists()

    services.api_key_revoke(actor=TEST_ACTOR, api_key=issued.api_key, reason="kept")
    rows = chain()
    assert len(rows) == len(before) + 1
    assert_linked(rows)
    assert "OK" in verify()


@pytest.mark.django_db(transaction=True)
def test_values_that_change_form_in_the_database_still_verify():
    """jsonb rewrites numbers (1e16 comes back as 10000000000000000) and inet rewrites IPv6;
    the canonical encoding must not care."""
    project = ProjectFactory.create()
    awkward = {"big": 1e16, "one": 1.0, "tiny": 1e-7, "dec": decimal.Decimal("2.50"), "neg0": -0.0,
               "huge": 10**40, "text": "é 🚀 \"quoted\" \\ \n", "nested": [{"b": True, "a": None}, [1, 2.5]]}
    for ip in ("2001:0db8:0000:0000:0000:0000:0000:0001", "::ffff:192.0.2.1", "192.0.2.7", None):
        with request_context(client_ip=ip, request_id="req-12345678"), transaction.atomic():
            audit_record(actor=Actor.system("tests"), action="test.awkward", target=project, before=awkward,
                         after={"z": 1, "a": 2}, reason="ünïcödé")
    assert "audit chain OK: 4 rows" in verify()


@pytest.mark.django_db(transaction=True)
def test_an_altered_old_row_is_named_and_verify_audit_exits_1():
    project = ProjectFactory.create()
    for n in range(5):
        with transaction.atomic():
            audit_record(actor=Actor.system("tests"), action="test.seq", target=project, after={"n": n})
    head = verify("--head").strip()
    assert head == f"5:{AuditEvent.objects.get(chain_seq=5).hash}"
    assert "anchor 5 holds" in verify("--anchor", head)

    victim = AuditEvent.objects.get(chain_seq=2)
    with transaction.atomic(), connection.cursor() as cursor:  # a superuser gets round the trigger
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_auditevent_append_only")
        cursor.execute("UPDATE audit_auditevent SET after = '{\"n\": 99}' WHERE id = %s", [victim.pk])
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_auditevent_append_only")

    with pytest.raises(CommandError) as raised:
        verify()
    assert raised.value.returncode == 1
    assert str(raised.value) == (f"audit chain broken at chain_seq 2 (audit event id {victim.pk}): hash does not "
                                 "match the row's contents: the row was altered (rows 1..1 verify)")

    # The real command line, as an operator or a cron job runs it: exit status 1, the row named.
    env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "modeloman.settings.test"}
    result = subprocess.run([sys.executable, "manage.py", "verify_audit", "--page-size", "2"], cwd=BASE_DIR, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"chain_seq 2 (audit event id {victim.pk})" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_a_rehashed_row_breaks_the_next_link():
    project = ProjectFactory.create()
    for n in range(3):
        with transaction.atomic():
            audit_record(actor=Actor.system("tests"), action="test.seq", target=project, after={"n": n})
    row = AuditEvent.objects.filter(chain_seq=1).values(*CHAINED_FIELDS).get()
    row["after"] = {"n": 99}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_auditevent_append_only")
        cursor.execute("UPDATE audit_auditevent SET after = '{\"n\": 99}', hash = %s WHERE chain_seq = 1",
                       [row_hash(row)])
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_auditevent_append_only")
    second = AuditEvent.objects.get(chain_seq=2)
    with pytest.raises(CommandError, match=rf"chain_seq 2 \(audit event id {second.pk}\): prev_hash does not match"):
        verify()


@pytest.mark.django_db(transaction=True)
def test_a_removed_tail_is_caught_by_the_head_or_by_an_anchor():
    project = ProjectFactory.create()
    for n in range(3):
        with transaction.atomic():
            audit_record(actor=Actor.system("tests"), action="test.seq", target=project, after={"n": n})
    anchor = verify("--head").strip()
    third = AuditEvent.objects.get(chain_seq=3)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_auditevent_append_only")
        cursor.execute("DELETE FROM audit_auditevent WHERE chain_seq = 3")
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_auditevent_append_only")
    # The head still names row 3: caught without an anchor.
    with pytest.raises(CommandError, match="the chain head: it says 3:"):
        verify()
    # A careful attacker also moves the head back: only the anchor kept outside shows it.
    AuditChainHead.objects.update(seq=2, hash=AuditEvent.objects.get(chain_seq=2).hash)
    assert "OK: 2 rows" in verify()
    with pytest.raises(CommandError, match="the anchored chain_seq 3 is past the last row"):
        verify("--anchor", anchor)
    assert third.hash in anchor


@pytest.mark.django_db
def test_a_malformed_anchor_is_refused():
    with pytest.raises(CommandError, match="--anchor takes SEQ:HASH"):
        verify("--anchor", "5:nothex")


@pytest.mark.django_db(transaction=True)
def test_the_migration_chains_rows_written_before_the_chain_existed():
    try:
        call_command("migrate", "audit", "0001", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute("""
                INSERT INTO audit_auditevent (created_at, actor_type, actor_label, actor_key_id, action, target_type,
                    target_id, target_repr, before, after, reason, client_ip, request_id, prev_hash, hash)
                SELECT now() - n * interval '1 minute', 'system', 'system:legacy', '', 'legacy.change',
                       'keys.project', n::text, 'p' || n, NULL, jsonb_build_object('n', n, 'x', 1.50), '',
                       '2001:db8::1', '', '', ''
                FROM generate_series(1, 2500) AS n""")
    finally:
        call_command("migrate", "audit", verbosity=0)
    rows = chain()
    assert len(rows) == 2500
    assert_linked(rows)
    ids = list(AuditEvent.objects.order_by("chain_seq").values_list("id", flat=True))
    assert ids == sorted(ids)  # chained in the order written
    assert "audit chain OK: 2500 rows" in verify()
    # New rows continue the chain.
    issue_key()
    assert_linked(chain())
    assert "audit chain OK: 2501 rows" in verify()
