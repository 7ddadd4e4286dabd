"""Other packagings end to end in-process (stage layout, the vendor once per case, score), with
expected values from the lightbox packaging's own path on the same data, and vendor outputs
that try to break the readers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lightbox.api.run import ScorerConfig, StagerConfig
from lightbox.sandbox import packaging
from lightbox.sandbox.deidgate import verify_tree
from lightbox.sandbox.packaging_sr import sr_score
from lightbox.sandbox.safeio import Unreadable
from lightbox.sandbox.sampledata import make_sample_dataset
from lightbox.sandbox.scorer import ScoreError, score
from lightbox.sandbox.stager import stage

CASES = 6


def _staged(tmp: Path, kind: str, task: str):
    sample = make_sample_dataset(tmp / "data", CASES, 0, task)  # type: ignore[arg-type]
    dirs = {name: tmp / name for name in ("input", "output", "work")}
    config = StagerConfig(task=task, packaging=kind, labels=sample.labels, deid_options=sample.deid_options)  # type: ignore[arg-type]
    stage(
        sample.studies_dir, dirs["input"], dirs["work"], config, verifier=verify_tree, output_dir=dirs["output"]
    )
    cases = json.loads((dirs["work"] / "cases.json").read_text())["cases"]
    return sample, dirs, cases


def _run_each_case(kind: str, dirs, cases, module: str, *args: str) -> None:
    for case in cases:
        env = {
            **os.environ,
            **packaging.vendor_environment(kind, str(dirs["input"] / case), str(dirs["output"] / case)),
        }
        done = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def _score(sample, dirs, kind, task):
    cfg = ScorerConfig(
        task=task,
        packaging=kind,
        labels=sample.labels,
        positive_label=sample.positive_label,  # type: ignore[arg-type]
        bootstrap={"resamples": 200, "level": "case"},
        min_subgroup_size=1,  # type: ignore[arg-type]
    )
    return score(cfg, dirs["output"], sample.truth_dir, dirs["work"])


@pytest.fixture(scope="module")
def contract_results(tmp_path_factory):
    """Per-case values of the lightbox packaging's reference algorithms on the same sample: the
    other packagings must reproduce them through their own layout and result formats."""
    out = {}
    for task, module in (("classification", "classifier"), ("segmentation", "segmenter")):
        tmp = tmp_path_factory.mktemp(task)
        sample, dirs, cases = _staged(tmp, "lightbox", task)
        env = {**os.environ, "LIGHTBOX_INPUT_DIR": str(dirs["input"]), "LIGHTBOX_OUTPUT_DIR": str(dirs["output"])}
        subprocess.run(
            [sys.executable, "-m", f"lightbox.sandbox.reference.{module}"], env=env, check=True, capture_output=True
        )
        out[task] = _score(sample, dirs, "lightbox", task)[1]["perCase"]
    return out


@pytest.mark.parametrize(
    "kind, task, module, args",
    [
        ("monai-map", "classification", "map_classifier", ()),  # Comprehensive SR, NUM item in a TID 1500 container
        ("monai-map", "classification", "map_classifier", ("--json",)),
        ("monai-map", "segmentation", "map_segmenter", ()),  # DICOM SEG
        ("grand-challenge", "classification", "gc_classifier", ()),  # a bare number in /output/*.json
        ("grand-challenge", "segmentation", "gc_segmenter", ()),  # zlib MetaImage under /output/images/
    ],
)
def test_reference_algorithms_of_each_packaging_score_as_the_contracts_own(
    tmp_path, contract_results, kind, task, module, args
):
    sample, dirs, cases = _staged(tmp_path, kind, task)
    _run_each_case(kind, dirs, cases, f"lightbox.sandbox.reference.{module}", *args)
    report, full = _score(sample, dirs, kind, task)
    assert report.scored == report.cases == CASES
    expected = contract_results[task]
    assert set(full["perCase"]) == set(expected)
    key = "score" if task == "classification" else "dice"
    for case, values in expected.items():
        assert full["perCase"][case][key] == pytest.approx(values[key], abs=1e-6), case


def test_map_input_is_the_cases_dicom_files_side_by_side(tmp_path):
    _, dirs, cases = _staged(tmp_path, "monai-map", "classification")
    for case, info in cases.items():
        entries = sorted(p.name for p in (dirs["input"] / case).iterdir())
        assert all(p.endswith(".dcm") for p in entries) and len(entries) >= info["slices"]
        assert (dirs["output"] / case).is_dir() and not any((dirs["output"] / case).iterdir())


def test_grand_challenge_input_is_inputs_json_and_one_metaimage_of_the_first_series(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    import pydicom

    _, dirs, cases = _staged(tmp_path, "grand-challenge", "classification")
    case, info = next(iter(cases.items()))
    inputs = json.loads((dirs["input"] / case / "inputs.json").read_text())
    assert [i["interface"]["slug"] for i in inputs] == ["generic-medical-image"]
    images = list((dirs["input"] / case / inputs[0]["interface"]["relative_path"]).glob("*.mha"))
    assert len(images) == 1 and images[0].name == inputs[0]["image"]["name"]
    assert not list((dirs["input"] / case).rglob("*.dcm"))  # no DICOM header reaches the container
    image = sitk.ReadImage(str(images[0]))
    assert image.GetSize()[::-1] == tuple(info["shape"])
    assert image.GetSpacing()[::-1] == pytest.approx(info["spacing"])
    # voxel values: modality units, as a DICOM reader's rescale gives them
    first = sorted((dirs["work"].parent / "data" / "studies" / info["source"]).iterdir())
    ds = pydicom.dcmread(first[0])
    expected = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    slices = sitk.GetArrayFromImage(image)
    assert any(np.array_equal(s, expected) for s in slices)


# --- hostile outputs -----------------------------------------------------------------------


def _staged_gc(tmp_path, task="classification"):
    sample, dirs, cases = _staged(tmp_path, "grand-challenge", task)
    return sample, dirs, list(cases)


def _failures(full):
    return {k: sorted(v) for k, v in full["failures"].items()}


def test_missing_unreadable_and_nan_results_are_counted_per_case(tmp_path):
    sample, dirs, cases = _staged_gc(tmp_path)
    out = dirs["output"]
    (out / cases[0] / "likelihood.json").write_text("0.7")
    (out / cases[1] / "likelihood.json").write_text('"high"')  # text is not a score
    (out / cases[2] / "likelihood.json").write_text("NaN")
    (out / cases[3] / "a.json").write_text("0.1")
    (out / cases[3] / "b.json").write_text("0.2")  # two results, neither results.json: ambiguous
    (out / cases[4] / "results.json").write_text('{"abnormal": 1.5}')  # out of range
    # cases[5] wrote nothing
    report, full = _score(sample, dirs, "grand-challenge", "classification")
    got = _failures(full)
    assert got["missing"] == sorted([cases[5], cases[3]])
    assert got["unreadable"] == [cases[1]]
    assert got["nan"] == sorted([cases[2], cases[4]])
    assert list(full["perCase"]) == [cases[0]]


def test_a_link_or_an_oversized_result_refuses_the_whole_run(tmp_path):
    sample, dirs, cases = _staged_gc(tmp_path)
    truth = next(sample.truth_dir.iterdir())
    (dirs["output"] / cases[0] / "likelihood.json").symlink_to(truth)
    with pytest.raises(ScoreError) as caught:
        _score(sample, dirs, "grand-challenge", "classification")
    assert caught.value.reason == "MalformedPredictions" and "symbolic link" in caught.value.message
    (dirs["output"] / cases[0] / "likelihood.json").unlink()
    (dirs["output"] / cases[0] / "likelihood.json").write_text(" " * (packaging.MAX_RESULT_JSON_BYTES + 1) + "0.5")
    with pytest.raises(ScoreError) as caught:
        _score(sample, dirs, "grand-challenge", "classification")
    assert "larger than the limit" in caught.value.message


def test_a_case_folder_replaced_by_a_link_is_not_followed(tmp_path):
    sample, dirs, cases = _staged_gc(tmp_path)
    target = dirs["output"] / cases[0]
    target.rmdir()
    target.symlink_to(sample.truth_dir)
    _, full = _score(sample, dirs, "grand-challenge", "classification")
    assert cases[0] in full["failures"]["missing"]


def test_a_flood_of_files_makes_the_case_unreadable_not_slow(tmp_path):
    sample, dirs, cases = _staged_gc(tmp_path)
    for i in range(packaging.MAX_SCANNED_ENTRIES + 1):
        (dirs["output"] / cases[0] / f"f{i}").touch()
    _, full = _score(sample, dirs, "grand-challenge", "classification")
    assert cases[0] in full["failures"]["unreadable"]


def test_grand_challenge_points_in_millimetres_become_pixels_by_the_spacing_written(tmp_path):
    sample, dirs, cases = _staged(tmp_path, "grand-challenge", "detection")
    case, info = next(iter(cases.items()))
    sz, sy, sx = info["spacing"]
    doc = {
        "type": "Multiple points",
        "points": [{"point": [10 * sx, 20 * sy, 1 * sz], "probability": 0.9}],
        "version": {"major": 1, "minor": 0},
    }
    (dirs["output"] / case / "nodules.json").write_text(json.dumps(doc))
    got = packaging.collect("grand-challenge", "detection", dirs["output"], cases, "abnormal")
    (finding,) = got.cases[case]["findings"]
    assert finding["location"]["x"] == pytest.approx(10) and finding["location"]["y"] == pytest.approx(20)
    assert finding["location"]["slice"] == 1 and finding["score"] == 0.9
    bad = {"type": "Multiple points", "points": [{"point": ["1", 2, 3], "probability": 0.5}]}
    (dirs["output"] / case / "nodules.json").write_text(json.dumps(bad))
    assert (
        "not [x, y, z]"
        in packaging.collect("grand-challenge", "detection", dirs["output"], cases, "abnormal").reasons[case]
    )


def test_a_maps_sr_findings_are_the_contract_detectors_findings(tmp_path):
    # the same lesions found by the lightbox packaging's detector, written to predictions.json,
    # and by the MAP-shaped one, written as SCOORD points in an SR: the same findings come out
    contract = tmp_path / "contract"
    sample, dirs, cases = _staged(contract, "lightbox", "detection")
    env = {**os.environ, "LIGHTBOX_INPUT_DIR": str(dirs["input"]), "LIGHTBOX_OUTPUT_DIR": str(dirs["output"])}
    subprocess.run(
        [sys.executable, "-m", "lightbox.sandbox.reference.detector"], env=env, check=True, capture_output=True
    )
    expected = json.loads((dirs["output"] / "predictions.json").read_text())["cases"]
    _, map_dirs, map_cases = _staged(tmp_path / "map", "monai-map", "detection")
    _run_each_case("monai-map", map_dirs, map_cases, "lightbox.sandbox.reference.map_detector")
    got = packaging.collect("monai-map", "detection", map_dirs["output"], map_cases, "abnormal")
    assert not got.reasons and set(got.cases) == set(expected)
    assert sum(len(c["findings"]) for c in expected.values()) > 0  # the sample has lesions to find
    for case, entry in expected.items():

        def key(f):
            return (f["location"]["slice"], round(f["location"]["x"], 2), round(f["location"]["y"], 2), f["score"])

        want = sorted(map(key, entry["findings"]))
        have = sorted(map(key, got.cases[case]["findings"]))
        assert have == want, case
    report, full = _score(sample, map_dirs, "monai-map", "detection")
    contract_report, _ = _score(sample, dirs, "lightbox", "detection")
    assert report.scored == report.cases == CASES
    assert report.metrics["frocSensitivity"].value == contract_report.metrics["frocSensitivity"].value


def test_a_seg_of_another_case_or_two_segs_are_unreadable(tmp_path):
    sample, dirs, cases = _staged(tmp_path, "monai-map", "segmentation")
    _run_each_case("monai-map", dirs, cases, "lightbox.sandbox.reference.map_segmenter")
    ids = list(cases)
    # case 0's output now holds case 1's SEG (frames refer to images not in case 0)
    (dirs["output"] / ids[0] / "segmentation.dcm").write_bytes(
        (dirs["output"] / ids[1] / "segmentation.dcm").read_bytes()
    )
    (dirs["output"] / ids[2] / "second.dcm").write_bytes((dirs["output"] / ids[2] / "segmentation.dcm").read_bytes())
    _, full = _score(sample, dirs, "monai-map", "segmentation")
    assert sorted(full["failures"]["unreadable"]) == sorted([ids[0], ids[2]])


# --- DICOM SR ------------------------------------------------------------------------------


def _sr(tmp_path, p=0.42, study=None, edit=None):
    from types import SimpleNamespace

    import pydicom

    from lightbox.sandbox.reference.map_classifier import write_sr

    path = tmp_path / "sr.dcm"
    write_sr(path, p, SimpleNamespace(StudyInstanceUID=study or "2.25.1"))
    if edit is not None:
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def test_sr_score_reads_the_num_item_named_after_the_positive_label(tmp_path):
    assert sr_score(_sr(tmp_path, 0.42), "Abnormal", "2.25.1") == pytest.approx(0.42)


def test_sr_about_another_study_is_refused(tmp_path):
    with pytest.raises(Unreadable, match="another study"):
        sr_score(_sr(tmp_path, study="2.25.99"), "abnormal", "2.25.1")


def test_sr_with_text_only_is_refused_free_text_is_never_read(tmp_path):
    def to_text(ds):
        item = ds.ContentSequence[0].ContentSequence[0]
        item.ValueType, item.TextValue = "TEXT", "abnormal: 0.9"
        del item.MeasuredValueSequence

    with pytest.raises(Unreadable, match="TEXT and CODE items are not read"):
        sr_score(_sr(tmp_path, edit=to_text), "abnormal", "2.25.1")


def test_sr_with_two_unnamed_num_items_is_ambiguous(tmp_path):
    import copy

    def two(ds):
        group = ds.ContentSequence[0]
        other = copy.deepcopy(group.ContentSequence[0])
        for item, name in ((group.ContentSequence[0], "volume"), (other, "diameter")):
            item.ConceptNameCodeSequence[0].CodeMeaning = name
        group.ContentSequence.append(other)

    with pytest.raises(Unreadable, match="no single NUM content item"):
        sr_score(_sr(tmp_path, edit=two), "abnormal", "2.25.1")


def test_sr_nested_past_the_limit_or_of_another_class_is_refused(tmp_path):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    def deep(ds):
        node = ds
        for _ in range(20):
            child = Dataset()
            child.ValueType, child.RelationshipType = "CONTAINER", "CONTAINS"
            node.ContentSequence = Sequence([child])
            node = child

    with pytest.raises(Unreadable, match="nested deeper"):
        sr_score(_sr(tmp_path, edit=deep), "abnormal", "2.25.1")

    def seg_class(ds):
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"

    with pytest.raises(Unreadable, match="is not one of Basic Text SR"):
        sr_score(_sr(tmp_path, edit=seg_class), "abnormal", "2.25.1")
    with pytest.raises(Unreadable, match="not readable DICOM"):
        sr_score(b"DICM" + bytes(200), "abnormal", "2.25.1")
    with pytest.raises(Unreadable, match="larger than"):
        sr_score(bytes((4 << 20) + 1), "abnormal", "2.25.1")


@pytest.mark.parametrize("kind", ["monai-map", "grand-challenge"])
@pytest.mark.parametrize("fmt", ["photo", "slide-tiff"])
def test_photo_and_slide_datasets_are_refused_for_per_case_packagings_naming_why(tmp_path, kind, fmt):
    from lightbox.sandbox.stager import StageError

    (tmp_path / "studies" / "case-a").mkdir(parents=True)
    config = StagerConfig(task="classification", packaging=kind, format=fmt)  # type: ignore[arg-type]
    with pytest.raises(StageError) as caught:
        stage(tmp_path / "studies", tmp_path / "in", tmp_path / "work", config, verifier=verify_tree)
    assert caught.value.reason == "ConfigInvalid" and caught.value.exit_code == 2
    assert caught.value.message == (
        f"Algorithm spec.packaging '{kind}' takes Dataset spec.format 'dicom' only (its input is laid out from DICOM "
        f"series); a Dataset of spec.format '{fmt}' needs spec.packaging 'lightbox'"
    )
    assert not (tmp_path / "in").exists()


def _detection_sr(tmp_path, edit=None, uids=("2.25.11", "2.25.12")):
    from types import SimpleNamespace

    import pydicom

    from lightbox.sandbox.reference.map_detector import write_sr

    images = [SimpleNamespace(SOPClassUID="1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID=u) for u in uids]
    path = tmp_path / "det.dcm"
    write_sr(
        path, [(10.0, 20.0, images[1], 0.75), (3.0, 4.0, images[0], 0.5)], SimpleNamespace(StudyInstanceUID="2.25.1")
    )
    if edit is not None:
        ds = pydicom.dcmread(path)
        edit(ds.ContentSequence[0])
        ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


SLICES = ["2.25.11", "2.25.12"]


def test_sr_points_become_pixel_indices_on_the_slice_of_their_image(tmp_path):
    from lightbox.sandbox.packaging_sr import sr_findings

    got = sorted(sr_findings(_detection_sr(tmp_path), "abnormal", "2.25.1", SLICES), key=lambda f: f["score"])
    assert got == [
        {"location": {"x": 3.0, "y": 4.0, "slice": 0}, "score": 0.5},
        {"location": {"x": 10.0, "y": 20.0, "slice": 1}, "score": 0.75},
    ]


def _first_group(measurements):
    return measurements.ContentSequence[0]


@pytest.mark.parametrize(
    "edit, rule",
    [
        (lambda m: setattr(_first_group(m).ContentSequence[1], "GraphicType", "POLYLINE"), "is not a POINT"),
        (lambda m: setattr(_first_group(m).ContentSequence[1], "GraphicData", [1.0, 2.0, 3.0, 4.0]), "is not a POINT"),
        (
            lambda m: setattr(_first_group(m).ContentSequence[0].ConceptNameCodeSequence[0], "CodeMeaning", "volume"),
            "one NUM named",
        ),
        (lambda m: _first_group(m).ContentSequence.append(_first_group(m).ContentSequence[1]), "one SCOORD"),
        (
            lambda m: setattr(
                _first_group(m).ContentSequence[1].ContentSequence[0].ReferencedSOPSequence[0],
                "ReferencedSOPInstanceUID",
                "2.25.999",
            ),
            "not selected from one image of the case's first series",
        ),
        # a point beside the groups makes their container a finding with no score of its own
        (
            lambda m: m.ContentSequence.append(_first_group(m).ContentSequence[1]),
            "one SCOORD and one NUM",
        ),
    ],
)
def test_sr_findings_that_do_not_fit_are_refused_naming_the_rule(tmp_path, edit, rule):
    from lightbox.sandbox.packaging_sr import sr_findings

    with pytest.raises(Unreadable, match=rule):
        sr_findings(_detection_sr(tmp_path, edit), "abnormal", "2.25.1", SLICES)


def test_an_sr_without_points_reports_no_findings_and_one_of_another_study_is_refused(tmp_path):
    from lightbox.sandbox.packaging_sr import sr_findings

    def no_points(measurements):
        measurements.ContentSequence = []

    assert sr_findings(_detection_sr(tmp_path, no_points), "abnormal", "2.25.1", SLICES) == []

    def point_at_the_root(measurements):
        point = _first_group(measurements).ContentSequence[1]
        measurements.ContentSequence = []
        measurements.ValueType = "SCOORD"  # the document's only child is a bare point, in no finding
        measurements.GraphicType, measurements.GraphicData = point.GraphicType, point.GraphicData

    with pytest.raises(Unreadable, match="SCOORD outside a finding's container"):
        sr_findings(_detection_sr(tmp_path, point_at_the_root), "abnormal", "2.25.1", SLICES)
    with pytest.raises(Unreadable, match="another study"):
        sr_findings(_detection_sr(tmp_path), "abnormal", "2.25.2", SLICES)
