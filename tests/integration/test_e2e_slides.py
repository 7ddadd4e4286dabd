"""A pathology slide Validation end to end on the real control plane (issue 13, Done when: one
Validation per new modality, with subgroups): a slide Dataset (spec.format slide-tiff, half
Aperio SVS, half generic TIFF from another scanner maker, all through ``lightbox deid``'s slide
path) is verified by the gate in its verify Job, the real stage step lays the slides out with
their pyramids in the manifest, the reference slide classifier reads only the level the
manifest names, and the real scorer reports AUC with the manufacturer (scanner) subgroup."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from operator_harness import (
    CLAIM,
    VENDOR,
    Operator,
    algorithm,
    apply,
    finished,
    get,
    image,
    policy,
    runner_images,
    runs_of,
    validation,
    wait_for,
)

from lightbox.devtools.localrunner import LocalRunner
from lightbox.devtools.localrunner_config import RunnerConfig

CASES = 40  # seed 3: 20 tumour, 20 normal; slides alternate Aperio and Hamamatsu


@contextmanager
def slide_runner(api_client, claim_root: Path, work: Path):
    classifier = [sys.executable, "-m", "lightbox.sandbox.reference.slide_classifier"]
    images = {**runner_images(), f"{VENDOR}/slide-classifier": classifier}
    config = RunnerConfig(claims={CLAIM: claim_root}, images=images, work_dir=work, watch_seconds=2, concurrency=2,
                          image_pull_backoff_seconds=0.5)
    runner = LocalRunner(api_client, config)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture
def claim(tmp_path_factory):
    from lightbox.sandbox.slidesampledata import make_slide_dataset

    root = tmp_path_factory.mktemp("claim")
    made = make_slide_dataset(root / "pathology", n_cases=CASES, seed=3)
    labels = (made.truth_dir / "labels.json").read_text()
    assert labels.count('"tumour"') == 20 and labels.count('"normal"') == 20
    return root


def slide_dataset(name: str = "pathology") -> dict:
    return {
        "apiVersion": "lightbox.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {
            "studies": {"claimName": CLAIM, "subPath": f"{name}/studies"},
            "groundTruth": {"claimName": CLAIM, "subPath": f"{name}/truth"},
            "format": "slide-tiff",
            "modality": "SM",
        },
    }


def test_a_pathology_slide_validation_reports_the_scanner_subgroup(
    api_client, kubeconfig, kubectl, namespace, claim, tmp_path
):
    ns = namespace
    operator = Operator(kubeconfig, ns, tmp_path / "operator.log").start()
    try:
        with slide_runner(api_client, claim, tmp_path / "runner"):
            apply(kubectl, None, policy(f"sl-{ns}", ns, minSubgroupSize=5))
            algo = algorithm("histo", image("slide-classifier"))
            algo["spec"] |= {"modality": "SM", "bodyPart": "BREAST", "labels": ["normal", "tumour"]}
            algo["spec"]["positiveLabel"] = "tumour"
            val = validation("histo-auc", "histo", "pathology", subgroups=["manufacturer"])
            apply(kubectl, ns, slide_dataset(), algo, val)

            final = wait_for(lambda: get(api_client, "validations", ns, "histo-auc"), finished, timeout=300,
                             what="the slide run to finish", operator=operator)
            run = runs_of(final)[-1]
            assert run["phase"] == "Succeeded", (run, operator.tail())
            assert run["cases"] == CASES and run["scored"] == CASES
            auc = run["metrics"]["auc"]
            assert 0.5 < auc["value"] <= 1 and auc["lower"] <= auc["value"] <= auc["upper"]
            # slidesampledata alternates the two scanner makers: 20 slides each
            assert {g: r["n"] for g, r in run["subgroups"]["manufacturer"].items()} == {"Aperio": 20, "Hamamatsu": 20}

            data = get(api_client, "datasets", ns, "pathology")["status"]
            assert data["verified"] is True and data["caseCount"] == CASES
            assert data["cohort"]["manufacturer"] == {"Aperio": 20, "Hamamatsu": 20}
            assert data["cohort"]["modality"] == {"SM": 40}
    finally:
        operator.stop()
