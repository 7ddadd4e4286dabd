"""A MAP-shaped and a grand-challenge-shaped algorithm each run unchanged through a Validation on
the real control plane: the operator renders one vendor container per case (only that case's
folders mounted), the development runner executes the pod under PodSecurity "restricted", the
real stage step lays the input out for the packaging and the real scorer reads the vendor's DICOM
SEG / JSON results. Each reaches a verdict with the metrics the scorer computed."""

from __future__ import annotations

import sys

import pytest
from operator_harness import (
    VENDOR,
    algorithm,
    apply,
    dataset,
    get,
    image,
    jobs,
    operator_with_runner,
    policy,
    runs_of,
    succeeded_run,
    validation,
)

CASES = 16  # a per-case packaging starts the image once per case: a small dataset keeps the run short
IMAGES = {
    f"{VENDOR}/map-segmenter": [sys.executable, "-m", "lightbox.sandbox.reference.map_segmenter"],
    f"{VENDOR}/gc-classifier": [sys.executable, "-m", "lightbox.sandbox.reference.gc_classifier"],
}


@pytest.fixture
def claim(tmp_path_factory):
    from lightbox.sandbox.sampledata import make_sample_dataset

    root = tmp_path_factory.mktemp("claim")
    make_sample_dataset(root / "seg", n_cases=CASES, seed=3, task="segmentation")
    make_sample_dataset(root / "cls", n_cases=CASES, seed=3, task="classification")
    return root


def test_map_and_grand_challenge_images_run_unchanged_and_reach_a_verdict(
    api_client, kubeconfig, kubectl, namespace, claim, tmp_path
):
    ns = namespace
    with operator_with_runner(api_client, kubeconfig, ns, claim, tmp_path, IMAGES) as operator:
        apply(kubectl, None, policy(f"pk-{ns}", ns, minSubgroupSize=5))
        seg_algo = algorithm("map-seg", image("map-segmenter"), timeout=900)
        seg_algo["spec"] |= {"task": "segmentation", "packaging": "monai-map"}
        del seg_algo["spec"]["labels"], seg_algo["spec"]["positiveLabel"]
        gc_algo = algorithm("gc-cls", image("gc-classifier"), timeout=900)
        gc_algo["spec"]["packaging"] = "grand-challenge"
        seg_val = validation(
            "map-dice",
            "map-seg",
            "seg",
            metrics=["dice"],
            acceptance=[{"metric": "dice", "threshold": 0.5, "bound": "point"}],
        )
        apply(
            kubectl,
            ns,
            dataset("seg", "seg"),
            dataset("cls", "cls"),
            seg_algo,
            gc_algo,
            seg_val,
            validation("gc-auc", "gc-cls", "cls"),
        )

        for name, metric in (("map-dice", "dice"), ("gc-auc", "auc")):
            run = succeeded_run(api_client, ns, name, operator, CASES, timeout=600)
            assert run["verdict"] in {"Passed", "Inconclusive", "Failed"}
            assert 0 <= run["metrics"][metric]["value"] <= 1
        # the reference segmenter finds the sample's lesions: a verdict of Passed on Dice >= 0.5
        assert runs_of(get(api_client, "validations", ns, "map-dice"))[-1]["verdict"] == "Passed"

        by_name = {j["metadata"]["name"]: j for j in jobs(api_client, ns)}
        spec = by_name["map-dice-r1"]["spec"]["template"]["spec"]
        names = [c["name"] for c in spec["initContainers"]]
        assert names == ["stage"] + [f"vendor-{i:04d}" for i in range(1, CASES + 1)]
        for container in spec["initContainers"][1:]:
            assert [m.get("subPath") for m in container["volumeMounts"]] == [f"case-{container['name'][7:]}"] * 2
