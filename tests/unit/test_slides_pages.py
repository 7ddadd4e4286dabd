"""A page shaped like a pyramid level is kept only when it says it is a reduced image of the slide
and fits the pyramid (a whole-number factor of the baseline, the baseline's tiles, smaller than
the levels before it); anything unclear is removed and counted, never kept. A scanner's label
written as a plain tiled page of the right proportions is the case this guards against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import slide_builders as sb
import tifffile

from lightbox.sandbox.deid import deidentify_tree, verify_tree
from lightbox.sandbox.deid.slide_tiff import deidentify_slide

KEY = b"a-secret-key-for-the-page-tests"
ROWS, COLUMNS = 768, 1024
ZLIB: dict[str, Any] = {"compression": "zlib", "photometric": "rgb", "metadata": None}


def _label(rows: int, columns: int) -> np.ndarray:
    """The label's pixels (a name drawn on white) stretched to a level's proportions."""
    from PIL import Image

    image = Image.fromarray(sb.label_pixels()).resize((columns, rows))
    return np.asarray(image)


def _generic(path: Path, extra: list[tuple[np.ndarray, dict[str, Any]]]) -> np.ndarray:
    base = sb.tissue(ROWS, COLUMNS, seed=11)
    with tifffile.TiffWriter(path) as tif:
        tif.write(base, tile=(256, 256), **ZLIB)
        for pixels, args in extra:
            tif.write(pixels, **{**ZLIB, **args})
    return base


def _kept_shapes(path: Path) -> list[tuple[int, ...]]:
    with tifffile.TiffFile(path) as tif:
        return [p.shape for p in tif.pages]


def _level(base: np.ndarray, factor: int) -> tuple[np.ndarray, dict[str, Any]]:
    return base[::factor, ::factor], {"tile": (256, 256), "subfiletype": 1}


@pytest.mark.parametrize(
    "disguise, args",
    [
        ("no reduced-resolution flag", {"tile": (256, 256)}),
        ("other tiles than the baseline", {"tile": (128, 128), "subfiletype": 1}),
        ("no whole-number factor", {"tile": (256, 256), "subfiletype": 1, "shape": (512, 683)}),
    ],
)
def test_a_label_shaped_like_a_level_that_does_not_fit_is_removed(tmp_path: Path, disguise: str, args) -> None:
    rows, columns = args.pop("shape", (ROWS // 2, COLUMNS // 2))
    src = tmp_path / "in" / "case" / "s.tif"
    src.parent.mkdir(parents=True)
    base = _generic(src, [(_label(rows, columns), args)])
    out = tmp_path / "o.tif"
    result = deidentify_slide(src, out)
    assert (result.kept_pages, dict(result.removed_pages)) == (1, {"other": 1}), disguise
    assert _kept_shapes(out) == [base.shape]
    found = {v.keyword: v.occurrences for v in verify_tree(src.parent.parent, jobs=1).violations}
    assert found["NonPyramidImage"] == 1


def test_levels_that_tell_and_fit_are_kept_a_second_page_at_a_kept_size_is_not(tmp_path: Path) -> None:
    src = tmp_path / "s.tif"
    base = sb.tissue(ROWS, COLUMNS, seed=11)
    label = _label(ROWS // 2, COLUMNS // 2)
    _generic(src, [_level(base, 2), (label, {"tile": (256, 256), "subfiletype": 1}), _level(base, 4)])
    out = tmp_path / "o.tif"
    result = deidentify_slide(src, out)
    assert dict(result.removed_pages) == {"other": 1}
    assert _kept_shapes(out) == [(ROWS, COLUMNS, 3), (ROWS // 2, COLUMNS // 2, 3), (ROWS // 4, COLUMNS // 4, 3)]
    with tifffile.TiffFile(out) as tif:
        assert np.array_equal(tif.pages[1].asarray(), base[::2, ::2])  # the level, not the label


def test_a_level_after_a_smaller_one_is_removed(tmp_path: Path) -> None:
    src = tmp_path / "s.tif"
    base = sb.tissue(ROWS, COLUMNS, seed=11)
    _generic(src, [_level(base, 4), _level(base, 2)])
    result = deidentify_slide(src, tmp_path / "o.tif")
    assert (result.kept_pages, dict(result.removed_pages)) == (2, {"other": 1})


def test_a_thumbnail_must_say_it_is_reduced_and_only_one_is_kept(tmp_path: Path) -> None:
    src = tmp_path / "s.tif"
    base = sb.tissue(ROWS, COLUMNS, seed=11)
    _generic(src, [(base[::8, ::8], {"subfiletype": 1}), (base[::8, ::8], {"subfiletype": 1}), (base[::4, ::4], {})])
    out = tmp_path / "o.tif"
    result = deidentify_slide(src, out)
    assert dict(result.removed_pages) == {"other": 2}  # the second thumbnail, the one without the flag
    assert _kept_shapes(out) == [(ROWS, COLUMNS, 3), (ROWS // 8, COLUMNS // 8, 3)]


def _svs(path: Path, page_description: str) -> None:
    base = sb.tissue(ROWS, COLUMNS, seed=12)
    head = "Aperio Image Library v12.0.15\r\n"
    with tifffile.TiffWriter(path) as tif:
        tif.write(base, tile=(256, 256), description=f"{head}{COLUMNS}x{ROWS} (256x256) JPEG/RGB|AppMag = 20", **ZLIB)
        tif.write(_label(ROWS // 2, COLUMNS // 2), tile=(256, 256), description=page_description, **ZLIB)


@pytest.mark.parametrize(
    "description, kept",
    [
        (f"Aperio Image Library v12.0.15\r\n{COLUMNS}x{ROWS} -> {COLUMNS // 2}x{ROWS // 2} JPEG/RGB Q=70", True),
        ("Aperio Image Library v12.0.15\r\n", False),  # says nothing of what it is
        ("Aperio Image Library v12.0.15", False),
        (f"Aperio Image Library v12.0.15\r\n{COLUMNS}x{ROWS} -> 256x192 JPEG/RGB Q=70", False),  # not its size
        (f"Aperio Image Library v12.0.15\r\nscan {COLUMNS // 2}x{ROWS // 2}", False),
    ],
)
def test_an_aperio_page_is_a_level_only_when_its_description_names_its_own_reduced_size(
    tmp_path: Path, description: str, kept: bool
) -> None:
    src = tmp_path / "in" / "case" / "s.svs"
    src.parent.mkdir(parents=True)
    _svs(src, description)
    summary = deidentify_tree(src.parent.parent, tmp_path / "out", key=KEY, jobs=1)
    assert summary.written == 1
    assert summary.removed == ({} if kept else {"slide other page": 1})
    [out] = list((tmp_path / "out").rglob("*.svs"))
    assert len(_kept_shapes(out)) == (2 if kept else 1)
