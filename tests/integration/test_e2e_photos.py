"""A dermatology photo Validation end to end on the real control plane (issue 13, Done when: one
Validation per new modality, with subgroups): a photo Dataset (spec.format photo, cohort.csv with
Fitzpatrick skin types and body sites) is verified by the photo gate in its verify Job, the real
stage step lays the photos out, the reference photo classifier runs as the vendor, and the real
scorer reports AUC with skinType and bodySite subgroups."""

from __future__ import annotations

import sys

import pytest
from operator_harness import (
    VENDOR,
    apply,
    assert_auc_above_chance,
    classifier,
    formatted_dataset,
    get,
    operator_with_runner,
    policy,
    succeeded_run,
    validation,
)

CASES = 48  # 8 per Fitzpatrick type, 12 per body site
IMAGES = {f"{VENDOR}/photo-classifier": [sys.executable, "-m", "lightbox.sandbox.reference.photo_classifier"]}


@pytest.fixture
def claim(tmp_path_factory):
    from lightbox.sandbox.photosampledata import make_photo_dataset

    root = tmp_path_factory.mktemp("claim")
    make_photo_dataset(root / "skin", n_cases=CASES, seed=5)
    return root


def test_a_dermatology_photo_validation_reports_skin_type_and_body_site(
    api_client, kubeconfig, kubectl, namespace, claim, tmp_path
):
    ns = namespace
    with operator_with_runner(api_client, kubeconfig, ns, claim, tmp_path, IMAGES) as operator:
        apply(kubectl, None, policy(f"ph-{ns}", ns, minSubgroupSize=5))
        algo = classifier("derm", "photo-classifier", "XC", "SKIN", ["benign", "malignant"])
        val = validation("derm-auc", "derm", "skin", subgroups=["skinType", "bodySite"])
        apply(kubectl, ns, formatted_dataset("skin", "photo", "XC"), algo, val)

        run = succeeded_run(api_client, ns, "derm-auc", operator, CASES)
        assert_auc_above_chance(run)
        # 8 cases per Fitzpatrick type and 12 per body site (photosampledata cycles them), all at
        # or above the policy's minimum cell of 5: every group is reported with its size.
        skin_types = ["I", "II", "III", "IV", "V", "VI"]
        assert {g: r["n"] for g, r in run["subgroups"]["skinType"].items()} == dict.fromkeys(skin_types, 8)
        sites = ["head/neck", "lower extremity", "posterior torso", "upper extremity"]
        assert {g: r["n"] for g, r in run["subgroups"]["bodySite"].items()} == dict.fromkeys(sites, 12)

        data = get(api_client, "datasets", ns, "skin")["status"]
        assert data["verified"] is True and data["caseCount"] == CASES
        assert data["cohort"]["skinType"] == dict.fromkeys(skin_types, 8)
