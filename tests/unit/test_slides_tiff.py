"""Whole-slide TIFF de-identification: label/macro pages, descriptions, tags and tile headers go;
the pyramid stays readable at every level with its tiles byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import slide_builders as sb
import tifffile

from lightbox.sandbox.deid import deidentify_tree, verify_tree
from lightbox.sandbox.deid.slide_tiff import SlideError, deidentify_slide

KEY = b"a-secret-key-for-the-slide-tests"


def _only_file(root: Path) -> Path:
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) == 1, files
    return files[0]


@pytest.fixture()
def svs(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    src = tmp_path / "in" / "S12-34567 Jane Doe"
    src.mkdir(parents=True)
    pyramid = sb.write_svs(src / f"{sb.FILENAME}.svs")
    return src / f"{sb.FILENAME}.svs", pyramid


def test_svs_comes_out_without_label_macro_description_fields_and_tags(svs, tmp_path: Path) -> None:
    path, pyramid = svs
    summary = deidentify_tree(path.parent, tmp_path / "out", key=KEY, jobs=1)
    assert (summary.written, summary.errors) == (1, 0)
    assert summary.removed == {"slide label page": 1, "slide macro page": 1}
    out = _only_file(tmp_path / "out")
    data = out.read_bytes()
    for planted in (*sb.PLANTED, "12/29/09", "09:59:15", "2009:12:29", sb.FILENAME):
        assert planted.encode() not in data, planted
    # The folder and file names (an accession number, a name) are keyed hashes.
    assert "Jane" not in str(out) and "S12" not in str(out) and out.suffix == ".svs"
    with tifffile.TiffFile(out) as tif:
        shapes = [p.shape for p in tif.pages]
        # baseline, thumbnail, two more levels (the label 300x400 and macro 200x600 pages are gone)
        assert shapes == [(768, 1024, 3), (96, 128, 3), (384, 512, 3), (192, 256, 3)]
        for page in tif.pages:
            codes = {t.code for t in page.tags}
            assert not codes & {305, 306, 315, 316, 65000}, codes
            assert all(code < 32768 for code in codes)
        meta = tifffile.tifffile.svs_description_metadata(tif.pages[0].description)
        assert meta == {"Header": "Aperio Image Library\r\n1024x768 (256x256)", "AppMag": 20, "MPP": 0.499}
        # tifffile still reads it as an SVS pyramid: every level's shape
        levels = tif.series[0].levels
        assert [lv.shape[-3:] for lv in levels] == [lv.shape for lv in pyramid]


def test_every_level_is_tile_identical_and_decodes_the_same(svs, tmp_path: Path) -> None:
    path, _ = svs
    out = tmp_path / "out.svs"
    result = deidentify_slide(path, out)
    assert result.kept_pages == 4
    for src_page, out_page in ((0, 0), (1, 1), (2, 2), (3, 3)):
        assert sb.raw_segments(out, out_page) == sb.raw_segments(path, src_page)
    with tifffile.TiffFile(path) as a, tifffile.TiffFile(out) as b:
        for i in range(4):
            assert np.array_equal(a.pages[i].asarray(), b.pages[i].asarray())


def test_generic_pyramidal_tiff(tmp_path: Path) -> None:
    src = tmp_path / "generic.tif"
    pyramid = sb.write_generic(src)
    out = tmp_path / "clean.tif"
    result = deidentify_slide(src, out)
    assert result.removed_pages == {"label": 1}
    data = out.read_bytes()
    assert sb.PATIENT_ID.encode() not in data and sb.FILENAME.encode() not in data
    with tifffile.TiffFile(out) as tif:
        assert len(tif.pages) == 3
        for page, level in zip(tif.pages, pyramid, strict=True):
            assert page.description == "" and 65000 not in page.tags
            assert np.array_equal(page.asarray(), level)  # deflate is lossless: the pixels as planted
    for i in range(3):
        assert sb.raw_segments(out, i) == sb.raw_segments(src, i)


def test_label_pixels_are_not_in_the_output(tmp_path: Path) -> None:
    """The label is stored uncompressed, so its pixel rows are findable byte strings."""
    src = tmp_path / "generic.tif"
    sb.write_generic(src)
    label_row = sb.label_pixels()[120:135].tobytes()  # rows through the drawn name
    assert label_row in src.read_bytes()
    deidentify_slide(src, tmp_path / "clean.tif")
    assert label_row not in (tmp_path / "clean.tif").read_bytes()


def test_gate_refuses_the_raw_slide_naming_what_it_found_and_passes_the_output(svs, tmp_path: Path) -> None:
    path, _ = svs
    report = verify_tree(path.parent, jobs=1)
    assert not report.ok
    found = {v.keyword: (v.tag, v.occurrences) for v in report.violations}
    assert found["LabelImage"] == ("TIFF page", 1)
    assert found["MacroImage"] == ("TIFF page", 1)
    assert found["PrivateTag"] == ("TIFF 65000", 1)
    assert found["DateTime"][0] == "TIFF 306" and found["Artist"][0] == "TIFF 315"
    assert found["HostComputer"][0] == "TIFF 316" and found["Software"][0] == "TIFF 305"
    # baseline: 8 fields dropped (StripeWidth, ScanScope ID, Filename, Date, Time, User, Barcode,
    # Left) + its header line; thumbnail: User + header; levels: Filename + header each
    assert found["ImageDescription"] == ("TIFF 270", 9 + 2 + 2 + 2)
    text = report.model_dump_json()
    for planted in sb.PLANTED:
        assert planted not in text
    deidentify_tree(path.parent, tmp_path / "out", key=KEY, jobs=1)
    clean = verify_tree(tmp_path / "out", jobs=1)
    assert clean.ok, clean.violations
    assert clean.files == 1 and clean.cohort["modality"] == {"SM": 1}


def test_content_hash_covers_slide_files(svs, tmp_path: Path) -> None:
    path, _ = svs
    deidentify_tree(path.parent, tmp_path / "out", key=KEY, jobs=1)
    before = verify_tree(tmp_path / "out", jobs=1).content_hash
    out = _only_file(tmp_path / "out")
    data = bytearray(out.read_bytes())
    data[-1] ^= 1  # one bit of the last tile
    out.write_bytes(bytes(data))
    assert verify_tree(tmp_path / "out", jobs=1).content_hash != before


def _jpeg_tiles(image: np.ndarray) -> list[bytes]:
    return [
        imagecodecs.jpeg8_encode(image[r : r + 256, c : c + 256], level=90)
        for r in range(0, image.shape[0], 256)
        for c in range(0, image.shape[1], 256)
    ]


def test_jpeg_comment_and_app_segments_in_tiles_are_removed_without_decoding(tmp_path: Path) -> None:
    image = sb.tissue(512, 512, seed=5)
    clean_tiles = _jpeg_tiles(image)
    comment = (
        b"\xff\xfe"
        + (len(b"patient " + sb.PATIENT_ID.encode()) + 2).to_bytes(2, "big")
        + b"patient "
        + sb.PATIENT_ID.encode()
    )
    app5 = b"\xff\xe5\x00\x08" + sb.USER.encode()[:6]
    planted = [t[:2] + comment + app5 + t[2:] + b"trailing " + sb.FILENAME.encode() for t in clean_tiles]
    src = tmp_path / "planted.tif"
    with tifffile.TiffWriter(src) as tif:
        tif.write(
            iter(planted),
            shape=image.shape,
            dtype=image.dtype,
            tile=(256, 256),
            compression="jpeg",
            photometric="ycbcr",
            subsampling=(2, 2),
            metadata=None,
            software=False,
        )
    report = verify_tree(src, jobs=1)
    assert {v.keyword: v.occurrences for v in report.violations} == {"TileMetadata": 4}
    result = deidentify_slide(src, tmp_path / "out.tif")
    assert result.tile_segments_removed == 4 * 3  # COM, APP5 and the trailing bytes of each tile
    assert sb.raw_segments(tmp_path / "out.tif", 0) == clean_tiles  # exactly the encoder's tiles
    assert verify_tree(tmp_path / "out.tif", jobs=1).ok


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"II*\0" + b"\xff" * 64, "not a readable TIFF"),
        (b"MM\0*\0\0\0\x08\0\0", "no pages"),
    ],
)
def test_unparseable_tiff_is_refused_with_a_reason_and_nothing_written(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "bad.svs").write_bytes(content)
    summary = deidentify_tree(src, tmp_path / "out", key=KEY, jobs=1)
    assert summary.errors == 1 and summary.written == 0
    assert "slide refused" in summary.refused[0][1]
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert verify_tree(src, jobs=1).errors == 1


def test_truncated_slide_is_refused_and_leaves_no_file(svs, tmp_path: Path) -> None:
    path, _ = svs
    data = path.read_bytes()
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "s.svs").write_bytes(data[: len(data) // 2])
    summary = deidentify_tree(cut, tmp_path / "out", key=KEY, jobs=1)
    assert summary.errors == 1 and summary.written == 0, summary
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_first_page_not_tiled_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "flat.tif"
    tifffile.imwrite(src, sb.tissue(64, 64), photometric="rgb")
    with pytest.raises(SlideError, match="first page is not tiled"):
        deidentify_slide(src, tmp_path / "o.tif")
    assert not (tmp_path / "o.tif").exists()


def test_unsupported_compression_is_refused_naming_it(tmp_path: Path) -> None:
    src = tmp_path / "lzma.tif"
    tifffile.imwrite(src, sb.tissue(256, 256), tile=(256, 256), compression="lzma", photometric="rgb")
    with pytest.raises(SlideError, match="compression 34925"):
        deidentify_slide(src, tmp_path / "o.tif")


def test_a_page_not_shaped_like_the_pyramid_is_removed(tmp_path: Path) -> None:
    """A tiled page that is not the baseline scaled by one factor (say a label disguised as a
    level, without any label word) is not kept."""
    src = tmp_path / "odd.tif"
    with tifffile.TiffWriter(src) as tif:
        tif.write(sb.tissue(768, 1024), tile=(256, 256), photometric="rgb", metadata=None)
        tif.write(sb.label_pixels(size=(512, 512)), tile=(256, 256), photometric="rgb", subfiletype=1, metadata=None)
    result = deidentify_slide(src, tmp_path / "o.tif")
    assert result.removed_pages == {"other": 1} and result.kept_pages == 1


def test_report_json_of_the_gate_never_holds_description_text(svs) -> None:
    path, _ = svs
    payload = json.loads(verify_tree(path, jobs=1).model_dump_json(by_alias=True))
    flat = json.dumps(payload)
    assert "Image Library" not in flat and "v12.0.15" not in flat and "Filename" not in flat and "ScanScope" not in flat
    assert payload["cohort"]["manufacturer"] == {"Aperio": 1}  # the maker, from the format, not the text


def test_dicom_file_with_a_tiff_preamble_stays_dicom() -> None:
    """PS3.10 allows a TIFF header in the preamble (pydicom's CT_small has one): the DICM marker decides."""
    from pydicom.data import get_testdata_file

    from lightbox.sandbox.deid.slide_tiff import is_tiff

    head = Path(get_testdata_file("CT_small.dcm")).read_bytes()[:132]
    assert head[:4] == b"II*\0" and head[128:] == b"DICM"
    assert not is_tiff(head)
    assert is_tiff(head[:4] + bytes(128))


def test_a_slide_far_larger_than_memory_is_rewritten_tile_by_tile(tmp_path: Path) -> None:
    """100,000 px square (30 GB decoded, more than this machine's memory): sparse, so the file
    is small; any whole-level decode or copy would fail. Checked by structure and tiles."""
    side, tile = 100_000, 512
    per_row = -(-side // tile)
    real = {
        0: imagecodecs.jpeg8_encode(sb.tissue(tile, tile, seed=1)),
        per_row * per_row - 1: imagecodecs.jpeg8_encode(sb.tissue(tile, tile, seed=2)),
    }
    src = tmp_path / "huge.tif"
    with tifffile.TiffWriter(src, bigtiff=True) as tif:
        tif.write(
            (real.get(i, b"") for i in range(per_row * per_row)),
            shape=(side, side, 3),
            dtype=np.uint8,
            tile=(tile, tile),
            compression="jpeg",
            photometric="ycbcr",
            subsampling=(2, 2),
            metadata=None,
            software=False,
            description=f"scan of {sb.PATIENT_ID}",
        )
    out = tmp_path / "out.tif"
    deidentify_slide(src, out)
    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        assert page.shape == (side, side, 3) and page.description == ""
        counts = page.databytecounts
        assert len(counts) == per_row * per_row
        assert [i for i, n in enumerate(counts) if n] == sorted(real)
    segments = sb.raw_segments(out, 0)
    assert segments[0] == real[0] and segments[-1] == real[per_row * per_row - 1]


class _Page:
    """The few attributes aperio_description reads."""

    def __init__(self, width: int, length: int, tile: int = 256) -> None:
        self.imagewidth, self.imagelength, self.tilewidth, self.tilelength = width, length, tile, tile


@pytest.mark.parametrize(
    "description, expected, dropped",
    [
        # a number smuggling text is not a number: dropped; so is the version in the header
        (
            "Aperio Image Library v12 JANE DOE\r\nx|MPP = 0.25 JANE|AppMag = 40",
            "Aperio Image Library\r\n1000x800 (256x256)|AppMag = 40",
            2,
        ),
        (
            "Aperio Image Library\r\n1000x800 (256x256)|AppMag = 40|MPP = 0.25",
            "Aperio Image Library\r\n1000x800 (256x256)|AppMag = 40|MPP = 0.25",
            0,
        ),
        # spacing differs from the rebuilt form: still a finding (the gate asks "would it change?")
        (
            "Aperio Image Library\r\n1000x800 (256x256)|AppMag=40",
            "Aperio Image Library\r\n1000x800 (256x256)|AppMag = 40",
            1,
        ),
        (
            "Aperio Image Library\r\n1000x800 (256x256)|Barcode = AB12|Rack = 3|Slide = 7|AppMag = 40",
            "Aperio Image Library\r\n1000x800 (256x256)|AppMag = 40",
            3,
        ),
    ],
)
def test_aperio_description_keeps_only_the_allow_list(description: str, expected: str, dropped: int) -> None:
    from lightbox.sandbox.deid.slide_tiff import aperio_description

    page = _Page(1000, 800)
    assert aperio_description(description, page, page, first=True) == (expected, dropped)


def test_a_tile_larger_than_the_memory_bound_is_refused(svs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightbox.sandbox.deid.slide_tiff as st

    path, _ = svs
    monkeypatch.setattr(st, "MAX_SEGMENT_BYTES", 1024)
    with pytest.raises(SlideError, match="larger than"):
        deidentify_slide(path, tmp_path / "o.svs")
    assert not list(tmp_path.glob("*o.svs*"))


def test_an_ome_tiff_pyramid_in_sub_ifds_keeps_its_levels_and_loses_its_xml(tmp_path: Path) -> None:
    """OME-TIFF (and vips --subifd) keep the levels in SubIFDs: they are copied as SubIFDs; the
    OME-XML (a name in it), a label image and a SubIFD not shaped like the pyramid go."""
    base = sb.tissue(1024, 1024, seed=6)
    src = tmp_path / "slide.ome.tif"
    with tifffile.TiffWriter(src, ome=True) as tif:
        tif.write(
            base, tile=(256, 256), subifds=3, compression="zlib", photometric="rgb", metadata={"Name": "JANE DOE"}
        )
        for level in (base[::2, ::2], base[::4, ::4]):
            tif.write(level, tile=(256, 256), subfiletype=1, compression="zlib", photometric="rgb")
        tif.write(sb.tissue(256, 512, seed=7), tile=(256, 256), subfiletype=1, compression="zlib", photometric="rgb")
        tif.write(sb.label_pixels(), photometric="rgb", metadata={"Name": "label"})
    report = verify_tree(src, jobs=1)
    found = {v.keyword: v.occurrences for v in report.violations}
    assert found["NonPyramidImage"] == 2  # the label image and the odd SubIFD
    assert found["ImageDescription"] >= 1
    out = tmp_path / "out.tif"
    result = deidentify_slide(src, out)
    assert result.kept_pages == 3 and result.removed_pages == {"other": 2}
    assert b"JANE" not in out.read_bytes() and b"OME" not in out.read_bytes()
    with tifffile.TiffFile(out) as tif:
        assert len(tif.pages) == 1 and len(tif.pages[0].pages) == 2
        assert [lv.shape for lv in tif.series[0].levels] == [(1024, 1024, 3), (512, 512, 3), (256, 256, 3)]
        assert np.array_equal(tif.series[0].levels[2].asarray(), base[::4, ::4])
    with tifffile.TiffFile(src) as a, tifffile.TiffFile(out) as b:
        for before, after in zip([a.pages[0], *a.pages[0].pages[:2]], [b.pages[0], *b.pages[0].pages], strict=True):
            assert before.databytecounts == after.databytecounts
            assert np.array_equal(before.asarray(), after.asarray())
    assert verify_tree(out, jobs=1).ok


@pytest.mark.parametrize(
    "make, kept, finding",
    [
        ("Hamamatsu", "Hamamatsu", False),
        ("HAMAMATSU PHOTONICS K.K.", "Hamamatsu", True),  # rewritten to the canonical name
        ("Jane Doe", None, True),  # a plain name that is not a scanner maker
        ("3DHISTECH Ltd.", "3DHISTECH", True),
    ],
)
def test_make_is_kept_only_as_a_known_scanner_maker(tmp_path: Path, make: str, kept: str | None, finding: bool) -> None:
    src = tmp_path / "make.tif"
    with tifffile.TiffWriter(src) as tif:
        tif.write(
            sb.tissue(256, 256),
            tile=(256, 256),
            photometric="rgb",
            metadata=None,
            software=False,
            extratags=[(271, "s", 0, make, True)],
        )
    report = verify_tree(src, jobs=1)
    assert (("Make", "TIFF 271") in {(v.keyword, v.tag) for v in report.violations}) is finding
    deidentify_slide(src, tmp_path / "o.tif")
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        tag = tif.pages[0].tags.get(271)
        assert (tag.value if tag is not None else None) == kept
    clean = verify_tree(tmp_path / "o.tif", jobs=1)
    assert clean.ok and clean.cohort["manufacturer"] == {kept or "unknown": 1}
    assert "Jane" not in (tmp_path / "o.tif").read_bytes().decode("latin-1")


def _abbreviated(jpeg: bytes) -> tuple[bytes, bytes]:
    """(tables-only stream, tile stream without tables), as Aperio stores JPEG tiles."""
    pos, tables, rest = 2, [], []
    while jpeg[pos + 1] != 0xDA:
        end = pos + 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        (tables if jpeg[pos + 1] in (0xDB, 0xC4) else rest).append(jpeg[pos:end])
        pos = end
    return b"\xff\xd8" + b"".join(tables) + b"\xff\xd9", b"\xff\xd8" + b"".join(rest) + jpeg[pos:]


def test_aperio_style_rgb_jpeg_with_shared_tables_is_copied_as_it_is(tmp_path: Path) -> None:
    """RGB-coded JPEG tiles (Adobe APP14, no colour transform) sharing one JPEGTables: the page
    stays RGB, tiles and tables byte-identical, a comment planted in the tables removed."""
    image = sb.tissue(512, 512, seed=9)
    streams = [
        _abbreviated(
            imagecodecs.jpeg8_encode(image[r : r + 256, c : c + 256], level=90, colorspace="rgb", outcolorspace="rgb")
        )
        for r in (0, 256)
        for c in (0, 256)
    ]
    tables, tiles = streams[0][0], [t for _, t in streams]
    comment = b"\xff\xfe\x00\x0cJane Doe 1"
    src = tmp_path / "aperio-rgb.svs"
    with tifffile.TiffWriter(src) as tif:
        tif.write(
            iter(tiles),
            shape=image.shape,
            dtype=np.uint8,
            tile=(256, 256),
            compression="jpeg",
            photometric="rgb",
            subsampling=(1, 1),
            compressionargs={"outcolorspace": "rgb"},
            jpegtables=tables[:2] + comment + tables[2:],
            metadata=None,
            software=False,
            description="Aperio Image Library v12\r\n512x512 (256x256) JPEG/RGB|AppMag = 20",
        )
    with tifffile.TiffFile(src) as tif:
        assert tif.pages[0].photometric == 2  # the source as Aperio writes it
    report = verify_tree(src, jobs=1)
    assert {v.keyword for v in report.violations} >= {"JPEGTablesMetadata"}
    deidentify_slide(src, tmp_path / "out.svs")
    with tifffile.TiffFile(tmp_path / "out.svs") as tif:
        page = tif.pages[0]
        assert page.photometric == 2 and page.jpegtables == tables
        decoded = page.asarray()
    assert sb.raw_segments(tmp_path / "out.svs", 0) == tiles
    with tifffile.TiffFile(src) as tif:
        assert np.array_equal(decoded, tif.pages[0].asarray())
    assert verify_tree(tmp_path / "out.svs", jobs=1).ok


@pytest.mark.parametrize("compression", [33005, 34712])
def test_jpeg2000_tiles_are_copied_with_their_comments_removed(tmp_path: Path, compression: int) -> None:
    """Aperio's JPEG 2000 (33005, RGB) and the registered code (34712): codestreams as OpenJPEG
    writes them, with its COM; the output tiles are the same codestreams without it."""
    image = sb.tissue(512, 512, seed=4)
    streams = [
        imagecodecs.jpeg2k_encode(image[r : r + 256, c : c + 256], level=0, codecformat="J2K")
        for r in (0, 256)
        for c in (0, 256)
    ]
    assert all(b"Created by OpenJPEG" in s for s in streams)
    src = tmp_path / "j2k.svs"
    with tifffile.TiffWriter(src) as tif:
        tif.write(
            iter(streams),
            shape=image.shape,
            dtype=np.uint8,
            tile=(256, 256),
            compression=compression,
            photometric="rgb",
            metadata=None,
            software=False,
        )
    assert {v.keyword: v.occurrences for v in verify_tree(src, jobs=1).violations} == {"TileMetadata": 4}
    result = deidentify_slide(src, tmp_path / "out.svs")
    assert result.tile_segments_removed == 4
    out = sb.raw_segments(tmp_path / "out.svs", 0)
    assert all(b"OpenJPEG" not in t for t in out)
    for before, after in zip(streams, out, strict=True):
        assert np.array_equal(imagecodecs.jpeg2k_decode(after), imagecodecs.jpeg2k_decode(before))
    assert verify_tree(tmp_path / "out.svs", jobs=1).ok


def test_same_folder_and_file_names_elsewhere_neither_merge_nor_overwrite(tmp_path: Path) -> None:
    for site in ("a", "b"):
        (tmp_path / "in" / site / "case1").mkdir(parents=True)
        sb.write_generic(tmp_path / "in" / site / "case1" / "slide.tif")
    summary = deidentify_tree(tmp_path / "in", tmp_path / "out", key=KEY, jobs=1)
    assert summary.written == 2
    outputs = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(outputs) == 2 and len({p.parent for p in outputs}) == 2


def test_a_label_unlinked_but_left_in_the_file_is_found_and_not_copied(tmp_path: Path) -> None:
    """What in-place anonymisers do: the label's IFD is unlinked from the chain, so readers no
    longer see it, but its pixels are still in the file. The gate finds the unreferenced bytes;
    the rewrite copies only what is referenced."""
    import struct

    src = tmp_path / "unlinked.tif"
    sb.write_generic(src)  # 3 levels, then the label page (uncompressed)
    with tifffile.TiffFile(src) as tif:
        last_level = tif.pages[2].offset
    with open(src, "r+b") as fh:
        fh.seek(last_level)
        (entries,) = struct.unpack("<H", fh.read(2))
        fh.seek(last_level + 2 + 12 * entries)
        fh.write(b"\0\0\0\0")  # the chain now ends at the last level
    with tifffile.TiffFile(src) as tif:
        assert len(tif.pages) == 3  # readers no longer see the label
    label_row = sb.label_pixels()[120:135].tobytes()
    assert label_row in src.read_bytes()
    found = {v.keyword: v.occurrences for v in verify_tree(src, jobs=1).violations}
    assert found.get("UnreferencedData", 0) >= 1 and "LabelImage" not in found
    deidentify_slide(src, tmp_path / "out.tif")
    assert label_row not in (tmp_path / "out.tif").read_bytes()
    assert verify_tree(tmp_path / "out.tif", jobs=1).ok
