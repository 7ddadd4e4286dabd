"""The Markdown report: what a quality officer needs, from the objects the operator keeps."""

from __future__ import annotations

from datetime import UTC, datetime

import factories

from lightbox.api import AuditRecord, Validation
from lightbox.api.results import MetricValue, SubgroupResult
from lightbox.api.validation import CriterionResult, RunRecord
from lightbox.operator import audit
from lightbox.report import render

UID = "0a1b2c3d-0000-4000-8000-000000000000"


def _run(number: int, auc: float, verdict: str = "Passed", **extra) -> RunRecord:
    return RunRecord(
        name=f"chest-v1-r{number}", number=number, phase="Succeeded", reason="Succeeded",
        finished_at=datetime(2026, 11, number, 3, 5, tzinfo=UTC), dataset_hash="sha256:" + "ab" * 32,
        cases=120, scored=118, verdict=verdict,
        metrics={"auc": MetricValue(value=auc, lower=auc - 0.05, upper=auc + 0.04, method="obuchowski"),
                 "sensitivity": MetricValue(value=0.8, lower=0.7, upper=0.87, method="wilson")},
        **extra,
    )


def _validation(runs: list[RunRecord]) -> Validation:
    v = factories.validation(
        metrics=["auc", "sensitivity"], confidenceLevel=0.9, schedule="0 3 * * *",
        acceptance=[{"metric": "auc", "threshold": 0.85, "bound": "lower"}],
    )
    body = v.model_dump(by_alias=True, exclude_none=True)
    body["metadata"]["uid"] = UID
    body["status"] = {"runs": [r.model_dump(by_alias=True, exclude_none=True, mode="json") for r in runs]}
    return Validation.model_validate(body)


def _trail(validation: Validation, runs: list[RunRecord]) -> list[AuditRecord]:
    algorithm = factories.algorithm(regulatory={"ceClass": "IIa", "udi": "(01)05790000000001"})
    return [AuditRecord.model_validate(audit.audit_record(validation, r, algorithm, factories.dataset(), "region", "x")) for r in runs]


def test_a_report_names_device_data_protocol_results_and_history() -> None:
    latest = _run(
        3, 0.91,
        criteria=[CriterionResult(metric="auc", bound="lower", comparison=">=", threshold=0.85, observed=0.86, outcome="Passed")],
        subgroups={"sex": {"F": SubgroupResult(n=70, metrics={"auc": MetricValue(value=0.9, lower=0.84, upper=0.95)}),
                           "M": SubgroupResult(n=0, suppressed=True), "O": SubgroupResult(n=0, suppressed=True)}},
    )
    validation = _validation([_run(2, 0.88), latest])  # history kept 2 runs in status
    trail = _trail(validation, [_run(1, 0.90), _run(2, 0.88), latest])  # the trail keeps all 3
    data = factories.dataset(caseCount=120, cohort={"sex": {"F": 70, "M": 48, "O": 2}})
    text = render(validation, factories.algorithm(regulatory={"ceClass": "IIa", "udi": "(01)05790000000001"}), data, trail)

    assert text.startswith("# Validation chest-v1\n")
    for expected in (
        "| Vendor | Acme Imaging |", "| CE class | IIa |", "| UDI-DI | (01)05790000000001 |",
        "| Content hash | `sha256:" + "00" * 32 + "` |", "| sex | F 70, M 48, O 2 |",
        "90% intervals", "on the schedule `0 3 * * *`", "| auc | lower bound | >= 0.85 |",
        "Run 3 (chest-v1-r3): **Succeeded**", "Verdict: **Passed**",
        "| metric | estimate | 90% interval | method |", "| auc | 0.910 | [0.860, 0.950] | obuchowski |",
        "| auc (lower) >= 0.85 | 0.860 | Passed |",
        "| sex | F | 70 | auc | 0.900 [0.840, 0.950] |", "| sex | M | suppressed | — | — |",
    ):
        assert expected in text, expected
    history = text.split("## History (audit trail)")[1]
    assert [line.split("|")[1].strip() for line in history.strip().splitlines()[2:]] == ["1", "2", "3"]
    assert "auc 0.900 [0.850, 0.940]" in history  # run 1: gone from status, kept in the trail


def test_a_failed_run_says_why_and_a_missing_algorithm_is_named() -> None:
    failed = RunRecord(name="chest-v1-r1", number=1, phase="Failed", reason="DeadlineExceeded",
                       message="the run did not finish within its deadline of 3600 seconds")
    validation = _validation([failed])
    text = render(validation, None, None, [])
    assert "Run 1 (chest-v1-r1): **Failed**" in text
    assert "Reason: DeadlineExceeded: the run did not finish within its deadline of 3600 seconds" in text
    assert "Algorithm chest does not exist." in text and "Dataset chest-2025 does not exist." in text
    assert "No run has finished yet." in text  # nothing in the trail


def test_records_of_an_earlier_validation_with_the_same_name_are_left_out() -> None:
    validation = _validation([_run(1, 0.9)])
    other = factories.validation()
    other.metadata["uid"] = "ffffffff-old"
    text = render(validation, None, None, _trail(validation, [_run(1, 0.9)]) + _trail(other, [_run(1, 0.5)]))
    assert "auc 0.500" not in text and "auc 0.900" in text


def test_table_cells_cannot_break_the_table() -> None:
    validation = _validation([])
    text = render(validation, factories.algorithm(vendor="Acme | Imaging\nGmbH"), None, [])
    assert "| Vendor | Acme \\| Imaging GmbH |" in text
