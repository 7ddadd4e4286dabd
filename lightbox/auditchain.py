"""The audit trail's hash chain: seal, verify, plan retention. Pure; docs/audit.md is the spec.

A record's hash is ``sha256:`` + the hex SHA-256 of the RFC 8785 (JSON Canonicalization
Scheme) serialisation of its ``spec`` without the ``hash`` field. RFC 8785 fixes key order,
string escaping and number form (1.0 and 1 serialise alike, which matters because the API
server gives back integral floats as integers), so another region can recompute a hash with
any JCS implementation. One chain per Validation uid (``spec.chain.id``); ``spec.chain.sequence``
counts from 1 and ``spec.chain.previousHash`` is the hash of the record before.

Verification walks each chain in the order given (an export file's order, or by sequence for
records read from the cluster) and names the first record that was altered, removed or
reordered. What a chain cannot show by itself: the removal of its newest records (nothing
follows them); docs/audit.md says what anchors that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import rfc8785

DEFAULT_RETENTION_DAYS = 184  # six months and a few days: the AI Act's minimum for logs (art. 19, 26)

Problem = Literal["malformed", "altered", "removed", "reordered", "duplicate", "cut"]


def canonical(spec: Mapping[str, Any]) -> bytes:
    """RFC 8785 bytes of a record's spec without its own hash."""
    return rfc8785.dumps({k: v for k, v in spec.items() if k != "hash"})


def spec_hash(spec: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical(spec)).hexdigest()


def seal(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with its hash field set."""
    return {**spec, "hash": spec_hash(spec)}


@dataclass(frozen=True)
class Finding:
    """The first problem of one chain."""

    chain: str
    sequence: int | None
    name: str | None
    problem: Problem
    message: str
    position: int | None = None  # 1-based place in the input (an export file's line or row)

    def describe(self) -> str:
        where = f"record #{self.sequence}" if self.sequence is not None else "a record"
        if self.name:
            where += f" ({self.name})"
        if self.position is not None:
            where += f" at entry {self.position}"
        return f"chain {self.chain}: {where} {self.problem}: {self.message}"


@dataclass(frozen=True)
class _Entry:
    position: int
    name: str | None
    spec: Mapping[str, Any]
    sequence: int
    previous: str | None
    stored_hash: str


def _entry(position: int, record: Mapping[str, Any]) -> _Entry | Finding:
    name = (record.get("metadata") or {}).get("name") if isinstance(record.get("metadata"), Mapping) else None
    spec = record.get("spec")
    chain = spec.get("chain") if isinstance(spec, Mapping) else None
    if not isinstance(spec, Mapping) or not isinstance(chain, Mapping):
        return Finding("?", None, name, "malformed", "no spec.chain: not a chained AuditRecord", position)
    sequence, previous, stored = chain.get("sequence"), chain.get("previousHash"), spec.get("hash")
    if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1 or not isinstance(stored, str):
        return Finding(
            str(chain.get("id")),
            None,
            name,
            "malformed",
            "spec.chain.sequence (integer >= 1) and spec.hash are required",
            position,
        )
    if previous is not None and not isinstance(previous, str):
        return Finding(
            str(chain.get("id")), sequence, name, "malformed", "spec.chain.previousHash must be a string", position
        )
    try:
        canonical(spec)
    except Exception as exc:  # rfc8785 refuses what JSON cannot say exactly (big integers, NaN)
        return Finding(
            str(chain.get("id")), sequence, name, "malformed", f"spec cannot be canonicalised: {exc}", position
        )
    return _Entry(position, name, spec, sequence, previous, stored)


def _chain_id(record: Mapping[str, Any]) -> str:
    spec = record.get("spec")
    chain = spec.get("chain") if isinstance(spec, Mapping) else None
    return str(chain.get("id")) if isinstance(chain, Mapping) else "?"


def _cut_start(entries: list[_Entry], min_retention_days: int) -> tuple[int, Finding | None]:
    """Where verification starts: the latest sound RetentionCut's firstKept, else 1."""
    start = 1
    for e in entries:
        if e.spec.get("event") != "RetentionCut" or spec_hash(e.spec) != e.stored_hash:
            continue
        raw = e.spec.get("cut")
        cut = raw if isinstance(raw, Mapping) else {}
        days, first = cut.get("retentionDays"), cut.get("firstKept")
        if not isinstance(days, int) or not isinstance(first, int) or first >= e.sequence:
            return start, _finding(e, "cut", "its cut is malformed (firstKept must precede the cut record itself)")
        if days < min_retention_days:
            return start, _finding(
                e, "cut", f"it removed records kept only {days} days, less than the required {min_retention_days}"
            )
        start = max(start, first)
    return start, None


def _finding(e: _Entry, problem: Problem, message: str) -> Finding:
    return Finding(str(e.spec["chain"].get("id")), e.sequence, e.name, problem, message, e.position)


def verify_chain(records: list[Mapping[str, Any]], positions: list[int], min_retention_days: int) -> Finding | None:
    """The first problem of one chain's records, in the order given, or None."""
    entries: list[_Entry] = []
    for position, record in zip(positions, records, strict=True):
        made = _entry(position, record)
        if isinstance(made, Finding):
            return made
        entries.append(made)
    if not entries:
        return None
    start, bad_cut = _cut_start(entries, min_retention_days)
    if bad_cut is not None:
        return bad_cut
    later = {e.sequence: e for e in entries}
    seen: set[int] = set()
    previous: _Entry | None = None
    for e in entries:
        if e.sequence in seen:
            return _finding(e, "duplicate", "a second record with this sequence number (a fork or a copy)")
        seen.add(e.sequence)
        if spec_hash(e.spec) != e.stored_hash:
            return _finding(e, "altered", "its content no longer matches its own hash")
        if previous is None:
            if e.sequence > start:
                return _missing(e, start, later, seen)
            if e.sequence == 1 and e.previous is not None:
                return _finding(e, "altered", "the first record of a chain has no previousHash")
        else:
            expected = previous.sequence + 1
            if e.sequence < expected:
                return _finding(e, "reordered", f"it comes after record #{previous.sequence}")
            if e.sequence > expected:
                return _missing(e, expected, later, seen)
            if e.previous != previous.stored_hash:
                return _finding(
                    previous, "altered", f"its hash no longer matches the previousHash held by record #{e.sequence}"
                )
        previous = e
    return None


def _missing(e: _Entry, expected: int, later: Mapping[int, _Entry], seen: set[int]) -> Finding:
    """A gap before ``e``: a record further on fills it (reordered) or none does (removed)."""
    if expected in later and expected not in seen:
        moved = later[expected]
        return _finding(moved, "reordered", f"it comes after record #{e.sequence} (entry {e.position})")
    after = f"record #{expected - 1}" if expected > 1 else "nothing (no retention cut explains a missing first record)"
    return Finding(
        str(e.spec["chain"].get("id")),
        expected,
        None,
        "removed",
        f"record #{e.sequence}{f' ({e.name})' if e.name else ''} at entry {e.position} follows {after}",
    )


def verify(records: Iterable[Mapping[str, Any]], min_retention_days: int = DEFAULT_RETENTION_DAYS) -> list[Finding]:
    """The first problem of each chain, in the order of the chains' first appearance."""
    chains: dict[str, tuple[list[Mapping[str, Any]], list[int]]] = {}
    for position, record in enumerate(records, start=1):
        items, positions = chains.setdefault(_chain_id(record), ([], []))
        items.append(record)
        positions.append(position)
    found = [verify_chain(items, positions, min_retention_days) for items, positions in chains.values()]
    return [f for f in found if f is not None]


def by_sequence(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Cluster order: chains by id, each by sequence (the API server lists by name)."""

    def key(record: Mapping[str, Any]) -> tuple[str, int]:
        chain = (record.get("spec") or {}).get("chain") or {}
        sequence = chain.get("sequence")
        return str(chain.get("id")), sequence if isinstance(sequence, int) else 0

    return sorted(records, key=key)


def head(records: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest record of one chain."""
    return max(records, key=lambda r: r["spec"]["chain"]["sequence"], default=None)


def link(chain_records: Iterable[Mapping[str, Any]], chain_id: str) -> dict[str, Any]:
    """spec.chain of the next record of a chain, given the chain's records."""
    last = head(chain_records)
    if last is None:
        return {"id": chain_id, "sequence": 1}
    return {"id": chain_id, "sequence": last["spec"]["chain"]["sequence"] + 1, "previousHash": last["spec"]["hash"]}


def _recorded_at(record: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(record["spec"]["recordedAt"]).replace("Z", "+00:00"))


@dataclass(frozen=True)
class PrunePlan:
    """What retention does to one chain: append ``cut`` (if any), then delete ``delete`` in order."""

    cut: dict[str, Any] | None
    delete: tuple[str, ...]


def plan_prune(chain_records: list[Mapping[str, Any]], now: datetime, retention_days: int) -> PrunePlan:
    """Oldest-first removal of expired records of one verified chain.

    The newest record is never removed, so the chain always keeps its head (and a chain
    whose Validation is gone ends as one RetentionCut record). The cut record is written
    before anything is deleted: a pruner stopped half-way leaves records the cut already
    excludes, which verification accepts, never a gap nothing explains.
    """
    if retention_days < 1:
        raise ValueError(f"retention days must be at least 1, got {retention_days}")
    ordered = sorted(chain_records, key=lambda r: r["spec"]["chain"]["sequence"])
    if len(ordered) < 2:
        return PrunePlan(None, ())
    expired_before = now - timedelta(days=retention_days)
    prefix: list[Mapping[str, Any]] = []
    for record in ordered[:-1]:
        if _recorded_at(record) >= expired_before:
            break
        prefix.append(record)
    if not prefix:
        return PrunePlan(None, ())
    first_kept = prefix[-1]["spec"]["chain"]["sequence"] + 1
    cuts = [r["spec"]["cut"]["firstKept"] for r in ordered if r["spec"].get("event") == "RetentionCut"]
    cut = None
    if not cuts or max(cuts) < first_kept:
        cut = {"firstKept": first_kept, "retentionDays": retention_days, "expiredBefore": _iso(expired_before)}
    return PrunePlan(cut, tuple(r["metadata"]["name"] for r in prefix))


def _iso(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")
