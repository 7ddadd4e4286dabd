"""A small synthetic, de-identified dermatology photo dataset (``Dataset.spec.format: photo``).

Layout, like :mod:`lightbox.sandbox.sampledata`::

    dst/studies/<case>/<n>.jpg|png    one folder per case (pseudonymous names), 1-2 photos each
    dst/studies/cohort.csv            patient pseudonym, bodySite, Fitzpatrick skinType, sex, ageBand
    dst/truth/labels.json             {case: {"label": "malignant" | "benign"}}

The photos carry no metadata (written by Pillow with none): they pass the photo gate as they
are. Skin is drawn in a tone that darkens with the Fitzpatrick type; a malignant case has a
dark, irregular lesion of varying contrast, a benign one a faint, small one, so a contrast
feature predicts the label well but not perfectly, and less well on darker skin (where the
lesion's contrast is smaller): the subgroup report should show that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lightbox.sandbox.cohortsheet import AGE_BANDS, SHEET_NAME, SKIN_TYPES, CaseAttributes, write_sheet
from lightbox.sandbox.sampledata import _pseudonym

PHOTO_LABELS = ["benign", "malignant"]
PHOTO_POSITIVE_LABEL = "malignant"
BODY_SITES = ("head/neck", "upper extremity", "lower extremity", "posterior torso")
# Skin tone (RGB) per Fitzpatrick type, light to dark.
_TONES = {"I": (241, 214, 196), "II": (228, 190, 165), "III": (205, 160, 128),
          "IV": (170, 120, 90), "V": (125, 85, 60), "VI": (85, 58, 42)}


@dataclass
class PhotoSampleDataset:
    root: Path
    studies_dir: Path
    truth_dir: Path
    cases: list[str]
    labels: list[str] = field(default_factory=lambda: list(PHOTO_LABELS))
    positive_label: str = PHOTO_POSITIVE_LABEL


def _photo(rng: np.random.Generator, skin: str, positive: bool, size: int) -> np.ndarray:
    tone = np.asarray(_TONES[skin], float)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    image = tone + rng.normal(0, 4, (size, size, 3)) + 6 * np.sin(xx / 9.0)[..., None]
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    radius = rng.uniform(0.08, 0.16) * size if positive else rng.uniform(0.03, 0.07) * size
    wobble = 1 + 0.25 * np.sin(5 * np.arctan2(yy - cy, xx - cx) + rng.uniform(0, 6.28)) if positive else 1.0
    inside = np.hypot(xx - cx, yy - cy) < radius * wobble
    darkness = rng.uniform(0.25, 0.7) if positive else rng.uniform(0.05, 0.3)
    image[inside] *= 1 - darkness
    return np.clip(image, 0, 255).astype(np.uint8)


def make_photo_dataset(dst: Path, n_cases: int = 48, seed: int = 0, size: int = 96) -> PhotoSampleDataset:
    """Write the dataset under ``dst`` (created if needed); deterministic in ``seed``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    dst = Path(dst)
    studies, truth = dst / "studies", dst / "truth"
    studies.mkdir(parents=True, exist_ok=True)
    truth.mkdir(parents=True, exist_ok=True)
    patients = [_pseudonym(rng) for _ in range(max(1, int(n_cases * 0.75)))]
    labels: dict[str, dict[str, str]] = {}
    rows: list[CaseAttributes] = []
    for i in range(n_cases):
        case = "P" + _pseudonym(rng)[2:12]
        skin = SKIN_TYPES[i % len(SKIN_TYPES)]
        positive = bool(rng.random() < 0.4)
        labels[case] = {"label": PHOTO_POSITIVE_LABEL if positive else "benign"}
        (studies / case).mkdir()
        for n in range(1 + int(rng.random() < 0.3)):
            suffix, fmt = (".jpg", "JPEG") if (i + n) % 3 else (".png", "PNG")
            Image.fromarray(_photo(rng, skin, positive, size)).save(studies / case / f"{n + 1}{suffix}", fmt)
        rows.append(CaseAttributes(
            case=case, patient=patients[i % len(patients)], body_site=BODY_SITES[i % len(BODY_SITES)], skin_type=skin,
            sex=str(rng.choice(["F", "M"])), age_band=AGE_BANDS[1 + i % 4], manufacturer="unknown",
        ))
    write_sheet(studies / SHEET_NAME, rows)
    (truth / "labels.json").write_text(json.dumps(labels, indent=1))
    return PhotoSampleDataset(dst, studies, truth, sorted(labels))
