"""``lightbox vendor check`` passes the reference algorithms and fails each misbehaving one
with a message a vendor can act on."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from lightbox.sandbox import vendorcheck
from lightbox.sandbox.isolation import IsolationUnavailable, run_isolated
from lightbox.sandbox.vendorcheck import CheckSettings, run_check

PY = sys.executable


@pytest.fixture(autouse=True)
def _needs_namespaces() -> None:
    try:
        run_isolated(["true"], env={"PATH": "/usr/bin:/bin"}, timeout=20)
    except IsolationUnavailable as exc:
        pytest.skip(f"namespaces unavailable here: {exc.reason}")


def check(command: list[str], **settings: object) -> tuple[int, str]:
    out = io.StringIO()
    defaults: dict[str, object] = {"cases": 8, "timeout": 60.0}
    code = run_check(command, CheckSettings(**{**defaults, **settings}), out)  # type: ignore[arg-type]
    return code, out.getvalue()


def module(name: str, *args: str) -> list[str]:
    return [PY, "-m", f"lightbox.sandbox.reference.{name}", *args]


def test_honest_classifier_is_conformant() -> None:
    code, text = check(module("classifier"))
    assert code == 0, text
    assert "verdict: CONFORMANT" in text and "(8/8 cases)" in text and "no network use" in text


def test_segmenter_writing_dicom_seg_is_conformant() -> None:
    code, text = check(module("segmenter", "--dicom-seg"), task="segmentation")
    assert code == 0, text
    assert "dice" in text


def test_a_dicom_seg_that_names_other_images_is_named_as_the_problem() -> None:
    script = (
        "import glob, os, pydicom\n"
        "from lightbox.sandbox.reference import segmenter\n"
        "segmenter.main(['--dicom-seg'])\n"
        "f = sorted(glob.glob(os.path.join(os.environ['LIGHTBOX_OUTPUT_DIR'], 'masks', '*.dcm')))[0]\n"
        "ds = pydicom.dcmread(f)\n"
        "ds.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID = '1.2.3'\n"
        "ds.save_as(f)\n"
    )
    code, text = check([PY, "-c", script], task="segmentation")
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    assert "mask is not a DICOM SEG of this case: frame 1 refers to an image that is not in the case's first series: case-0001" in text, text


def test_honest_segmenter_is_conformant() -> None:
    code, text = check(module("segmenter"), task="segmentation")
    assert code == 0, text
    assert "dice" in text


@pytest.mark.parametrize(
    ("mode", "fragments"),
    [
        ("network", ["tried to use the network", "ship weights in the image"]),
        ("read-truth", ["exited with code 1", "cannot read ground truth", "predictions.json was not written"]),
        ("malformed", ["predictions.json is not valid JSON", "line 1, column"]),
        ("schema", ["does not match the v1 schema", "cases.case-0001.scores.abnormal: Input should be less than or equal to 1",
                    "no prediction for 4 of 8 cases: case-0005"]),
        ("leak-phi", ["printed patient or study identifiers", "distinct PatientID values", "never log DICOM attribute values"]),
    ],
)
def test_misbehaving_algorithms_fail_with_actionable_messages(mode: str, fragments: list[str]) -> None:
    code, text = check(module("misbehave", mode))
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    assert "verdict: NOT CONFORMANT" in text
    for fragment in fragments:
        assert fragment in text, text


def test_flood_is_stopped_at_the_file_limit() -> None:
    code, text = check(module("misbehave", "flood"), max_output_bytes=2 << 20)
    assert code == vendorcheck.EXIT_NOT_CONFORMANT
    assert "reached the per-file limit of 2 MiB" in text


def test_hang_is_killed_at_the_time_limit() -> None:
    code, text = check(module("misbehave", "hang"), timeout=4.0)
    assert code == vendorcheck.EXIT_NOT_CONFORMANT
    assert "did not exit within 4 s and was killed" in text


def test_memory_hog_is_killed_at_the_memory_limit() -> None:
    code, text = check(module("misbehave", "hog"), max_memory_bytes=256 << 20)
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    assert "went over the memory limit of 256 MiB" in text and "OOMKilled" in text


def test_peak_memory_is_reported_under_a_limit() -> None:
    code, text = check(module("classifier"), max_memory_bytes=1 << 30)
    assert code == 0, text
    assert "resident memory peaked at" in text and "of the 1024 MiB limit" in text


def test_tampering_is_contained(tmp_path: Path) -> None:
    code, text = check(module("misbehave", "tamper"), keep=tmp_path / "kept")
    # the attempts fail inside the sandbox, so the honest predictions it then writes conform
    assert code == 0, text
    manifest = json.loads((tmp_path / "kept" / "input" / "manifest.json").read_text())
    assert len(manifest["cases"]) == 8


def test_missing_cases_are_named() -> None:
    script = (
        "import json, os\n"
        "m = json.load(open(os.path.join(os.environ['LIGHTBOX_INPUT_DIR'], 'manifest.json')))\n"
        "cases = {c['id']: {'scores': {'normal': 0.5, 'abnormal': 0.5}} for c in m['cases'][:5]}\n"
        "json.dump({'task': 'classification', 'cases': cases}, open(os.path.join(os.environ['LIGHTBOX_OUTPUT_DIR'], 'predictions.json'), 'w'))\n"
    )
    code, text = check([PY, "-c", script])
    assert code == 1 and "no prediction for 3 of 8 cases: case-0006, case-0007, case-0008 (3)" in text


def test_wrong_mask_shape_is_explained() -> None:
    script = (
        "import json, os, numpy as np\n"
        "m = json.load(open(os.path.join(os.environ['LIGHTBOX_INPUT_DIR'], 'manifest.json')))\n"
        "out = os.environ['LIGHTBOX_OUTPUT_DIR']\n"
        "np.savez(os.path.join(out, 'm.npz'), mask=np.zeros((2, 2), np.uint8))\n"
        "json.dump({'task': 'segmentation', 'cases': {c['id']: {'mask': 'm.npz'} for c in m['cases']}}, open(os.path.join(out, 'predictions.json'), 'w'))\n"
    )
    code, text = check([PY, "-c", script], task="segmentation", cases=3)
    assert code == 1 and "mask shape (2, 2) != (slices, rows, columns) (3," in text


def test_cli_usage_errors() -> None:
    assert vendorcheck.main([]) == vendorcheck.EXIT_USAGE
    assert vendorcheck.main(["check"]) == vendorcheck.EXIT_USAGE
    assert vendorcheck.main(["check", "--cases", "1", "--", "true"]) == vendorcheck.EXIT_USAGE


def test_cli_runs_through_the_dispatcher(capsys: pytest.CaptureFixture[str]) -> None:
    from lightbox.cli import main

    assert main(["vendor", "check", "--cases", "4", "--", *module("classifier")]) == 0
    assert "CONFORMANT" in capsys.readouterr().out


def test_cannot_check_without_isolation(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*args: object, **kwargs: object) -> None:
        raise IsolationUnavailable("no namespaces")

    monkeypatch.setattr(vendorcheck, "run_isolated", unavailable)
    code, text = check(["true"])
    assert code == vendorcheck.EXIT_CANNOT_CHECK and "no namespaces" in text and "not run" in text


def test_image_manifest_is_validated(tmp_path: Path) -> None:
    good = tmp_path / "algorithm.json"
    good.write_text(json.dumps({"name": "demo", "version": "1", "task": "classification", "labels": ["normal", "abnormal"]}))
    code, text = check(module("classifier"), manifest=good)
    assert code == 0 and "image manifest demo 1 is valid" in text
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "demo", "task": "classification", "resources": {"cpu": "lots"}}))
    code, text = check(module("classifier"), manifest=bad)
    assert code == 1 and "version: Field required" in text and "resources.cpu" in text


def test_honest_detector_is_conformant() -> None:
    code, text = check(module("detector"), task="detection")
    assert code == 0, text
    assert "frocSensitivity" in text


def test_relative_command_runs_from_the_callers_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "algo.sh"
    script.write_text(f"#!/bin/sh\nexec {PY} -m lightbox.sandbox.reference.classifier\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    code, text = check(["./algo.sh"])
    assert code == 0, text
