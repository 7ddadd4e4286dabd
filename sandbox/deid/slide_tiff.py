"""Whole-slide TIFF (Aperio SVS, generic pyramidal TIFF): de-identify by rewriting, and check.

What carries identity in a slide file, and what happens to it:

* the **label** and **macro** (overview) pages: photographs of the glass slide with its barcode
  and handwritten names. Removed, as is every page that is not clearly part of the pyramid.
  A page is kept only when it says it is a reduced image of the slide (Aperio: its
  description's ``-> WxH`` names its own size; any other TIFF: NewSubfileType's
  reduced-resolution bit) and fits: a level is the baseline divided by a whole number
  (within a pixel of rounding), tiled like the baseline, smaller than every level before it;
  one stripped thumbnail of the baseline's proportions may stay. A label stored as a plain
  tiled page of a level's proportions tells nothing, so it goes (counted as "other");
* the **ImageDescription**: Aperio writes ``key = value`` pairs such as Filename, Date, Time,
  User, ScanScope ID, barcodes. Rebuilt from an allow-list (the page's own dimensions, and
  ``AppMag`` and ``MPP`` when their values are plain numbers); a generic TIFF loses it;
* every **other tag** outside the set the pyramid needs (DateTime, Artist, HostComputer,
  Software, Model, DocumentName, XMP, EXIF, ICC profile...), and every private tag (code >=
  32768): the pyramid needs none of them (Aperio's JPEG 2000 is a Compression value,
  33003/33005, not a tag). Make, the scanner's maker, stays when it is a plain name (as
  Annex E keeps Manufacturer);
* metadata **inside the tiles**: JPEG COM/APPn segments and JPEG 2000 comments
  (:mod:`slide_codestreams`), removed without decoding.

The file is rewritten page by page with ``tifffile.TiffWriter``, tile by tile: each
compressed tile is read with one ``pread`` and written as it is (after the header scrub),
so memory stays at one tile whatever the slide's size, and no pixel is decoded. What
cannot be parsed or copied faithfully is refused with a reason; nothing of it is written.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lightbox.sandbox.deid.slide_codestreams import CodestreamError, Scrubbed, scrub_j2k, scrub_jpeg

TIFF_MAGICS = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff")

# Tags the rewritten pages carry (what TiffWriter writes for a copied pyramid page), plus
# ImageDescription (270), which is rebuilt. Anything else found is removed and named.
STRUCTURE_TAGS = frozenset(
    {
        254,
        256,
        257,
        258,
        259,
        262,
        273,
        277,
        278,
        279,
        282,
        283,
        284,
        296,
        317,
        322,
        323,
        324,
        325,
        330,  # SubIFDs of a kept page: its pyramid levels (OME-TIFF, vips)
        338,
        339,
        347,
        530,
        531,
        532,
    }
)
DESCRIPTION = 270
# Make (271) names the scanner's maker, which Annex E keeps too (Manufacturer, K): scanner
# differences are pathology's known domain shift, so it feeds the manufacturer subgroup. A
# plain name could also be a person's, so only known scanner makers are kept, written as
# spelled here (nothing of the file's own text passes); anything else is removed.
MAKE = 271
SCANNER_MAKERS = {
    name.lower(): name
    for name in (
        "Aperio",
        "Leica",
        "Hamamatsu",
        "3DHISTECH",
        "Philips",
        "Roche",
        "Ventana",
        "Zeiss",
        "Olympus",
        "Evident",
        "Huron",
        "Motic",
        "KFBIO",
        "Sakura",
        "Grundium",
        "Akoya",
        "Nikon",
        "OptraSCAN",
        "Mikroscan",
    )
}
PRIVATE_FIRST = 32768
# Compressions whose tiles are copied: none, LZW, deflate (carry no metadata) and JPEG,
# JPEG 2000 (Aperio YCbCr and RGB, and the registered code), whose headers are scrubbed.
JPEG, JPEG2000 = frozenset({7}), frozenset({33003, 33005, 34712})
COPIED_COMPRESSIONS = frozenset({1, 5, 8, 32946}) | JPEG | JPEG2000
PHOTOMETRICS = {0: "miniswhite", 1: "minisblack", 2: "rgb", 6: "ycbcr"}
# A tile larger than this is refused: memory stays bounded by it (a 1024 x 1024 RGB tile,
# uncompressed, is 3 MiB).
MAX_SEGMENT_BYTES = 64 << 20
# Kept Aperio fields: what a reader needs to place the pyramid in micrometres.
APERIO_KEPT = ("AppMag", "MPP")
_NUMBER = re.compile(r"^\d{1,6}(\.\d{1,12})?$")
_LABEL_WORDS = re.compile(r"\b(label|barcode)\b", re.IGNORECASE)
_MACRO_WORDS = re.compile(r"\b(macro|overview)\b", re.IGNORECASE)
# Aperio's reduced pages: "<base W>x<base H> [...] (tile) -> <W>x<H> ..." (levels and thumbnail).
_APERIO_REDUCED = re.compile(r"->\s*(\d{1,7})x(\d{1,7})\b")
FILETYPE_REDUCED, FILETYPE_PAGE, FILETYPE_MASK, FILETYPE_MACRO = 1, 2, 4, 8


class SlideError(ValueError):
    """The file cannot be read or copied faithfully as a tiled slide; nothing of it is kept."""


def is_tiff(head: bytes) -> bool:
    """TIFF by its header, and not DICOM: PS3.10 lets a DICOM file's preamble be a TIFF header
    (dual-format files), the DICM marker at 128 decides."""
    return head[:4] in TIFF_MAGICS and head[128:132] != b"DICM"


def is_tiff_file(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as fh:
            return is_tiff(fh.read(132))
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class PagePlan:
    index: int
    kind: str  # level, thumbnail (kept); label, macro, other (removed)
    description: str | None = None  # the rebuilt description of a kept page


@dataclass(slots=True)
class SlideFindings:
    """What a slide carries that de-identification removes: (keyword, tag) -> occurrences."""

    found: Counter[tuple[str, str]] = field(default_factory=Counter)
    kept_pages: int = 0
    manufacturer: str = "unknown"


KEPT_KINDS = ("level", "thumbnail")
REMOVED_KEYWORDS = {"label": "LabelImage", "macro": "MacroImage", "other": "NonPyramidImage"}


def _page_kind(index: int, page: Any, base: Any, svs: bool) -> str:
    """Which part of the slide a page is, by itself; only a page that tells it is a level or the
    thumbnail and is shaped like one is kept (:class:`_Pyramid` then checks it against the
    levels kept before it)."""
    if index == 0:
        return "level"
    description = page.description or ""
    lines = description.splitlines()
    svs_kind = lines[1].split(" ", 1)[0].lower() if svs and len(lines) > 1 else ""
    if svs_kind == "label" or _LABEL_WORDS.search(description):
        return "label"
    if svs_kind == "macro" or page.subfiletype & FILETYPE_MACRO or _MACRO_WORDS.search(description):
        return "macro"
    if page.subfiletype & (FILETYPE_PAGE | FILETYPE_MASK):
        return "other"
    if page.samplesperpixel != base.samplesperpixel or page.dtype != base.dtype:
        return "other"
    if not _tells_reduced(page, svs):
        return "other"
    if not page.is_tiled:
        shaped = _pyramid_shaped(page.imagewidth, page.imagelength, base.imagewidth, base.imagelength)
        return "thumbnail" if shaped else "other"
    if (page.tilewidth, page.tilelength) != (base.tilewidth, base.tilelength):
        return "other"  # a level of a pyramid is tiled like its baseline
    return "level" if _level_factor(page.imagewidth, page.imagelength, base.imagewidth, base.imagelength) else "other"


def _pyramid_shaped(width: int, length: int, base_width: int, base_length: int) -> bool:
    """Whether a page is the baseline scaled by one factor (>= 1) in both directions,
    allowing the rounding of each level's size (a pixel, or 1%): a thumbnail's factor need
    not be a whole number."""
    if width < 1 or length < 1 or width > base_width or length > base_length:
        return False
    factor = base_width / width
    expected = base_length / factor
    return abs(expected - length) <= max(1.5, 0.01 * length)


def _tells_reduced(page: Any, svs: bool) -> bool:
    """Whether a page says it is a reduced image of the slide: an Aperio page by the
    ``-> WxH`` of its description (its own size), any other by NewSubfileType bit 0
    (reduced-resolution). A label written as a plain page says neither: not kept."""
    if svs:
        lines = (page.description or "").splitlines()
        found = _APERIO_REDUCED.search(lines[1]) if len(lines) > 1 else None
        return found is not None and (int(found[1]), int(found[2])) == (page.imagewidth, page.imagelength)
    return bool(page.subfiletype & FILETYPE_REDUCED)


def _level_factor(width: int, length: int, base_width: int, base_length: int) -> int | None:
    """The whole-number factor (>= 2) a level is the baseline divided by, within the pixel of
    rounding each level's size takes; None when there is none (not a level of this pyramid)."""
    if width < 1 or length < 1:
        return None
    factor = round(base_width / width)
    if factor < 2:
        return None
    fits = abs(base_width / factor - width) <= 1 and abs(base_length / factor - length) <= 1
    return factor if fits else None


class _Pyramid:
    """The levels kept so far: a level must be smaller than every level before it (scanners and
    pyramid writers store them largest first), so a second page at an already kept size, or
    one out of order, is not a level of this pyramid; and one thumbnail at most."""

    def __init__(self, base: Any) -> None:
        self.base, self.factor, self.thumbnails = base, 1, 0

    def admit(self, kind: str, page: Any) -> str:
        if kind == "thumbnail":
            self.thumbnails += 1
            return kind if self.thumbnails == 1 else "other"
        if kind != "level":
            return kind
        base = self.base
        factor = _level_factor(page.imagewidth, page.imagelength, base.imagewidth, base.imagelength)
        if factor is None or factor <= self.factor:
            return "other"
        self.factor = factor
        return kind


def aperio_description(description: str, page: Any, base: Any, first: bool) -> tuple[str, int]:
    """The rebuilt Aperio description of a kept page and how many fields were dropped.

    Kept: the ``Aperio Image Library`` marker (readers detect the format by it), the page's
    dimensions (computed here, not copied) and ``AppMag``/``MPP`` when plain numbers."""
    items = description.split("|")
    kept: list[str] = []
    for item in items[1:]:
        key, sep, value = item.partition("=")
        if sep and key.strip() in APERIO_KEPT and _NUMBER.match(value.strip()):
            kept.append(f"{key.strip()} = {value.strip()}")
    if first:
        header = f"Aperio Image Library\r\n{page.imagewidth}x{page.imagelength} ({page.tilewidth}x{page.tilelength})"
    else:
        header = f"Aperio Image Library\r\n{base.imagewidth}x{base.imagelength} -> {page.imagewidth}x{page.imagelength}"
    rebuilt = "|".join([header, *kept])
    if rebuilt == description:
        return rebuilt, 0
    # Any difference is a finding (the gate asks "would the rewrite change it?"), at least one.
    return rebuilt, max(1, len(items) - 1 - len(kept) + (items[0].strip() != header.strip()))


def _rebuilt_description(page: Any, base: Any, svs: bool, first: bool) -> tuple[str | None, int]:
    description = page.description or ""
    if not svs:
        return None, len(description.split("|")) if description else 0
    return aperio_description(description, page, base, first)


def _refusal(page: Any, nested: bool = False) -> str | None:
    """Why a kept page (``nested``: a SubIFD of one) cannot be copied faithfully, or None."""
    where = f"page {page.index}"
    if page.compression not in COPIED_COMPRESSIONS:
        return (
            f"{where}: compression {page.compression} is not one this tool copies (none, LZW, deflate, JPEG, JPEG 2000)"
        )
    if page.photometric not in PHOTOMETRICS or (page.photometric == 6 and page.compression not in JPEG):
        return f"{where}: photometric interpretation {page.photometric} is not supported"
    if page.imagedepth != 1 or page.tiledepth != 1:
        return f"{where}: volumetric tiles are not supported"
    if page.samplesperpixel > 1 and page.planarconfig != 1:
        return f"{where}: separate colour planes are not supported"
    if page.dtype is None or page.bitspersample != page.dtype.itemsize * 8:
        return f"{where}: {page.bitspersample} bits per sample are not supported"
    if nested and 330 in page.tags:
        return f"{where}: SubIFDs of a SubIFD (tag 330) are not supported"
    if page.is_tiled:
        across = math.ceil(page.imagewidth / page.tilewidth) * math.ceil(page.imagelength / page.tilelength)
    else:
        across = math.ceil(page.imagelength / min(page.rowsperstrip, page.imagelength))
    if len(page.dataoffsets) != across or len(page.databytecounts) != across:
        return f"{where}: {len(page.dataoffsets)} data segments where its size needs {across}"
    if any(n > MAX_SEGMENT_BYTES for n in page.databytecounts):
        return f"{where}: a data segment is larger than {MAX_SEGMENT_BYTES >> 20} MiB"
    return None


def _open(path: str | os.PathLike[str]) -> Any:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises many kinds on hostile input; all mean "cannot parse"
        raise SlideError(f"not a readable TIFF: {type(exc).__name__}: {exc}") from None
    return tif


def _pages(tif: Any) -> list[Any]:
    tif.pages.useframes = False
    tif.pages.cache = True
    try:
        pages = list(tif.pages)
    except Exception as exc:
        raise SlideError(f"a page cannot be parsed: {type(exc).__name__}: {exc}") from None
    if not pages:
        raise SlideError("the TIFF has no pages")
    if not pages[0].is_tiled:
        raise SlideError("the first page is not tiled: not a tiled whole-slide image")
    return pages


def plan_slide(pages: list[Any]) -> list[PagePlan]:
    """What becomes of each page: kept (with its rebuilt description) or removed."""
    base = pages[0]
    svs = (base.description or "").startswith("Aperio ")
    plans: list[PagePlan] = []
    pyramid = _Pyramid(base)
    for index, page in enumerate(pages):
        kind = _page_kind(index, page, base, svs)
        kind = pyramid.admit(kind, page) if index else kind
        description = _rebuilt_description(page, base, svs, index == 0)[0] if kind in KEPT_KINDS else None
        plans.append(PagePlan(index, kind, description))
    return plans


def _scrubber(page: Any) -> Any:
    if page.compression in JPEG:
        return scrub_jpeg
    if page.compression in JPEG2000:
        return scrub_j2k
    return None


def _segments(fd: int, page: Any, file_size: int) -> Iterator[tuple[int, bytes]]:
    for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
        if count == 0:
            yield 0, b""
            continue
        if offset + count > file_size:
            raise SlideError(f"page {page.index}: a data segment runs past the end of the file")
        data = os.pread(fd, count, offset)
        if len(data) != count:
            raise SlideError(f"page {page.index}: a data segment could not be read whole")
        yield count, data


@dataclass(slots=True)
class _Copy:
    """Per-page bookkeeping while its tiles stream through."""

    lengths: list[int] = field(default_factory=list)
    removed: int = 0


def _copied(fd: int, page: Any, file_size: int, copy: _Copy) -> Iterator[bytes]:
    scrub = _scrubber(page)
    for count, data in _segments(fd, page, file_size):
        if scrub is not None and count:
            try:
                result: Scrubbed = scrub(data)
            except CodestreamError as exc:
                raise SlideError(f"page {page.index}: {exc}") from None
            copy.removed += result.removed
            data = result.data
        copy.lengths.append(len(data))
        yield data


def _write_args(page: Any, description: str | None) -> dict[str, Any]:
    args: dict[str, Any] = {
        "shape": page.shape,
        "dtype": page.dtype,
        "photometric": PHOTOMETRICS[page.photometric],
        "compression": page.compression if page.compression != 1 else None,
        "subfiletype": page.subfiletype & FILETYPE_REDUCED,
        "description": description,
        "metadata": None,
        "software": False,
        "datetime": False,
    }
    if page.samplesperpixel > 1:
        args["planarconfig"] = "contig"
    if page.extrasamples:
        args["extrasamples"] = page.extrasamples
    if page.predictor > 1:
        args["predictor"] = page.predictor
    if page.is_tiled:
        args["tile"] = (page.tilelength, page.tilewidth)
    else:
        args["rowsperstrip"] = min(page.rowsperstrip, page.imagelength)
    if (make := scanner_make(page)) is not None:
        args["extratags"] = [(MAKE, "s", 0, make, True)]
    if page.photometric == 6:
        args["subsampling"] = page.subsampling or (2, 2)
    elif page.photometric == 2 and page.compression in JPEG:
        # Aperio's RGB JPEG tiles (no colour transform): TiffWriter turns a JPEG RGB page into
        # YCbCr unless told the stored colour space is RGB, which would mislabel copied tiles.
        args["subsampling"] = (1, 1)
        args["compressionargs"] = {"outcolorspace": "rgb"}
    if page.jpegtables:
        try:
            args["jpegtables"] = scrub_jpeg(page.jpegtables).data
        except CodestreamError as exc:
            raise SlideError(f"page {page.index}: JPEGTables: {exc}") from None
    xres, yres = page.tags.get(282), page.tags.get(283)
    if xres is not None and yres is not None:
        args["resolution"] = (xres.value, yres.value)
        args["resolutionunit"] = page.resolutionunit
    return args


@dataclass(slots=True)
class SlideResult:
    """What de-identifying one slide did (counts and kinds only)."""

    kept_pages: int
    removed_pages: Counter[str]
    description_fields: int
    tags_removed: int
    tile_segments_removed: int


@dataclass(slots=True)
class _Unit:
    """A kept top-level page and the SubIFDs (OME-TIFF and vips pyramids keep their levels
    there) kept with it."""

    page: Any
    plan: PagePlan
    subs: list[Any]
    subs_removed: int

    def flat(self) -> list[Any]:
        return [self.page, *self.subs]


def _sub_pages(page: Any) -> list[Any]:
    if not page.subifds:
        return []
    try:
        return list(page.pages)
    except Exception as exc:  # tifffile on a hostile SubIFD
        raise SlideError(f"page {page.index}: a SubIFD cannot be parsed: {type(exc).__name__}") from None


def _units(pages: list[Any], plans: list[PagePlan]) -> list[_Unit]:
    """Kept pages with their kept SubIFDs: tiled levels shaped like the baseline's pyramid."""
    base = pages[0]
    svs = (base.description or "").startswith("Aperio ")
    units = []
    for plan in plans:
        if plan.kind not in KEPT_KINDS:
            continue
        page = pages[plan.index]
        subs = _sub_pages(page)
        levels = _Pyramid(page)  # a page's SubIFDs are its own reduced levels, smallest last
        kept = [sub for sub in subs if sub.is_tiled and levels.admit(_page_kind(1, sub, page, svs), sub) == "level"]
        units.append(_Unit(page, plan, kept, len(subs) - len(kept)))
    return units


def pyramid_levels(pages: list[Any]) -> list[Any]:
    """The kept tiled pages in file order, SubIFDs after their page: the pyramid's levels."""
    units = _units(pages, plan_slide(pages))
    return [page for unit in units for page in unit.flat() if page.is_tiled]


def _refuse_uncopyable(units: list[_Unit]) -> None:
    for unit in units:
        for page in unit.flat():
            if (reason := _refusal(page, nested=page is not unit.page)) is not None:
                raise SlideError(reason)


def deidentify_slide(src: str | os.PathLike[str], target: str | os.PathLike[str]) -> SlideResult:
    """Write the de-identified slide to ``target`` (via a hidden temporary name beside it).

    Raises SlideError, before anything is renamed into place, when the slide cannot be
    parsed or copied faithfully."""
    import tifffile

    target = os.fspath(target)
    folder, name = os.path.split(target)
    os.makedirs(folder or ".", exist_ok=True)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    with _open(src) as tif:
        pages = _pages(tif)
        plans = plan_slide(pages)
        units = _units(pages, plans)
        _refuse_uncopyable(units)
        flat = [page for unit in units for page in unit.flat()]
        findings = slide_findings(pages, plans, tiles=None)
        fd = os.open(os.fspath(src), os.O_RDONLY | os.O_CLOEXEC)
        copies: list[_Copy] = []
        try:
            size = os.fstat(fd).st_size
            data_bytes = sum(sum(page.databytecounts) for page in flat)
            with tifffile.TiffWriter(tmp, bigtiff=tif.is_bigtiff or data_bytes > (3 << 30)) as writer:
                for unit in units:
                    for page in unit.flat():
                        copy = _Copy()
                        copies.append(copy)
                        args = _write_args(page, unit.plan.description if page is unit.page else None)
                        if page is unit.page and unit.subs:
                            args["subifds"] = len(unit.subs)  # the next writes become its SubIFDs
                        writer.write(_copied(fd, page, size, copy), **args)
            _check_written(tmp, flat, copies)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            os.close(fd)
    removed = Counter(p.kind for p in plans if p.kind not in KEPT_KINDS)
    if sum(unit.subs_removed for unit in units):
        removed["other"] += sum(unit.subs_removed for unit in units)
    found = findings.found
    return SlideResult(
        kept_pages=len(flat),
        removed_pages=removed,
        description_fields=sum(n for (k, _), n in found.items() if k == "ImageDescription"),
        tags_removed=sum(n for (k, t), n in found.items() if t[5:].isdigit() and k != "ImageDescription"),
        tile_segments_removed=sum(c.removed for c in copies),
    )


def _check_written(path: str, sources: list[Any], copies: list[_Copy]) -> None:
    """The written file holds the kept pages with the same geometry and the same segments."""
    with _open(path) as out:
        pages = [page for top in _pages(out) for page in (top, *_sub_pages(top))]
        if len(pages) != len(sources):
            raise SlideError(f"the rewritten slide has {len(pages)} pages, {len(sources)} were written")
        for page, source, copy in zip(pages, sources, copies, strict=True):
            same = (
                page.shape == source.shape
                and page.dtype == source.dtype
                and page.compression == source.compression
                and page.photometric == source.photometric
                and (page.tilewidth, page.tilelength) == (source.tilewidth, source.tilelength)
                and list(page.databytecounts) == copy.lengths
            )
            if not same:
                raise SlideError(f"page {source.index} did not come out of the rewrite with its geometry and tiles")


def _tag_keyword(code: int) -> str:
    if code >= PRIVATE_FIRST:
        return "PrivateTag"
    import tifffile

    name = tifffile.TIFF.TAGS.get(code, "")
    return name if name.isidentifier() else f"Tag{code}"


def slide_findings(pages: list[Any], plans: list[PagePlan], tiles: int | None) -> SlideFindings:
    """Removed pages, identifying tags and description fields of a parsed slide; with
    ``tiles`` (an open descriptor of the file) also metadata segments inside the tiles."""
    result = SlideFindings(manufacturer=slide_manufacturer(pages))
    base = pages[0]
    svs = (base.description or "").startswith("Aperio ")
    for plan in plans:
        if plan.kind not in KEPT_KINDS:
            result.found[(REMOVED_KEYWORDS[plan.kind], "TIFF page")] += 1
    for unit in _units(pages, plans):
        if unit.subs_removed:
            result.found[(REMOVED_KEYWORDS["other"], "TIFF page")] += unit.subs_removed
        for page in unit.flat():
            _page_findings(page, page is unit.page and unit.plan.index == 0, base, svs, result)
            if tiles is not None:
                _tile_findings(tiles, page, result.found)
    return result


def _page_findings(page: Any, first: bool, base: Any, svs: bool, result: SlideFindings) -> None:
    """Tags outside the structure and description fields of one kept page (or SubIFD)."""
    result.kept_pages += 1
    for tag in page.tags:
        if tag.code == MAKE and scanner_make(page) == tag.value:
            continue  # already the canonical name; anything else is rewritten or removed
        if tag.code not in STRUCTURE_TAGS and tag.code != DESCRIPTION:
            result.found[(_tag_keyword(tag.code), f"TIFF {tag.code}")] += 1
    descriptions = [t for t in page.tags if t.code == DESCRIPTION]
    dropped = _rebuilt_description(page, base, svs, first)[1]
    if len(descriptions) > 1:
        dropped += len(descriptions) - 1
    if dropped:
        result.found[("ImageDescription", f"TIFF {DESCRIPTION}")] += dropped


def _tile_findings(fd: int, page: Any, found: Counter[tuple[str, str]]) -> None:
    scrub = _scrubber(page)
    if scrub is None:
        return
    if page.jpegtables and scrub_jpeg(page.jpegtables).removed:
        found[("JPEGTablesMetadata", "TIFF 347")] += 1
    size = os.fstat(fd).st_size
    for count, data in _segments(fd, page, size):
        if count and scrub(data).removed:
            found[("TileMetadata", "JPEG COM/APPn")] += 1


def _referenced(fd: int, tif: Any, pages: list[Any]) -> list[tuple[int, int]]:
    """Byte ranges the file's structure points at: header, every IFD, out-of-line tag values,
    every page's data segments (removed pages and SubIFDs included)."""
    fmt = tif.tiff
    ranges = [(0, 16 if fmt.is_bigtiff else 8)]
    count = struct.Struct(fmt.tagnoformat)  # byte order included
    for page in [q for top in pages for q in (top, *_sub_pages(top))]:
        (entries,) = count.unpack(os.pread(fd, fmt.tagnosize, page.offset).ljust(fmt.tagnosize, b"\0"))
        ranges.append((page.offset, page.offset + fmt.tagnosize + entries * fmt.tagsize + fmt.offsetsize))
        for tag in page.tags:
            if tag.valuebytecount > fmt.offsetsize:
                ranges.append((tag.valueoffset, tag.valueoffset + tag.valuebytecount))
        ranges += [(o, o + n) for o, n in zip(page.dataoffsets, page.databytecounts, strict=True) if n]
    return sorted(ranges)


def unreferenced_data(fd: int, tif: Any, pages: list[Any]) -> int:
    """Runs of non-zero bytes that nothing in the file points at. In-place "anonymisers" that
    unlink a label's IFD leave its pixels there; readers do not see them, a reader of the
    bytes does. (Zero padding between parts is what writers leave, and carries nothing.)"""
    size, end, found = os.fstat(fd).st_size, 0, 0
    gaps = []
    for start, stop in _referenced(fd, tif, pages):
        if start > end:
            gaps.append((end, min(start, size)))
        end = max(end, stop)
    if end < size:
        gaps.append((end, size))
    for start, stop in gaps:
        pos = start
        while pos < stop:
            chunk = os.pread(fd, min(stop - pos, 1 << 20), pos)
            if not chunk:
                break
            if chunk.count(0) != len(chunk):
                found += 1
                break
            pos += len(chunk)
    return found


def check_slide(path: str | os.PathLike[str]) -> SlideFindings:
    """The gate's view of one slide file; raises SlideError when it cannot be parsed."""
    with _open(path) as tif:
        pages = _pages(tif)
        plans = plan_slide(pages)
        _refuse_uncopyable(_units(pages, plans))
        fd = os.open(os.fspath(path), os.O_RDONLY | os.O_CLOEXEC)
        try:
            findings = slide_findings(pages, plans, tiles=fd)
            if unreferenced := unreferenced_data(fd, tif, pages):
                findings.found[("UnreferencedData", "TIFF bytes")] += unreferenced
            return findings
        except CodestreamError as exc:
            raise SlideError(str(exc)) from None
        finally:
            os.close(fd)


def output_name(source: str, path_token: Any) -> str:
    """``<case token>/<slide token><suffix>``: keyed hashes of the source's folder and of the
    file (slide names often carry accession numbers), the suffix kept when it is a slide's.

    Both hash the absolute path: slides carry no UID to name them by, and two folders of one
    name elsewhere (``a/case1``, ``b/case1``) must neither merge into one case nor overwrite
    each other's files. The same tree read from another mount gets other names."""
    path = os.path.abspath(source)
    folder = os.path.dirname(path)
    suffix = os.path.splitext(path)[1].lower()
    slide = path_token("slide", path) + (suffix if suffix in SLIDE_SUFFIXES else ".tif")
    return os.path.join(path_token("slide-case", folder), slide)




def deidentify_slide_into(
    source: str, dst_root: str, path_token: Any
) -> tuple[str, str | None, str | None, dict[str, int]]:
    """(status, output, reason, removed parts) for the batch: "written" or "error", never raises
    for a bad slide."""
    target = os.path.join(dst_root, output_name(source, path_token))
    try:
        result = deidentify_slide(source, target)
    except SlideError as exc:
        return "error", None, f"slide refused: {exc}", {}
    except OSError as exc:
        return "error", None, f"slide refused: {type(exc).__name__}: {exc.strerror}", {}
    removed = {f"slide {kind} page": n for kind, n in sorted(result.removed_pages.items())}
    return "written", target, None, removed


def gate_check(path: str | os.PathLike[str]) -> tuple[Counter[tuple[str, str]], str | None, str]:
    """(findings, error, manufacturer) of one slide for the verification gate."""
    try:
        findings = check_slide(path)
        return findings.found, None, findings.manufacturer
    except SlideError as exc:
        return Counter(), f"slide unreadable: {exc}", "unknown"
    except OSError as exc:
        return Counter(), f"unreadable: {exc.strerror}", "unknown"


def scanner_make(page: Any) -> str | None:
    """The known scanner maker the page's Make tag names by its first word (see MAKE), else None."""
    tag = page.tags.get(MAKE)
    value = tag.value if tag is not None else None
    words = value.split() if isinstance(value, str) else []
    return SCANNER_MAKERS.get(words[0].strip(",.").lower()) if words else None


def slide_manufacturer(pages: list[Any]) -> str:
    """The scanner's maker: a plain Make tag, else Aperio for an Aperio file, else unknown."""
    make = scanner_make(pages[0])
    if make:
        return make
    return "Aperio" if (pages[0].description or "").startswith("Aperio ") else "unknown"
