"""The stage step for whole-slide datasets (``StagerConfig.format: slide-tiff``).

Runs after the stager's de-identification gate and provenance check (``lightbox.sandbox.deid``
checks slide files: removed pages, tags, description fields, tile metadata) and lays each
case folder out as ``/input/case-NNNN/<slide index>/0001.svs|.tif`` with one manifest series
per slide and a ``slides`` entry giving the pyramid's levels (dimensions, downsample, tile
size), the baseline's micrometres per pixel and the grid a segmentation mask covers. All of it
is read from the TIFF tags (tifffile), no pixel is decoded; the vendor reads the tiles it wants.

The cohort sheet (``cohort.csv`` beside the case folders, :data:`cohortsheet.SLIDE_COLUMNS`)
gives each case's patient pseudonym, sex, ageBand, specimenSite and stain for the scorer's
subgroups; it never reaches the vendor.

Scoring uses the same cases.json as DICOM: detection findings and truth lesions are in
baseline pixels; a segmentation mask covers the smallest level (``maskLevel``), so the case's
``shape`` is (1, that level's rows, columns) and its ``spacing`` that level's pixel size in mm.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightbox.api.run import CASES_FILE, EXIT_DATASET_UNREADABLE, MANIFEST_FILE, StagerConfig
from lightbox.sandbox.cohortsheet import SLIDE_COLUMNS, SLIDE_DIMENSIONS, CohortSheetError, load_sheet
from lightbox.sandbox.contract import InputCase, InputManifest, InputSeries, InputSlide, SlideLevel
from lightbox.sandbox.deid.slide_tiff import (
    SLIDE_SUFFIXES,
    SlideError,
    is_tiff_file,
    pyramid_levels,
    slide_manufacturer,
)

_MPP = re.compile(r"\|\s*MPP\s*=\s*(\d{1,6}(?:\.\d{1,12})?)\s*(?:\||$)")
_APPMAG = re.compile(r"\|\s*AppMag\s*=\s*(\d{1,6}(?:\.\d{1,12})?)\s*(?:\||$)")
RESUNIT_CENTIMETER = 3


@dataclass(frozen=True)
class SlideInfo:
    slide: InputSlide
    rows: int
    columns: int
    manufacturer: str


def _mpp(page: Any, svs: bool) -> float | None:
    """Micrometres per pixel: Aperio's MPP, else the resolution tags when in centimetres."""
    if svs and (m := _MPP.search(page.description or "")):
        return float(m.group(1)) or None
    xres = page.tags.get(282)
    if xres is not None and page.resolutionunit == RESUNIT_CENTIMETER:
        num, den = xres.value
        if num > 0 and den > 0:
            return 1e4 * den / num
    return None


def describe_slide(path: Path, relative: str) -> SlideInfo:
    """The manifest's view of a (verified) slide: tiled levels of the pyramid, read from its tags."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tif.pages.useframes = False
            pages: list[Any] = list(tif.pages)
            if not pages or not pages[0].is_tiled:
                raise SlideError("the first page is not tiled")
            base = pages[0]
            svs = (base.description or "").startswith("Aperio ")
            levels = [
                SlideLevel(
                    width=p.imagewidth,
                    height=p.imagelength,
                    downsample=round(base.imagewidth / p.imagewidth, 6),
                    tile_width=p.tilewidth,
                    tile_height=p.tilelength,
                )
                for p in pyramid_levels(pages)
            ]
            appmag = _APPMAG.search(base.description or "") if svs else None
            slide = InputSlide(
                file=relative,
                format="svs" if svs else "tiff",
                levels=levels,
                mpp=_mpp(base, svs),
                objective_power=float(appmag.group(1)) if appmag and float(appmag.group(1)) > 0 else None,
                mask_level=len(levels) - 1,
            )
            return SlideInfo(slide, base.imagelength, base.imagewidth, slide_manufacturer(pages))
    except SlideError:
        raise
    except Exception as exc:  # tifffile's many ways of saying "cannot parse"
        raise SlideError(f"{type(exc).__name__}") from None


def stage_slides(
    studies: Path, input_dir: Path, work_dir: Path, config: StagerConfig, content_hash: str, verifier: str
) -> Any:
    from lightbox.sandbox.stager import StageError, StageResult

    folders = sorted(p for p in studies.iterdir() if p.is_dir())
    try:  # the gate has validated it; read again here, as the photo stage does
        sheet = load_sheet(studies, [p.name for p in folders], SLIDE_COLUMNS)
    except CohortSheetError as exc:
        raise StageError("DatasetUnreadable", str(exc), EXIT_DATASET_UNREADABLE) from None
    cases = [(p.name, sorted(f for f in p.rglob("*") if f.is_file())) for p in folders]
    cases = [(name, files) for name, files in cases if files]
    if not cases:
        raise StageError(
            "DatasetUnreadable", "the studies directory holds no case folders with slides", EXIT_DATASET_UNREADABLE
        )
    if config.max_cases is not None:
        cases = cases[: config.max_cases]
    input_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(len(cases))))
    manifest_cases: list[InputCase] = []
    scorer_cases: dict[str, dict[str, Any]] = {}
    files_total = 0
    for index, (source, files) in enumerate(cases, start=1):
        case_id = f"case-{index:0{width}d}"
        series: list[InputSeries] = []
        slides: list[InputSlide] = []
        makers: list[str] = []
        for n, path in enumerate(files):
            suffix = path.suffix.lower()
            if not is_tiff_file(path) or suffix not in SLIDE_SUFFIXES:
                raise StageError(
                    "DatasetUnreadable",
                    f"a file of case {case_id} is not a slide TIFF ({', '.join(SLIDE_SUFFIXES)}): "
                    "a slide-tiff dataset holds slides only",
                    EXIT_DATASET_UNREADABLE,
                )
            relative = f"{case_id}/{n:02d}/0001{suffix}"
            try:
                info = describe_slide(path, relative)
            except SlideError as exc:
                raise StageError(
                    "DatasetUnreadable", f"a slide of case {case_id} cannot be read: {exc}", EXIT_DATASET_UNREADABLE
                ) from None
            (input_dir / case_id / f"{n:02d}").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, input_dir / relative)
            series.append(
                InputSeries(
                    series_instance_uid=f"slide-{n + 1}",
                    modality="SM",
                    files=[relative],
                    rows=info.rows,
                    columns=info.columns,
                )
            )
            slides.append(info.slide)
            makers.append(info.manufacturer)
        files_total += len(files)
        manifest_cases.append(InputCase(id=case_id, series=series, slides=slides))
        first = slides[0]
        grid = first.levels[first.mask_level]
        pixel_mm = (first.mpp or 1000.0) * grid.downsample / 1000.0
        attrs = sheet.get(source)
        scorer_cases[case_id] = {
            "source": source,
            "patientId": attrs.patient or source,
            **attrs.cohort(SLIDE_DIMENSIONS),  # sex, ageBand, specimenSite, stain: the site's sheet
            "manufacturer": makers[0],  # the scanner's maker: pathology's known domain shift
            "site": "unknown",
            "slices": 1,
            "shape": [1, grid.height, grid.width],
            "spacing": [1.0, pixel_mm, pixel_mm],
            "sopInstanceUids": [],
        }
    manifest = InputManifest(task=config.task, labels=list(config.labels), cases=manifest_cases)
    (input_dir / MANIFEST_FILE).write_text(manifest.model_dump_json(by_alias=True, indent=1))
    cases_doc = {"contractVersion": "v1", "task": config.task, "contentHash": content_hash, "cases": scorer_cases}
    (work_dir / CASES_FILE).write_text(json.dumps(cases_doc, indent=1))
    return StageResult(cases=len(manifest_cases), files=files_total, content_hash=content_hash, verifier=verifier)
