"""A MAP's SCOORD3D findings (points in patient millimetres): placed on the case's slices from the
geometry the stage step records; expected positions worked out by hand from the slice geometry
below; points in another frame of reference, between slices or on a case without geometry are
refused with their reason."""

from __future__ import annotations

import json
import math
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from lightbox.sandbox import stager
from lightbox.sandbox.packaging_sr import slice_geometry, sr_findings
from lightbox.sandbox.reference.map_classifier import _code, measurement_report
from lightbox.sandbox.safeio import Unreadable
from lightbox.sandbox.sampledata import SAMPLE_DEID_OPTIONS, make_sample_dataset

FRAME, STUDY = "2.25.4242", "2.25.1"


def _slices(
    origin: list[float], step: list[float], orientation: list[float], spacing: list[float], n: int
) -> list[Any]:
    return [
        SimpleNamespace(
            FrameOfReferenceUID=FRAME,
            ImageOrientationPatient=orientation,
            PixelSpacing=spacing,
            ImagePositionPatient=[o + k * s for o, s in zip(origin, step, strict=True)],
            get=lambda key, default=None: FRAME if key == "FrameOfReferenceUID" else default,
        )
        for k in range(n)
    ]


# Axial: rows along +x, columns along +y, slices 2.5 mm apart along +z, PixelSpacing (row 0.8, column 0.5).
AXIAL = slice_geometry(_slices([-100.0, -50.0, 20.0], [0, 0, 2.5], [1, 0, 0, 0, 1, 0], [0.8, 0.5], 5), 2.5)
# Sagittal: rows along +y, columns along -z (normal -x), slices 3 mm apart along -x.
SAGITTAL = slice_geometry(_slices([10.0, -40.0, 60.0], [-3, 0, 0], [0, 1, 0, 0, 0, -1], [0.8, 0.5], 4), 3.0)


def _sr(points: list[tuple[list[float], float]], frame: str = FRAME, graphic: str = "POINT") -> bytes:
    groups = []
    for xyz, score in points:
        point = Dataset()
        point.RelationshipType, point.ValueType, point.GraphicType = "CONTAINS", "SCOORD3D", graphic
        point.GraphicData = xyz
        point.ReferencedFrameOfReferenceUID = frame
        num = Dataset()
        num.RelationshipType, num.ValueType = "CONTAINS", "NUM"
        num.ConceptNameCodeSequence = Sequence([_code("probability", "99LIGHTBOX", "probability")])
        measured = Dataset()
        measured.NumericValue = f"{score:.4f}"
        measured.MeasurementUnitsCodeSequence = Sequence([_code("1", "UCUM", "no units")])
        num.MeasuredValueSequence = Sequence([measured])
        group = Dataset()
        group.RelationshipType, group.ValueType, group.ContinuityOfContent = "CONTAINS", "CONTAINER", "SEPARATE"
        group.ConceptNameCodeSequence = Sequence([_code("125007", "DCM", "Measurement Group")])
        group.ContentSequence = Sequence([num, point])
        groups.append(group)
    report = measurement_report(SimpleNamespace(StudyInstanceUID=STUDY), 402, groups)
    out = BytesIO()
    pydicom.dcmwrite(out, report, enforce_file_format=True)
    return out.getvalue()


def test_axial_points_land_on_their_slice_and_pixel() -> None:
    # slice 3 is at z = 20 + 3 * 2.5 = 27.5; column 30 is x = -100 + 30 * 0.5, row 12 is y = -50 + 12 * 0.8
    first = [-100 + 30 * 0.5, -50 + 12 * 0.8, 27.5]
    # 1.2 mm before slice 0 (less than half the 2.5 mm gap): still slice 0, column 4, row 0
    second = [-100 + 4 * 0.5, -50.0, 18.8]
    got = sr_findings(_sr([(first, 0.9), (second, 0.4)]), "lesion", STUDY, [], AXIAL)
    assert sorted(got, key=lambda f: f["score"]) == [
        {"location": {"x": pytest.approx(4.0), "y": pytest.approx(0.0), "slice": 0}, "score": 0.4},
        {"location": {"x": pytest.approx(30.0), "y": pytest.approx(12.0), "slice": 3}, "score": 0.9},
    ]


def test_an_oblique_series_is_placed_along_its_own_axes() -> None:
    # slice 2 starts at (10 - 2 * 3, -40, 60) = (4, -40, 60); 7 columns along +y (0.5 mm each) and
    # 5 rows along -z (0.8 mm each): (4, -36.5, 56)
    [found] = sr_findings(_sr([([4.0, -36.5, 56.0], 0.7)]), "lesion", STUDY, [], SAGITTAL)
    assert found["location"] == {"x": pytest.approx(7.0), "y": pytest.approx(5.0), "slice": 2}


@pytest.mark.parametrize(
    "points, kwargs, geometry, rule",
    [
        ([([-100.0, -50.0, 30.0 + 1.3], 0.5)], {}, AXIAL, "lies on no slice"),  # 1.3 mm past the last, > 2.5 / 2
        ([([-100.0, -50.0, 40.0], 0.5)], {}, AXIAL, "lies on no slice"),  # past the last slice (30)
        ([([-100.0, -50.0, 20.0], 0.5)], {"frame": "2.25.999"}, AXIAL, "not in the frame of reference"),
        ([([-100.0, -50.0, 20.0], 0.5)], {}, None, "has no patient geometry"),
        ([([-100.0, -50.0, 20.0, 1.0, 1.0, 1.0], 0.5)], {"graphic": "POLYLINE"}, AXIAL, "is not a POINT"),
        ([([-100.0, math.inf, 20.0], 0.5)], {}, AXIAL, "is not a POINT"),
    ],
)
def test_points_that_cannot_be_placed_are_refused_naming_why(points, kwargs, geometry, rule: str) -> None:
    with pytest.raises(Unreadable, match=rule):
        sr_findings(_sr(points, **kwargs), "lesion", STUDY, [], geometry)


def test_a_series_without_a_frame_of_reference_has_no_geometry() -> None:
    slices = _slices([0.0, 0.0, 0.0], [0, 0, 1], [1, 0, 0, 0, 1, 0], [1.0, 1.0], 2)
    for s in slices:
        s.get = lambda key, default=None: default
    assert slice_geometry(slices, 1.0) is None


def test_the_stage_step_records_the_first_series_geometry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = make_sample_dataset(tmp_path / "data", n_cases=1, seed=1, task="segmentation")
    monkeypatch.setenv("LIGHTBOX_STUDIES_DIR", str(sample.studies_dir))
    monkeypatch.setenv("LIGHTBOX_INPUT_DIR", str(tmp_path / "input"))
    monkeypatch.setenv("LIGHTBOX_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("LIGHTBOX_TERMINATION_LOG", str(tmp_path / "term"))
    config = {"task": "detection", "deidOptions": SAMPLE_DEID_OPTIONS, "labels": ["lesion"]}
    monkeypatch.setenv("LIGHTBOX_STAGER_CONFIG", json.dumps(config))
    assert stager.main([]) == 0
    case = json.loads((tmp_path / "work" / "cases.json").read_text())["cases"]["case-0001"]
    manifest = json.loads((tmp_path / "input" / "manifest.json").read_text())
    staged = [pydicom.dcmread(tmp_path / "input" / f) for f in manifest["cases"][0]["series"][0]["files"]]
    geometry = case["geometry"]
    assert geometry["positions"] == [[float(v) for v in ds.ImagePositionPatient] for ds in staged]
    assert geometry["orientation"] == [float(v) for v in staged[0].ImageOrientationPatient]
    assert geometry["pixelSpacing"] == [float(v) for v in staged[0].PixelSpacing]
    assert geometry["frameOfReferenceUid"] == staged[0].FrameOfReferenceUID
    assert geometry["sliceGap"] == case["spacing"][0]
