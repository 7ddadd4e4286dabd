"""The audit trail's hash chain: tampering with an export (edit, delete, reorder) is named, retention cuts
are explained, and the hash is the one docs/audit.md defines (recomputed here by hand, not by the code)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import factories
import pytest

from lightbox import auditchain, auditcmd
from lightbox.api.audit import AuditRecord
from lightbox.api.results import MetricValue
from lightbox.api.validation import RunRecord
from lightbox.operator import audit

UID = "6f1c2d3e-aaaa-bbbb-cccc-000000000001"
START = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)


def _run(number: int, verdict: str = "Passed") -> RunRecord:
    return RunRecord(
        name=f"chest-v1-r{number}",
        number=number,
        phase="Succeeded",
        reason="Succeeded",
        created_at=START + timedelta(days=30 * number),
        finished_at=START + timedelta(days=30 * number, minutes=4),
        metrics={"auc": MetricValue(value=0.9, lower=0.85, upper=0.95, method="delong")},
        verdict=verdict,
    )


def chain(length: int = 5, uid: str = UID) -> list[dict]:
    validation = factories.validation(
        acceptance=[{"metric": "auc", "threshold": 0.85, "bound": "lower"}], metrics=["auc"]
    )
    validation.metadata["uid"] = uid
    records: list[dict] = []
    for number in range(1, length + 1):
        records.append(
            audit.audit_record(validation, _run(number), None, None, "region", "op/1", chain_records=records)
        )
    return records


def lines(records: list[dict]) -> list[str]:
    return auditcmd.to_jsonl(records).splitlines()


def verify_text(text: str) -> list[auditchain.Finding]:
    return auditchain.verify(auditcmd.read_export(text))


def test_the_hash_is_sha256_of_the_rfc8785_serialisation_without_the_hash_field() -> None:
    spec = {"b": [1.0, 0.5, "é"], "a": {"z": 1, "hash": "kept: only the top-level hash is left out"}, "hash": "x"}
    # RFC 8785 by hand: keys sorted, no spaces, 1.0 written as 1, UTF-8 as is.
    text = '{"a":{"hash":"kept: only the top-level hash is left out","z":1},"b":[1,0.5,"é"]}'
    assert auditchain.spec_hash(spec) == "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_a_chain_links_each_record_to_the_hash_of_the_one_before() -> None:
    records = chain(3)
    assert [r["spec"]["chain"]["sequence"] for r in records] == [1, 2, 3]
    assert "previousHash" not in records[0]["spec"]["chain"]
    for before, after in zip(records, records[1:], strict=False):
        recomputed = (
            "sha256:"
            + hashlib.sha256(
                json.dumps(
                    {k: v for k, v in before["spec"].items() if k != "hash"},
                    sort_keys=True,
                    separators=(",", ":"),
                    ensure_ascii=False,
                ).encode()
            ).hexdigest()
        )  # these specs hold no floats whose JSON forms differ between json and JCS
        assert after["spec"]["chain"]["previousHash"] == recomputed == before["spec"]["hash"]
    for record in records:  # what the CRD describes
        AuditRecord.model_validate(record)
    assert auditchain.verify(records) == []


def test_what_the_api_server_gives_back_still_verifies() -> None:
    # Integral floats come back as integers (Go's JSON), keys in another order.
    records = chain(2)
    back = json.loads(json.dumps(records).replace("0.9,", "0.9000000000000000,"))
    back[0]["spec"]["run"]["metrics"]["auc"]["value"] = 0.9
    back[1]["spec"] = dict(reversed(list(back[1]["spec"].items())))
    assert auditchain.verify(back) == []


@pytest.mark.parametrize("recompute_own_hash", [False, True], ids=["hash-left", "hash-recomputed"])
def test_an_edited_record_in_an_export_is_named(recompute_own_hash: bool) -> None:
    text = lines(chain(5))
    third = json.loads(text[2])
    third["spec"]["run"]["verdict"] = "Failed"
    if recompute_own_hash:  # an editor who knows the scheme: only the next link shows it
        third["spec"]["hash"] = auditchain.spec_hash(third["spec"])
    text[2] = json.dumps(third)
    (finding,) = verify_text("\n".join(text))
    assert (finding.problem, finding.sequence, finding.name) == ("altered", 3, f"{UID}-3")


def test_a_deleted_record_in_an_export_is_named() -> None:
    text = lines(chain(5))
    del text[3]
    (finding,) = verify_text("\n".join(text))
    assert (finding.problem, finding.sequence) == ("removed", 4)


def test_a_deleted_first_record_is_named_when_no_retention_cut_explains_it() -> None:
    (finding,) = verify_text("\n".join(lines(chain(3))[1:]))
    assert (finding.problem, finding.sequence) == ("removed", 1)


@pytest.mark.parametrize("first", [0, 1, 3])
def test_two_records_swapped_in_an_export_are_named(first: int) -> None:
    text = lines(chain(5))
    text[first], text[first + 1] = text[first + 1], text[first]
    (finding,) = verify_text("\n".join(text))
    # Record #first+1 now comes after #first+2.
    assert (finding.problem, finding.sequence) == ("reordered", first + 1)


def test_a_copied_record_is_named() -> None:
    text = lines(chain(3))
    (finding,) = verify_text("\n".join(text + [text[1]]))
    assert (finding.problem, finding.sequence) == ("duplicate", 2)


def test_a_csv_export_verifies_and_shows_tampering_like_json_lines() -> None:
    records = chain(4)
    text = auditcmd.to_csv(records)
    assert verify_text(text) == []
    rows = text.splitlines()
    header, body = rows[0], rows[1:]
    assert header.split(",") == list(auditcmd.CSV_COLUMNS)
    del body[1]
    (finding,) = verify_text("\n".join([header, *body]))
    assert (finding.problem, finding.sequence) == ("removed", 2)
    # The readable columns are not trusted: only spec counts.
    altered = auditcmd.to_csv(records).replace(",Passed,", ",Failed,", 1)
    assert altered != auditcmd.to_csv(records) and verify_text(altered) == []


def test_chains_are_verified_each_on_its_own() -> None:
    one, two = chain(3), chain(3, uid="7a7a7a7a-0000-0000-0000-000000000002")
    mixed = [one[0], two[0], one[1], two[1], one[2], two[2]]
    assert auditchain.verify(mixed) == []
    text = lines(mixed)
    del text[3]  # two's second record
    (finding,) = verify_text("\n".join(text))
    assert (finding.chain, finding.problem, finding.sequence) == ("7a7a7a7a-0000-0000-0000-000000000002", "removed", 2)


@pytest.mark.parametrize(
    "garbage", ['{"spec": {}}', "[1, 2]", '{"spec": {"chain": {"id": "x", "sequence": "1"}, "hash": "h"}}']
)
def test_a_line_that_is_no_chained_record_is_named_not_skipped(garbage: str) -> None:
    text = lines(chain(2))
    try:
        findings = verify_text("\n".join([text[0], garbage, text[1]]))
    except auditcmd.ExportError as exc:
        assert "line 2" in str(exc)
    else:
        assert findings and findings[0].problem == "malformed" and findings[0].position == 2


def _prunable(now: datetime) -> list[dict]:
    records = chain(6)  # recorded 30, 60, ... 180 days after START (+4 minutes)
    assert now - timedelta(days=184) > START + timedelta(days=90, minutes=4)
    return records


def test_retention_removes_expired_records_oldest_first_after_a_cut_record_and_the_chain_still_verifies() -> None:
    now = START + timedelta(days=184 + 100)  # records 1, 2, 3 (days 30, 60, 90) have expired; 4 (day 120) has not
    records = _prunable(now)
    plan = auditchain.plan_prune(records, now, 184)
    assert plan.delete == (f"{UID}-1", f"{UID}-2", f"{UID}-3")
    assert plan.cut == {
        "firstKept": 4,
        "retentionDays": 184,
        "expiredBefore": "2026-04-15T03:00:00Z",
    }  # 5 Jan + 100 days
    cut = audit.retention_cut(records, plan.cut, now, "pruner")
    AuditRecord.model_validate(cut)
    assert cut["spec"]["chain"] == {"id": UID, "sequence": 7, "previousHash": records[-1]["spec"]["hash"]}
    kept = [r for r in records if r["metadata"]["name"] not in plan.delete] + [cut]
    assert auditchain.verify(kept) == []
    # Half-way (the pruner stopped after the cut and one deletion): still explained.
    assert auditchain.verify(records[1:] + [cut]) == []
    # Nothing else expired: the next pass does nothing.
    assert auditchain.plan_prune(kept, now, 184) == auditchain.PrunePlan(None, ())
    # A record removed after the cut's first kept one is still named.
    (finding,) = auditchain.verify(kept[:1] + kept[2:])
    assert (finding.problem, finding.sequence) == ("removed", 5)


def test_the_newest_record_is_never_pruned() -> None:
    records = chain(2)
    plan = auditchain.plan_prune(records, START + timedelta(days=3000), 184)
    assert plan.delete == (f"{UID}-1",) and plan.cut is not None and plan.cut["firstKept"] == 2


def test_a_cut_claiming_a_shorter_retention_than_required_is_named() -> None:
    now = START + timedelta(days=100)
    records = chain(3)
    plan = auditchain.plan_prune(records, now, 30)  # day 30 and 60 expired under 30 days
    cut = audit.retention_cut(records, plan.cut, now, "pruner")
    kept = [r for r in records if r["metadata"]["name"] not in plan.delete] + [cut]
    (finding,) = auditchain.verify(kept, min_retention_days=184)
    assert (finding.problem, finding.sequence) == ("cut", 4)
    assert auditchain.verify(kept, min_retention_days=30) == []


def test_a_retention_cut_whose_cut_is_not_an_object_is_named() -> None:
    records = chain(2)
    bogus = audit.retention_cut(
        records, {"firstKept": 2, "retentionDays": 184, "expiredBefore": "2026-01-01T00:00:00Z"}, START, "p"
    )
    bogus["spec"]["cut"] = "everything before"
    bogus["spec"] = auditchain.seal({k: v for k, v in bogus["spec"].items() if k != "hash"})
    (finding,) = auditchain.verify(records + [bogus])
    assert (finding.problem, finding.sequence) == ("cut", 3)
