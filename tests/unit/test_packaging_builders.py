"""The run pod of the monai-map and grand-challenge packagings: the image once per case, each
run confined exactly as the lightbox packaging's vendor container, field by field."""

from __future__ import annotations

import pytest
from factories import algorithm, dataset
from test_builders import CONTAINER_SECURITY_CONTEXT, assert_confined, env, mounts, render
from test_outcome import OK_STAGE, job, pod, terminated

from lightbox.api import run as layout
from lightbox.operator import outcome
from lightbox.sandbox import packaging

PER_CASE = ["monai-map", "grand-challenge"]


def _spec(job):
    return job["spec"]["template"]["spec"]


@pytest.mark.parametrize("gpus", [0, 1])
@pytest.mark.parametrize("kind", PER_CASE)
def test_one_vendor_container_per_case_each_confined_like_the_lightbox_vendor(kind, gpus):
    reference = _spec(render(algo=algorithm(resources={"gpus": gpus}), data=dataset(caseCount=3)))
    spec = _spec(render(algo=algorithm(packaging=kind, resources={"gpus": gpus}), data=dataset(caseCount=3)))
    assert_confined(spec)
    lightbox_vendor = next(c for c in reference["initContainers"] if c["name"] == "vendor")
    vendors = spec["initContainers"][1:]
    assert [c["name"] for c in spec["initContainers"]] == ["stage", "vendor-0001", "vendor-0002", "vendor-0003"]
    for index, container in enumerate(vendors, start=1):
        case = f"case-{index:04d}"
        # field by field against the lightbox packaging's vendor container; only env and mounts differ
        for key in set(lightbox_vendor) | set(container):
            if key not in ("name", "env", "volumeMounts"):
                assert container.get(key) == lightbox_vendor.get(key), key
        assert container["securityContext"] == CONTAINER_SECURITY_CONTEXT
        assert container["volumeMounts"] == [
            {"name": layout.INPUT_VOLUME, "mountPath": "/input", "readOnly": True, "subPath": case},
            {"name": layout.OUTPUT_VOLUME, "mountPath": "/output", "readOnly": False, "subPath": case},
        ]
        values = env(container)
        assert values["HOME"] == values["TMPDIR"] == "/output"
        # no GPU asked: none given, as for the lightbox packaging; with GPUs the device plugin decides
        assert values.get(layout.NVIDIA_VISIBLE_DEVICES_ENV) == ("void" if not gpus else None)
        assert ("nvidia.com/gpu" in container["resources"]["limits"]) == bool(gpus)
        if kind == "monai-map":
            assert values["HOLOSCAN_INPUT_PATH"] == values["MONAI_INPUTPATH"] == "/input"
            assert (
                values["HOLOSCAN_OUTPUT_PATH"] == values["MONAI_OUTPUTPATH"] == values["HOLOSCAN_WORKDIR"] == "/output"
            )
    # the pod as a whole: the same volumes (truth only as before), deadline and main container
    assert spec["volumes"] == reference["volumes"]
    assert spec["activeDeadlineSeconds"] == reference["activeDeadlineSeconds"]
    score = spec["containers"][0]
    assert set(mounts(score)) == set(mounts(reference["containers"][0]))
    assert all(layout.TRUTH_VOLUME not in mounts(c) for c in spec["initContainers"])


@pytest.mark.parametrize("kind", PER_CASE)
def test_stage_and_score_are_told_the_packaging_and_stage_prepares_the_output_folders(kind):
    spec = _spec(render(algo=algorithm(packaging=kind), data=dataset(caseCount=2)))
    stage, score = spec["initContainers"][0], spec["containers"][0]
    assert f'"packaging":"{kind}"' in env(stage)[layout.STAGER_CONFIG_ENV]
    assert f'"packaging":"{kind}"' in env(score)[layout.SCORER_CONFIG_ENV]
    assert mounts(stage)[layout.OUTPUT_VOLUME] == {
        "name": layout.OUTPUT_VOLUME,
        "mountPath": "/output",
        "readOnly": False,
    }
    assert env(stage)[layout.OUTPUT_DIR_ENV] == "/output"
    # the lightbox packaging's stage step never sees the output
    plain = _spec(render(data=dataset(caseCount=2)))["initContainers"][0]
    assert (
        layout.OUTPUT_VOLUME not in mounts(plain) and '"packaging":"lightbox"' in env(plain)[layout.STAGER_CONFIG_ENV]
    )


def test_case_count_is_needed_and_bounded():
    with pytest.raises(ValueError, match="verified case count"):
        render(algo=algorithm(packaging="monai-map"), data=dataset())
    with pytest.raises(ValueError, match=f"1..{packaging.MAX_CASES_PER_POD}"):
        render(algo=algorithm(packaging="grand-challenge"), data=dataset(caseCount=packaging.MAX_CASES_PER_POD + 1))


def test_case_ids_follow_the_stage_steps_width():
    # the stage step names cases case-0001.. and widens past 9999 cases: the subPaths must match
    assert packaging.case_id(7, 12) == "case-0007"
    assert packaging.case_id(7, 12000) == "case-00007"


def test_any_failed_per_case_vendor_container_fails_the_run_with_its_code():
    statuses = [OK_STAGE, terminated("vendor-0001"), terminated("vendor-0002", 3, message="patient John Doe")]
    result = outcome.run_outcome(job("Failed"), pod("Failed", statuses))
    assert result.reason == outcome.VENDOR_EXIT_CODE and result.exit_code == 3 and "John" not in result.message
    oom = [OK_STAGE, terminated("vendor-0001", 137, reason="OOMKilled")]
    assert outcome.run_outcome(job("Failed"), pod("Failed", oom)).reason == "OOMKilled"


def test_development_runner_shows_the_scorer_the_per_case_folders_and_hides_other_cases_from_a_vendor(tmp_path):
    # A kubelet shows a container everything under its mounts; the development runner hides what
    # other containers mount, and must not hide the per-case subPaths under the scorer's /output.
    from lightbox.devtools.localrunner_spec import Mount, hidden_paths

    inp, out, truth = tmp_path / "input", tmp_path / "output", tmp_path / "truth"
    candidates = [inp, out, truth, inp / "case-0001", out / "case-0001", inp / "case-0002", out / "case-0002"]
    score = [Mount("/output", out, True), Mount("/data/truth", truth, True)]
    assert hidden_paths(candidates, score) == sorted([inp, inp / "case-0001", inp / "case-0002"])
    vendor2 = [Mount("/input", inp / "case-0002", True), Mount("/output", out / "case-0002", False)]
    assert hidden_paths(candidates, vendor2) == sorted([truth, inp / "case-0001", out / "case-0001"])
