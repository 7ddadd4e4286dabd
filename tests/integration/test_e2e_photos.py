"""A dermatology photo Validation end to end on the real control plane (issue 13, Done when: one
Validation per new modality, with subgroups): a photo Dataset (spec.format photo, cohort.csv with
Fitzpatrick skin types and body sites) is verified by the photo gate in its verify Job, the real
stage step lays the photos out, the reference photo classifier runs as the vendor, and the real
scorer reports AUC with skinType and bodySite subgroups."""

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

CASES = 48  # 8 per Fitzpatrick type, 12 per body site


@contextmanager
def photo_runner(api_client, claim_root: Path, work: Path):
    classifier = [sys.executable, "-m", "lightbox.sandbox.reference.photo_classifier"]
    images = {**runner_images(), f"{VENDOR}/photo-classifier": classifier}
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
    from lightbox.sandbox.photosampledata import make_photo_dataset

    root = tmp_path_factory.mktemp("claim")
    make_photo_dataset(root / "skin", n_cases=CASES, seed=5)
    return root


def photo_dataset(name: str = "skin") -> dict:
    return {
        "apiVersion": "lightbox.dev/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {
            "studies": {"claimName": CLAIM, "subPath": f"{name}/studies"},
            "groundTruth": {"claimName": CLAIM, "subPath": f"{name}/truth"},
            "format": "photo",
            "modality": "XC",
        },
    }


def test_a_dermatology_photo_validation_reports_skin_type_and_body_site(
    api_client, kubeconfig, kubectl, namespace, claim, tmp_path
):
    ns = namespace
    operator = Operator(kubeconfig, ns, tmp_path / "operator.log").start()
    try:
        with photo_runner(api_client, claim, tmp_path / "runner"):
            apply(kubectl, None, policy(f"ph-{ns}", ns, minSubgroupSize=5))
            algo = algorithm("derm", image("photo-classifier"))
            algo["spec"] |= {"modality": "XC", "bodyPart": "SKIN", "labels": ["benign", "malignant"]}
            algo["spec"]["positiveLabel"] = "malignant"
            val = validation("derm-auc", "derm", "skin", subgroups=["skinType", "bodySite"])
            apply(kubectl, ns, photo_dataset(), algo, val)

            final = wait_for(lambda: get(api_client, "validations", ns, "derm-auc"), finished, timeout=300,
                             what="the photo run to finish", operator=operator)
            run = runs_of(final)[-1]
            assert run["phase"] == "Succeeded", (run, operator.tail())
            assert run["cases"] == CASES and run["scored"] == CASES
            auc = run["metrics"]["auc"]
            assert 0.5 < auc["value"] <= 1 and auc["lower"] <= auc["value"] <= auc["upper"]
            # 8 cases per Fitzpatrick type and 12 per body site (photosampledata cycles them), all at
            # or above the policy's minimum cell of 5: every group is reported with its size.
            skin_types = ["I", "II", "III", "IV", "V", "VI"]
            assert {g: r["n"] for g, r in run["subgroups"]["skinType"].items()} == dict.fromkeys(skin_types, 8)
            sites = ["head/neck", "lower extremity", "posterior torso", "upper extremity"]
            assert {g: r["n"] for g, r in run["subgroups"]["bodySite"].items()} == dict.fromkeys(sites, 12)

            data = get(api_client, "datasets", ns, "skin")["status"]
            assert data["verified"] is True and data["caseCount"] == CASES
            assert data["cohort"]["skinType"] == dict.fromkeys(skin_types, 8)
    finally:
        operator.stop()
