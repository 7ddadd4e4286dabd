"""Vendor contract v1: shipped schemas, prediction validation, image manifest checks."""

from __future__ import annotations

import pytest

from lightbox.api.algorithm import AlgorithmSpec
from lightbox.sandbox import contract


@pytest.mark.parametrize("name", sorted(contract.SCHEMA_FILES))
def test_shipped_schemas_match_the_models(name: str) -> None:
    assert contract.load_schema(name) == contract.generated_schema(name), (
        "schema drifted: run python -m lightbox.sandbox.contract"
    )


def test_valid_predictions_for_each_task() -> None:
    for data in (
        {
            "contractVersion": "v1",
            "task": "classification",
            "cases": {"case-0001": {"scores": {"abnormal": 0.2, "normal": 0.8}}},
        },
        {
            "task": "detection",
            "cases": {"case-0001": {"findings": [{"location": {"x": 3, "y": 4.5, "slice": 0}, "score": 1}]}},
        },
        {"task": "segmentation", "cases": {"case-0001": {"mask": "masks/case-0001.npz"}}},
    ):
        doc, errors = contract.validate_predictions(data)
        assert doc is not None and errors == []


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"task": "classification", "cases": {"c1": {"scores": {"abnormal": 1.5}}}},
            "cases.c1.scores.abnormal: Input should be less than or equal to 1",
        ),
        (
            {"task": "classification", "cases": {"c1": {"scores": {"abnormal": float("nan")}}}},
            "cases.c1.scores.abnormal",
        ),
        ({"task": "classification", "cases": {"c1": {"scores": {}}}}, "cases.c1.scores"),
        (
            {"task": "classification", "cases": {"c1": {"scores": {"a": 0.1}, "note": "hi"}}},
            "cases.c1.note: Extra inputs are not permitted",
        ),
        ({"task": "segmentation", "cases": {"c1": {"mask": "../truth/x.npz"}}}, "cases.c1.mask"),
        ({"task": "segmentation", "cases": {"c1": {"mask": "/etc/passwd"}}}, "cases.c1.mask"),
        (
            {"task": "detection", "cases": {"c1": {"findings": [{"location": {"x": -1, "y": 0}, "score": 0.5}]}}},
            "cases.c1.findings.0.location.x",
        ),
        ({"task": "regression", "cases": {}}, "does not match any of the expected tags"),
        ({"task": "classification", "cases": {"bad id!": {"scores": {"a": 0.1}}}}, "cases.bad id!.[key]"),
        ({"task": "classification", "contractVersion": "v2", "cases": {}}, "contractVersion"),
    ],
)
def test_invalid_predictions_are_described_without_values(data: dict, expected: str) -> None:
    doc, errors = contract.validate_predictions(data)
    assert doc is None
    assert any(expected in e for e in errors), errors
    assert not any("1.5" in e or "passwd" in e or "'hi'" in e for e in errors)


def _spec(**overrides: object) -> dict:
    spec = AlgorithmSpec(
        vendor="Acme",
        product="ChestAI",
        version="1.0",
        image="registry.example.org/acme/chest@sha256:" + "a" * 64,
        task="classification",
        modality="CT",
        body_part="CHEST",
        labels=["normal", "abnormal"],
        positive_label="abnormal",
        resources={"cpu": "2", "memory": "8Gi"},
    ).model_dump(by_alias=True, exclude_none=True)
    spec.update(overrides)
    return spec


MANIFEST = {
    "name": "chest-ai",
    "version": "1.0",
    "task": "classification",
    "modality": "CT",
    "labels": ["abnormal", "normal"],
    "positiveLabel": "abnormal",
    "resources": {"cpu": "1500m", "memory": "6Gi"},
}


def test_matching_spec_and_manifest_have_no_problems() -> None:
    assert contract.check_algorithm_spec(_spec(), MANIFEST) == []


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"task": "segmentation"}, "spec.task"),
        ({"modality": "MR"}, "spec.modality"),
        ({"labels": ["normal", "abnormal", "other"]}, "spec.labels"),
        ({"positiveLabel": "normal"}, "spec.positiveLabel"),
        ({"resources": {"cpu": "1", "memory": "8Gi"}}, "spec.resources.cpu 1 is below"),
        ({"resources": {"cpu": "2", "memory": "4Gi"}}, "spec.resources.memory 4Gi is below"),
        ({"contractVersion": "v2"}, "spec.contractVersion"),
    ],
)
def test_mismatches_are_named(overrides: dict, fragment: str) -> None:
    problems = contract.check_algorithm_spec(_spec(**overrides), MANIFEST)
    assert any(fragment in p for p in problems), problems


def test_gpu_requirement() -> None:
    problems = contract.check_algorithm_spec(_spec(), {**MANIFEST, "resources": {"gpus": 1}})
    assert any("gpus" in p for p in problems)


@pytest.mark.parametrize(
    ("text", "value"), [("500m", 0.5), ("2", 2.0), ("1.5", 1.5), ("4Gi", 4 * 2**30), ("100M", 1e8)]
)
def test_parse_quantity(text: str, value: float) -> None:
    assert contract.parse_quantity(text) == pytest.approx(value)


def test_input_manifest_round_trips() -> None:
    m = contract.InputManifest(
        task="segmentation",
        labels=["lesion"],
        cases=[
            contract.InputCase(
                id="case-0001",
                series=[
                    contract.InputSeries(
                        series_instance_uid="2.25.1", modality="CT", files=["case-0001/00/0001.dcm"], rows=4, columns=5
                    )
                ],
            )
        ],
    )
    assert contract.InputManifest.model_validate_json(m.model_dump_json(by_alias=True)) == m
