"""Stage step for slide-tiff datasets: the gate covers slides, the manifest gives paths and the
pyramid's levels (read from tags), cases.json the grid a mask covers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import slide_builders as sb

from lightbox.api.run import StagerConfig
from lightbox.sandbox.contract import InputManifest
from lightbox.sandbox.deid import deidentify_tree, verify_tree
from lightbox.sandbox.stager import StageError, stage

KEY = b"a-secret-key-for-the-slide-tests"


def _dataset(tmp_path: Path, cases: int = 2) -> Path:
    raw = tmp_path / "raw"
    for i in range(cases):
        (raw / f"case{i}").mkdir(parents=True)
        sb.write_svs(raw / f"case{i}" / f"{sb.FILENAME}-{i}.svs")
    studies = tmp_path / "studies"
    assert deidentify_tree(raw, studies, key=KEY, jobs=1).written == cases
    return studies


def test_slides_are_staged_with_their_pyramid_in_the_manifest(tmp_path: Path) -> None:
    studies = _dataset(tmp_path)
    config = StagerConfig(task="classification", format="slide-tiff", labels=["tumour"])
    result = stage(studies, tmp_path / "input", tmp_path / "work", config)
    assert (result.cases, result.files) == (2, 2)
    assert result.content_hash == verify_tree(studies, jobs=1).content_hash
    raw = json.loads((tmp_path / "input" / "manifest.json").read_text())
    manifest = InputManifest.model_validate(raw)
    case = manifest.cases[0]
    assert [s.files for s in case.series] == [["case-0001/00/0001.svs"]]
    assert (case.series[0].rows, case.series[0].columns, case.series[0].modality) == (768, 1024, "SM")
    slide = raw["cases"][0]["slides"][0]
    # The builder's pyramid: 1024x768, 512x384, 256x192, tiles 256x256; MPP 0.4990, AppMag 20
    assert slide["levels"] == [
        {"width": 1024, "height": 768, "downsample": 1.0, "tileWidth": 256, "tileHeight": 256},
        {"width": 512, "height": 384, "downsample": 2.0, "tileWidth": 256, "tileHeight": 256},
        {"width": 256, "height": 192, "downsample": 4.0, "tileWidth": 256, "tileHeight": 256},
    ]
    assert (slide["file"], slide["format"], slide["mpp"], slide["objectivePower"], slide["maskLevel"]) == (
        "case-0001/00/0001.svs",
        "svs",
        0.499,
        20.0,
        2,
    )
    staged = tmp_path / "input" / "case-0001" / "00" / "0001.svs"
    assert staged.read_bytes() in [p.read_bytes() for p in studies.rglob("*.svs")]  # copied as verified
    cases = json.loads((tmp_path / "work" / "cases.json").read_text())["cases"]
    assert cases["case-0001"]["shape"] == [1, 192, 256]
    assert cases["case-0001"]["spacing"] == pytest.approx([1.0, 0.499 * 4 / 1000, 0.499 * 4 / 1000])
    assert "Jane" not in json.dumps(raw) and sb.FILENAME not in json.dumps(raw)


def test_a_dicom_manifest_has_no_slides_key(tmp_path: Path) -> None:
    from lightbox.sandbox.contract import InputCase, InputSeries

    case = InputCase(
        id="case-0001",
        series=[InputSeries(series_instance_uid="1", modality="CT", files=["a/b.dcm"], rows=1, columns=1)],
    )
    assert "slides" not in json.loads(case.model_dump_json(by_alias=True))


def test_an_unscrubbed_slide_is_refused_naming_what_it_carries(tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    (studies / "case0").mkdir(parents=True)
    sb.write_svs(studies / "case0" / "s.svs")
    with pytest.raises(StageError) as err:
        stage(studies, tmp_path / "input", tmp_path / "work", StagerConfig(task="classification", format="slide-tiff"))
    assert err.value.reason == "PHIFound"
    for keyword in ("LabelImage", "MacroImage", "PrivateTag", "ImageDescription", "DateTime"):
        assert keyword in err.value.message
    for planted in sb.PLANTED:
        assert planted not in err.value.message
    assert not (tmp_path / "input").exists()


def test_a_file_that_is_not_a_slide_is_refused(tmp_path: Path) -> None:
    studies = _dataset(tmp_path, cases=1)
    case = next(p for p in studies.iterdir() if p.is_dir())
    (case / "notes.tif").write_bytes(b"II*\0" + bytes(64))
    with pytest.raises(StageError) as err:
        stage(studies, tmp_path / "input", tmp_path / "work", StagerConfig(task="classification", format="slide-tiff"))
    assert err.value.reason == "DatasetUnreadable"


def test_sample_slide_dataset_passes_the_gate_and_the_reference_classifier_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightbox.sandbox.reference import slide_classifier
    from lightbox.sandbox.slidesampledata import make_slide_dataset

    made = make_slide_dataset(tmp_path / "ds", n_cases=4, seed=3)
    report = verify_tree(made.studies_dir, jobs=1)
    assert report.ok and report.cohort["manufacturer"] == {"Aperio": 2, "Hamamatsu": 2}
    for path in made.studies_dir.rglob("slide.*"):
        data = path.read_bytes()
        assert b"1961-04-15" not in data and b"pathologist" not in data and b"Photonics" not in data
    config = StagerConfig(task="classification", format="slide-tiff", labels=["normal", "tumour"])
    stage(made.studies_dir, tmp_path / "input", tmp_path / "work", config)
    monkeypatch.setenv("LIGHTBOX_INPUT_DIR", str(tmp_path / "input"))
    monkeypatch.setenv("LIGHTBOX_OUTPUT_DIR", str(tmp_path / "output"))
    assert slide_classifier.main([]) == 0
    predictions = json.loads((tmp_path / "output" / "predictions.json").read_text())
    assert sorted(predictions["cases"]) == ["case-0001", "case-0002", "case-0003", "case-0004"]


def test_patch_level_masks_go_through_the_scorers_segmentation_path(tmp_path: Path) -> None:
    """A mask on the manifest's maskLevel grid (192 x 256 here) is scored like any mask; one on
    the baseline's grid is refused as oversized output."""
    import numpy as np

    from lightbox.sandbox.scorer import Failures, ScoreError, score_segmentation_inputs

    studies = _dataset(tmp_path, cases=1)
    stage(studies, tmp_path / "input", tmp_path / "work", StagerConfig(task="segmentation", format="slide-tiff"))
    cases = json.loads((tmp_path / "work" / "cases.json").read_text())["cases"]
    source = cases["case-0001"]["source"]
    truth = np.zeros((1, 192, 256), np.uint8)
    truth[0, 10:20, 10:20] = 1  # 100 patches
    (tmp_path / "truth" / "masks").mkdir(parents=True)
    np.savez(tmp_path / "truth" / "masks" / f"{source}.npz", mask=truth)
    pred = np.zeros_like(truth)
    pred[0, 10:20, 15:25] = 1  # 100 patches, 50 shared: Dice 2*50/200 = 0.5, IoU 50/150
    out = tmp_path / "output"
    out.mkdir()
    np.savez(out / "grid.npz", mask=pred)
    np.savez(out / "baseline.npz", mask=np.zeros((1, 768, 1024), np.uint8))
    failures = Failures()
    scored = score_segmentation_inputs(cases, tmp_path / "truth", out, {"case-0001": {"mask": "grid.npz"}}, failures)
    assert scored.values["dice"].tolist() == [0.5]
    assert scored.values["iou"].tolist() == pytest.approx([1 / 3])
    # a baseline-sized mask is far larger than a mask of this case may be: the scorer refuses the run
    with pytest.raises(ScoreError, match="more bytes uncompressed than a mask of this image needs"):
        score_segmentation_inputs(cases, tmp_path / "truth", out, {"case-0001": {"mask": "baseline.npz"}}, Failures())


def test_levels_kept_in_sub_ifds_are_in_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tifffile

    from lightbox.sandbox.deid.slide_tiff import deidentify_slide
    from lightbox.sandbox.reference import slide_classifier

    base = sb.tissue(1024, 1024, seed=2)
    raw = tmp_path / "raw.ome.tif"
    with tifffile.TiffWriter(raw, ome=True) as tif:
        tif.write(base, tile=(256, 256), subifds=2, compression="zlib", photometric="rgb")
        for level in (base[::2, ::2], base[::4, ::4]):
            tif.write(level, tile=(256, 256), subfiletype=1, compression="zlib", photometric="rgb")
    deidentify_slide(raw, tmp_path / "studies" / "c1" / "slide.tif")
    stage(
        tmp_path / "studies",
        tmp_path / "input",
        tmp_path / "work",
        StagerConfig(task="classification", format="slide-tiff"),
    )
    slide = json.loads((tmp_path / "input" / "manifest.json").read_text())["cases"][0]["slides"][0]
    assert [(lv["width"], lv["downsample"]) for lv in slide["levels"]] == [(1024, 1.0), (512, 2.0), (256, 4.0)]
    assert (slide["format"], slide["maskLevel"]) == ("tiff", 2)
    monkeypatch.setenv("LIGHTBOX_INPUT_DIR", str(tmp_path / "input"))
    level = slide_classifier.read_level(slide)  # found among the SubIFDs
    assert np.array_equal(level, base[::4, ::4])
