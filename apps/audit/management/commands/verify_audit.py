"""Verify the audit hash chain, or print its head for anchoring outside the database."""

from __future__ import annotations

import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.selectors import audit_chain_head, audit_chain_verify

_ANCHOR_RE = re.compile(r"^(\d+):([0-9a-f]{64})$")


def _anchor(value: str) -> tuple[int, str]:
    match = _ANCHOR_RE.match(value.strip())
    if match is None:
        raise CommandError(f"--anchor takes SEQ:HASH as printed by --head, not {value!r}")
    return int(match[1]), match[2]


class Command(BaseCommand):
    help = ("Walk the audit hash chain and report the first broken link (exit 1); --head prints the head "
            "to anchor elsewhere; --anchor SEQ:HASH also checks an anchor recorded earlier.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--head", action="store_true", help="Print the chain head (SEQ:HASH) and exit.")
        parser.add_argument("--anchor", help="A SEQ:HASH printed by --head earlier: the chain must still hold it.")
        parser.add_argument("--page-size", type=int, default=1000, help="Rows read per query (memory bound).")

    def handle(self, *args: object, **options: Any) -> None:
        if options["head"]:
            head = audit_chain_head()
            self.stdout.write(f"{head.seq}:{head.hash}")
            return
        anchor = _anchor(str(options["anchor"])) if options["anchor"] else None
        report = audit_chain_verify(anchor=anchor, page_size=max(1, int(options["page_size"])))
        if report.broken is not None:
            raise CommandError(f"audit chain broken at {report.broken} "
                               f"(rows 1..{report.verified_seq} verify)", returncode=1)
        checked = f"; anchor {anchor[0]} holds" if anchor else ""
        self.stdout.write(f"audit chain OK: {report.verified_seq} rows, head {report.verified_seq}:"
                          f"{report.verified_hash}{checked}")
