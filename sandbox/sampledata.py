"""A small synthetic, de-identified dataset built from pydicom's bundled test images.

Used by ``lightbox vendor check``, the demo and the tests. Layout::

    dst/studies/<case>/<n>.dcm       one folder per case (folder names are pseudonymous)
    dst/truth/labels.json            {case: {"label": "abnormal" | "normal"}}
    dst/truth/masks/<case>.npz       segmentation: array "mask" (slices, rows, columns), uint8
    dst/truth/findings.json          detection: {case: {"lesions": [{x, y, slice, radius}]}}

Every file is written from scratch with only technical attributes plus the subgroup ones
(PatientSex, PatientAge, Manufacturer, ClinicalTrialSiteID as the site code) and
PatientIdentityRemoved=YES, pseudonymous PatientID (LB + 16 base32 letters) and 2.25 UIDs.
Keeping sex/age and the site code needs the profile options in ``SAMPLE_DEID_OPTIONS``.

Abnormal cases carry a bright blob (its brightness varies, some are faint) and some normal
cases a small bright artefact, so a simple intensity feature predicts the label well but
not perfectly.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from lightbox.api.run import Task

SAMPLE_LABELS = ["normal", "abnormal"]
SAMPLE_POSITIVE_LABEL = "abnormal"
SAMPLE_DEID_OPTIONS = ["retainPatientCharacteristics", "retainInstitutionIdentity"]
_TEMPLATES = {"CT": "CT_small.dcm", "MR": "MR_small.dcm"}
_MANUFACTURERS = {"CT": ["GE MEDICAL SYSTEMS", "SIEMENS"], "MR": ["TOSHIBA_MEC", "Philips"]}
_SITES = ["SITE-A", "SITE-B", "SITE-C"]
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


@dataclass
class SampleDataset:
    root: Path
    task: Task
    studies_dir: Path
    truth_dir: Path
    cases: list[str]
    labels: list[str] = field(default_factory=lambda: list(SAMPLE_LABELS))
    positive_label: str = SAMPLE_POSITIVE_LABEL
    deid_options: list[str] = field(default_factory=lambda: list(SAMPLE_DEID_OPTIONS))


def _uid(rng: np.random.Generator) -> str:
    return f"2.25.{uuid.UUID(bytes=rng.bytes(16)).int}"


def _pseudonym(rng: np.random.Generator) -> str:
    return "LB" + "".join(_B32[i] for i in rng.integers(0, 32, 16))


def _template(modality: str) -> tuple[np.ndarray, dict[str, object]]:
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file(_TEMPLATES[modality], download=False)
    if path is None:
        raise FileNotFoundError(f"pydicom test file {_TEMPLATES[modality]} is not installed")
    ds = pydicom.dcmread(path)
    meta = {
        "sop_class": str(ds.SOPClassUID),
        "spacing": [float(v) for v in ds.PixelSpacing],
        "thickness": float(ds.get("SliceThickness", 1.0) or 1.0),
        "slope": float(ds.get("RescaleSlope", 1) or 1),
        "intercept": float(ds.get("RescaleIntercept", 0) or 0),
    }
    return ds.pixel_array.astype(float), meta


def _disc(shape: tuple[int, int], cx: float, cy: float, r: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    dist = np.hypot(xx - cx, yy - cy)
    return dist, dist <= r


def _write_dicom(
    path: Path, pixels: np.ndarray, attrs: dict[str, object], meta: dict[str, object], rng: np.random.Generator
) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import UID, ExplicitVRLittleEndian

    ds = Dataset()
    sop_uid = _uid(rng)
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = UID(str(meta["sop_class"]))
    fm.MediaStorageSOPInstanceUID = UID(sop_uid)
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = fm
    ds.SOPClassUID = meta["sop_class"]
    ds.SOPInstanceUID = sop_uid
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PatientName = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Lightbox sample data: synthetic, built without identifiers"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = (
        "113100",
        "DCM",
        "Basic Application Confidentiality Profile",
    )
    ds.DeidentificationMethodCodeSequence = Sequence([code])
    ds.PixelSpacing = [f"{v:.6f}" for v in cast(list[float], meta["spacing"])]
    ds.SliceThickness = f"{meta['thickness']:.4f}"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.RescaleSlope, ds.RescaleIntercept = meta["slope"], meta["intercept"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.clip(np.rint(pixels), -32768, 32767).astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def make_sample_dataset(dst: Path, n_cases: int = 40, seed: int = 0, task: Task = "classification") -> SampleDataset:
    """Write a synthetic dataset for ``task`` under ``dst`` (created if needed); deterministic in ``seed``."""
    if task not in ("classification", "detection", "segmentation"):
        raise ValueError(f"unknown task {task!r}")
    rng = np.random.default_rng(seed)
    dst = Path(dst)
    studies, truth = dst / "studies", dst / "truth"
    studies.mkdir(parents=True, exist_ok=True)
    truth.mkdir(parents=True, exist_ok=True)
    templates = {m: _template(m) for m in _TEMPLATES}
    n_patients = max(1, int(np.ceil(n_cases * 0.8)))
    patients = [
        {"id": _pseudonym(rng), "sex": str(rng.choice(["F", "M"])), "age": int(rng.integers(19, 90))}
        for _ in range(n_patients)
    ]
    labels: dict[str, dict[str, str]] = {}
    findings: dict[str, dict[str, list[dict[str, float]]]] = {}
    cases: list[str] = []
    slices = 3 if task == "segmentation" else 1
    for i in range(n_cases):
        case = "S" + _pseudonym(rng)[2:12]
        cases.append(case)
        patient = patients[i % n_patients] if i < n_patients else patients[int(rng.integers(0, n_patients))]
        modality = "CT" if rng.random() < 0.5 else "MR"
        base, meta = templates[modality]
        positive = bool(rng.random() < 0.4) if task == "classification" else bool(rng.random() < 0.7)
        labels[case] = {"label": SAMPLE_POSITIVE_LABEL if positive else "normal"}
        shape = base.shape
        peak = float(base.max())
        cx, cy = rng.uniform(0.3, 0.7) * shape[1], rng.uniform(0.3, 0.7) * shape[0]
        radius = rng.uniform(0.07, 0.12) * min(shape)
        strength = rng.uniform(0.05, 1.0) if positive else 0.0
        lesions: list[dict[str, float]] = []
        mask = np.zeros((slices,) + shape, dtype=np.uint8)
        images = []
        for z in range(slices):
            img = base * rng.uniform(0.9, 1.1) + rng.normal(0, 0.02 * peak, shape)
            if task == "segmentation" and positive:
                r = radius * (1.0 - 0.25 * abs(z - (slices - 1) / 2))
                dist, inside = _disc(shape, cx, cy, r)
                level = 1.5 * peak
                img = np.where(inside, level, np.maximum(img, level * np.clip(1 - (dist - r) / 2.0, 0, 1)))
                mask[z] = inside
            elif task == "detection" and positive:
                for _ in range(int(rng.integers(1, 3))):
                    lx, ly = rng.uniform(0.2, 0.8) * shape[1], rng.uniform(0.2, 0.8) * shape[0]
                    lr = rng.uniform(0.03, 0.06) * min(shape)
                    dist, inside = _disc(shape, lx, ly, lr)
                    img = np.where(inside, 1.4 * peak, img)
                    lesions.append({"x": round(lx, 2), "y": round(ly, 2), "slice": z, "radius": round(lr, 2)})
            elif task == "classification":
                if positive:
                    dist, _ = _disc(shape, cx, cy, radius)
                    img = img + strength * peak * np.exp(-0.5 * (dist / (radius / 2)) ** 2)
                elif rng.random() < 0.3:
                    dist, _ = _disc(shape, cx, cy, 2)
                    img = img + rng.uniform(0.05, 0.5) * peak * np.exp(-0.5 * (dist / 1.5) ** 2)
            images.append(img)
        if task == "segmentation":
            (truth / "masks").mkdir(exist_ok=True)
            np.savez_compressed(truth / "masks" / f"{case}.npz", mask=mask)
        if task == "detection":
            findings[case] = {"lesions": lesions}
        study_uid, series_uid, frame_uid = _uid(rng), _uid(rng), _uid(rng)
        (studies / case).mkdir(exist_ok=True)
        manufacturer = str(rng.choice(_MANUFACTURERS[modality]))
        for z, img in enumerate(images):
            attrs = {
                "Modality": modality,
                "Manufacturer": manufacturer,
                "PatientID": patient["id"],
                "PatientSex": patient["sex"],
                "PatientAge": f"{patient['age']:03d}Y",
                "ClinicalTrialSiteID": _SITES[i % len(_SITES)],
                "BodyPartExamined": "CHEST",
                "StudyInstanceUID": study_uid,
                "SeriesInstanceUID": series_uid,
                "FrameOfReferenceUID": frame_uid,
                "SeriesNumber": 1,
                "InstanceNumber": z + 1,
                "ImagePositionPatient": [0.0, 0.0, z * float(meta["thickness"])],  # type: ignore[arg-type]
            }
            _write_dicom(studies / case / f"{z + 1:04d}.dcm", img, attrs, meta, rng)
    (truth / "labels.json").write_text(json.dumps(labels, indent=1, sort_keys=True))
    if task == "detection":
        (truth / "findings.json").write_text(json.dumps(findings, indent=1, sort_keys=True))
    return SampleDataset(root=dst, task=task, studies_dir=studies, truth_dir=truth, cases=cases)
