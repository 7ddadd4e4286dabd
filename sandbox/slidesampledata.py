"""A small synthetic, de-identified whole-slide dataset (``Dataset.spec.format: slide-tiff``).

Layout, like :mod:`lightbox.sandbox.sampledata`::

    dst/studies/<case>/slide.svs|slide.tif   one slide per case (pseudonymous folder names)
    dst/studies/cohort.csv                   patient pseudonym, specimenSite, stain, sex, ageBand
    dst/truth/labels.json                    {case: {"label": "tumour" | "normal"}}

Each slide is written as a scanner would (a 3-level tiled pyramid, a label page with a drawn
name, a macro page, an Aperio description with a filename and user, or a generic TIFF with a
Make tag and an identifying description) and then goes through ``lightbox deid``'s slide path
(:func:`lightbox.sandbox.deid.slide_tiff.deidentify_slide`), so the studies pass the gate as they
are. Half the slides are Aperio SVS, half generic TIFF from "Hamamatsu": the manufacturer
subgroup. Tissue is pink with purple nuclei; tumour cases have denser, darker nuclei, with
overlap, so a nuclear-density feature predicts the label well but not perfectly.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightbox.sandbox.cohortsheet import AGE_BANDS, SHEET_NAME, SLIDE_COLUMNS, CaseAttributes, write_sheet
from lightbox.sandbox.sampledata import _pseudonym

SLIDE_LABELS = ["normal", "tumour"]
SLIDE_POSITIVE_LABEL = "tumour"
SIDE, TILE = 768, 256


@dataclass
class SlideSampleDataset:
    root: Path
    studies_dir: Path
    truth_dir: Path
    cases: list[str]
    labels: list[str] = field(default_factory=lambda: list(SLIDE_LABELS))
    positive_label: str = SLIDE_POSITIVE_LABEL


def _tissue(rng: np.random.Generator, positive: bool) -> np.ndarray:
    image = np.empty((SIDE, SIDE, 3), float)
    image[:] = (232, 178, 204)
    image += rng.integers(-8, 9, image.shape, dtype=np.int8)
    density = rng.uniform(0.0018, 0.0032) if positive else rng.uniform(0.0008, 0.0022)
    count = int(density * SIDE * SIDE / 16)
    yy, xx = np.mgrid[-6:7, -6:7]
    for cy, cx in rng.integers(8, SIDE - 8, (count, 2)):
        r = rng.uniform(3, 6)
        disk = (yy**2 + xx**2) <= r * r
        shade = rng.uniform(0.35, 0.6) if positive else rng.uniform(0.5, 0.75)
        patch = image[cy - 6 : cy + 7, cx - 6 : cx + 7]
        patch[disk] = patch[disk] * shade * np.array([0.55, 0.35, 0.75])
    return np.clip(image, 0, 255).astype(np.uint8)


def _write_raw(path: Path, image: np.ndarray, aperio: bool, case: str) -> None:
    """The slide as a scanner writes it: identifying description, label and macro pages."""
    import tifffile
    from PIL import Image, ImageDraw

    label = Image.new("RGB", (400, 300), "white")
    ImageDraw.Draw(label).text((20, 140), f"PATIENT {case} 1961-04-15", fill="black")
    pyramid = [image[:: 2**i, :: 2**i] for i in range(3)]
    common: dict[str, Any] = {"photometric": "rgb", "metadata": None, "software": False}
    with tifffile.TiffWriter(path) as tif:
        for i, level in enumerate(pyramid):
            description: str | None
            extra: dict[str, Any]
            if aperio:
                description = (
                    f"Aperio Image Library v12.0.15\r\n{SIDE}x{SIDE} ({TILE}x{TILE}) RGB|AppMag = 20|MPP = 0.5"
                    f"|Filename = {case}-slide|User = pathologist|Date = 04/15/24"
                    if i == 0
                    else f"Aperio Image Library v12.0.15\r\n{SIDE}x{SIDE} -> {level.shape[1]}x{level.shape[0]}"
                )
                extra = {}
            else:
                description = f"case {case} scanned by pathologist" if i == 0 else None
                extra = {"extratags": [(271, "s", 0, "Hamamatsu Photonics", True)], "subfiletype": 1 if i else 0}
            tif.write(
                level,
                tile=(TILE, TILE),
                compression="zlib",
                compressionargs={"level": 1},
                description=description,
                **common,
                **extra,
            )
        tif.write(np.asarray(label), subfiletype=1, description="Aperio Image Library\r\nlabel 400x300", **common)
        tif.write(image[::8, ::8][:100], subfiletype=9, description="Aperio Image Library\r\nmacro", **common)


def _sheet_row(case: str, i: int) -> CaseAttributes:
    """The case's cohort sheet row, from its index (no draw from the generator, so the slides
    and labels stay what they were): breast and prostate, one case in three IHC."""
    return CaseAttributes(
        case=case,
        patient="LB" + case[1:11] + "SLIDES",  # a pseudonym's shape: LB and 16 base-32 letters
        modality="SM",
        specimen_site=("breast", "prostate")[(i // 2) % 2],  # not in step with the scanner (i % 2)
        stain="IHC" if i % 3 == 2 else "H&E",
        sex="F" if i % 5 < 3 else "M",
        age_band=AGE_BANDS[1 + i % 4],
    )


def make_slide_dataset(dst: Path, n_cases: int = 40, seed: int = 0) -> SlideSampleDataset:
    """Write the dataset under ``dst`` (created if needed); deterministic in ``seed``."""
    from lightbox.sandbox.deid.slide_tiff import deidentify_slide

    rng = np.random.default_rng(seed)
    dst = Path(dst)
    studies, truth = dst / "studies", dst / "truth"
    studies.mkdir(parents=True, exist_ok=True)
    truth.mkdir(parents=True, exist_ok=True)
    labels: dict[str, dict[str, str]] = {}
    rows: list[CaseAttributes] = []
    with tempfile.TemporaryDirectory(prefix="lightbox-slides-") as raw:
        for i in range(n_cases):
            case = "S" + _pseudonym(rng)[2:12]
            positive = bool(rng.random() < 0.4)
            labels[case] = {"label": SLIDE_POSITIVE_LABEL if positive else "normal"}
            aperio = i % 2 == 0
            suffix = ".svs" if aperio else ".tif"
            source = Path(raw) / f"{case}{suffix}"
            _write_raw(source, _tissue(rng, positive), aperio, case)
            (studies / case).mkdir()
            deidentify_slide(source, studies / case / f"slide{suffix}")
            rows.append(_sheet_row(case, i))
    write_sheet(studies / SHEET_NAME, rows, SLIDE_COLUMNS)
    (truth / "labels.json").write_text(json.dumps(labels, indent=1))
    return SlideSampleDataset(dst, studies, truth, sorted(labels))
