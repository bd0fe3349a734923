"""Reads of the audit chain: walk it and find the first broken link."""

from __future__ import annotations

from dataclasses import dataclass

from apps.audit.chain import CHAINED_FIELDS, GENESIS_HASH, row_hash
from apps.audit.models import AuditChainHead, AuditEvent


@dataclass(frozen=True)
class ChainBreak:
    chain_seq: int | None
    event_id: int | None
    problem: str

    def __str__(self) -> str:
        if self.event_id is None:
            return f"the chain head: {self.problem}"
        return f"chain_seq {self.chain_seq} (audit event id {self.event_id}): {self.problem}"


@dataclass(frozen=True)
class ChainReport:
    verified_seq: int  # the last row whose link verified (0: none)
    verified_hash: str
    broken: ChainBreak | None


def audit_chain_head() -> AuditChainHead:
    """The head as stored (genesis if no audit row was ever written)."""
    return AuditChainHead.objects.filter(pk=1).first() or AuditChainHead(pk=1, seq=0, hash=GENESIS_HASH)


def audit_chain_verify(*, anchor: tuple[int, str] | None = None, page_size: int = 1000) -> ChainReport:
    """Walk every row in `chain_seq` order, one keyset page at a time (memory stays bounded by
    `page_size`), recompute each hash and return the first broken link, if any: a missing
    sequence number, a `prev_hash` that is not the previous row's hash, a hash that does not
    match the row's contents, a head that disagrees with the last row, or an `anchor`
    (chain_seq, hash) recorded earlier that the chain no longer contains."""
    head = audit_chain_head()
    expected_seq, prev_hash, anchor_seen = 1, GENESIS_HASH, anchor is None
    fields = ("id", *CHAINED_FIELDS, "hash")
    while page := list(AuditEvent.objects.filter(chain_seq__gte=expected_seq).order_by("chain_seq")
                       .values(*fields)[:page_size]):
        for row in page:
            seq = row["chain_seq"]
            if seq != expected_seq:
                return ChainReport(expected_seq - 1, prev_hash, ChainBreak(
                    seq, row["id"], f"expected chain_seq {expected_seq}: rows {expected_seq}..{seq - 1} are missing"))
            if row["prev_hash"] != prev_hash:
                return ChainReport(seq - 1, prev_hash, ChainBreak(
                    seq, row["id"], f"prev_hash does not match the hash of chain_seq {seq - 1}"))
            if row_hash(row) != row["hash"]:
                return ChainReport(seq - 1, prev_hash, ChainBreak(
                    seq, row["id"], "hash does not match the row's contents: the row was altered"))
            if anchor is not None and seq == anchor[0]:
                if row["hash"] != anchor[1]:
                    return ChainReport(seq - 1, prev_hash, ChainBreak(
                        seq, row["id"], f"hash {row['hash']} is not the anchored {anchor[1]}"))
                anchor_seen = True
            expected_seq, prev_hash = seq + 1, row["hash"]
    last_seq = expected_seq - 1
    if anchor is not None and not anchor_seen:
        return ChainReport(last_seq, prev_hash, ChainBreak(
            None, None, f"the anchored chain_seq {anchor[0]} is past the last row ({last_seq}): rows were removed"))
    if (head.seq, head.hash) != (last_seq, prev_hash):
        return ChainReport(last_seq, prev_hash, ChainBreak(
            None, None, f"it says {head.seq}:{head.hash}, the last row is {last_seq}:{prev_hash}"))
    return ChainReport(last_seq, prev_hash, None)
