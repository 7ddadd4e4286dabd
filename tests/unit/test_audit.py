"""The audit record of a finished run: what ran, on what, under which protocol, with what result."""

from __future__ import annotations

from datetime import UTC, datetime

import factories

from lightbox.api.audit import AuditRecord
from lightbox.api.results import MetricValue
from lightbox.api.validation import RunRecord
from lightbox.operator import audit

FINISHED = RunRecord(
    name="chest-v1-r3",
    number=3,
    phase="Succeeded",
    reason="Succeeded",
    created_at=datetime(2026, 11, 2, 3, 0, tzinfo=UTC),
    finished_at=datetime(2026, 11, 2, 3, 4, tzinfo=UTC),
    dataset_hash="sha256:" + "00" * 32,
    image=factories.IMAGE,
    cases=120,
    scored=118,
    metrics={"auc": MetricValue(value=0.91, lower=0.86, upper=0.95, method="delong")},
    verdict="Passed",
)


def _validation(uid: str = "6f1c2d3e-aaaa-bbbb-cccc-000000000001"):
    v = factories.validation(acceptance=[{"metric": "auc", "threshold": 0.85, "bound": "lower"}], metrics=["auc"])
    v.metadata["uid"] = uid
    return v


def test_a_record_holds_the_run_the_algorithm_the_data_and_the_protocol() -> None:
    algorithm = factories.algorithm(regulatory={"ceClass": "IIa", "udi": "(01)05790000000001"})
    body = audit.audit_record(
        _validation(), FINISHED, algorithm, factories.dataset(caseCount=120), "region-default", "lightbox-operator/9.9"
    )

    record = AuditRecord.model_validate(body)  # it is what the CRD describes
    spec = record.spec
    assert spec.run == FINISHED
    assert (spec.algorithm.vendor, spec.algorithm.product, spec.algorithm.version) == (
        "Acme Imaging",
        "ChestAI",
        "1.2.0",
    )
    assert (spec.algorithm.ce_class, spec.algorithm.udi) == ("IIa", "(01)05790000000001")
    assert spec.dataset.content_hash == "sha256:" + "00" * 32 and spec.dataset.case_count == 120
    assert [(c.metric, c.bound, c.threshold) for c in spec.acceptance] == [("auc", "lower", 0.85)]
    assert (spec.policy, spec.recorded_by) == ("region-default", "lightbox-operator/9.9")
    # Kept in the audit namespace, saying where the Validation lived.
    assert body["metadata"]["namespace"] == "lightbox-audit"
    assert spec.validation.namespace == "region"


def test_the_name_tells_validations_of_the_same_name_apart_and_nothing_owns_it() -> None:
    first = audit.audit_record(_validation("aaaaaaaa-1"), FINISHED, None, None, None, "x")
    again = audit.audit_record(_validation("bbbbbbbb-2"), FINISHED, None, None, None, "x")
    # The name is the chain (the Validation's uid) and the place in it.
    assert first["metadata"]["name"] == "aaaaaaaa-1-1"
    assert again["metadata"]["name"] == "bbbbbbbb-2-1"
    # Deleting the Validation must not take its history with it.
    assert "ownerReferences" not in first["metadata"]


def test_gone_algorithm_and_dataset_leave_their_names_and_the_run_keeps_what_ran() -> None:
    body = audit.audit_record(_validation(), FINISHED, None, None, None, "x")
    assert body["spec"]["algorithm"] == {"name": "chest"}
    assert body["spec"]["dataset"] == {"name": "chest-2025"}
    assert body["spec"]["run"]["image"] == factories.IMAGE
    assert body["spec"]["run"]["datasetHash"] == "sha256:" + "00" * 32


def test_the_operator_signs_with_its_version() -> None:
    assert audit.recorded_by().startswith("lightbox-operator/")
