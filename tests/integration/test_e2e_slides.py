"""A pathology slide Validation end to end on the real control plane (issue 13, Done when: one
Validation per new modality, with subgroups): a slide Dataset (spec.format slide-tiff, half
Aperio SVS, half generic TIFF from another scanner maker, all through ``lightbox deid``'s slide
path) is verified by the gate in its verify Job, the real stage step lays the slides out with
their pyramids in the manifest, the reference slide classifier reads only the level the
manifest names, and the real scorer reports AUC with the manufacturer (scanner) subgroup."""

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

CASES = 40  # seed 3: 20 tumour, 20 normal; slides alternate Aperio and Hamamatsu
IMAGES = {f"{VENDOR}/slide-classifier": [sys.executable, "-m", "lightbox.sandbox.reference.slide_classifier"]}


@pytest.fixture
def claim(tmp_path_factory):
    from lightbox.sandbox.slidesampledata import make_slide_dataset

    root = tmp_path_factory.mktemp("claim")
    made = make_slide_dataset(root / "pathology", n_cases=CASES, seed=3)
    labels = (made.truth_dir / "labels.json").read_text()
    assert labels.count('"tumour"') == 20 and labels.count('"normal"') == 20
    return root


def test_a_pathology_slide_validation_reports_the_scanner_subgroup(
    api_client, kubeconfig, kubectl, namespace, claim, tmp_path
):
    ns = namespace
    with operator_with_runner(api_client, kubeconfig, ns, claim, tmp_path, IMAGES) as operator:
        apply(kubectl, None, policy(f"sl-{ns}", ns, minSubgroupSize=5))
        algo = classifier("histo", "slide-classifier", "SM", "BREAST", ["normal", "tumour"])
        val = validation("histo-auc", "histo", "pathology", subgroups=["manufacturer"])
        apply(kubectl, ns, formatted_dataset("pathology", "slide-tiff", "SM"), algo, val)

        run = succeeded_run(api_client, ns, "histo-auc", operator, CASES)
        assert_auc_above_chance(run)
        # slidesampledata alternates the two scanner makers: 20 slides each
        assert {g: r["n"] for g, r in run["subgroups"]["manufacturer"].items()} == {"Aperio": 20, "Hamamatsu": 20}

        data = get(api_client, "datasets", ns, "pathology")["status"]
        assert data["verified"] is True and data["caseCount"] == CASES
        assert data["cohort"]["manufacturer"] == {"Aperio": 20, "Hamamatsu": 20}
        assert data["cohort"]["modality"] == {"SM": 40}
