"""Photo de-identification (issue 13.2): metadata out, pixels unchanged, bad files refused.

Checked independently of the code under test: exifread (another EXIF reader than the Pillow
one the de-identifier uses), Pillow's PNG reader for chunks, a byte search of the output for
every planted value, and decoding both images (Pillow, pillow-heif) to compare pixels.
"""

from __future__ import annotations

import io
import struct
import zlib

import exifread
import numpy as np
import photo_samples as ps
import pytest
from PIL import Image, ImageCms

from lightbox.sandbox.deid.photos import strip_photo
from lightbox.sandbox.deid.photos_parse import PhotoError


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def left_over(data: bytes) -> list[str]:
    return [name for name, value in ps.PLANTED.items() if value in data]


# --- JPEG -----------------------------------------------------------------------------------


def test_jpeg_loses_gps_dates_serials_thumbnail_xmp_iptc_comment_and_keeps_its_pixels() -> None:
    source = ps.planted_jpeg(seed=1)
    assert left_over(source) == list(ps.PLANTED)  # every planted value is there to find
    before = exifread.process_file(io.BytesIO(source), details=True)
    assert {"GPS GPSLatitude", "EXIF DateTimeOriginal", "EXIF BodySerialNumber", "JPEGThumbnail"} <= set(before)

    out = strip_photo(source)

    assert out.kind == "jpeg"
    assert left_over(out.data) == []
    assert ps.thumbnail_jpeg()[2:] not in out.data  # the IFD1 thumbnail's bytes are gone too
    assert exifread.process_file(io.BytesIO(out.data), details=True) == {}  # orientation 1: no EXIF at all
    # Segment surgery, not re-encoding: the decoded pixels are identical.
    assert np.array_equal(decoded(out.data), decoded(source))
    named = {"GPSInfo", "DateTimeOriginal", "BodySerialNumber", "Thumbnail", "XMP", "IPTC", "Comment"}
    assert named <= set(out.removed)


def test_a_rotated_jpeg_keeps_only_its_orientation() -> None:
    out = strip_photo(ps.planted_jpeg(seed=2, orientation=6))
    tags = exifread.process_file(io.BytesIO(out.data), details=True)
    assert set(tags) == {"Image Orientation"}
    assert tags["Image Orientation"].values == [6]
    with Image.open(io.BytesIO(out.data)) as im:
        assert dict(im.getexif()) == {0x0112: 6}


def test_jpeg_data_after_eoi_is_not_carried_over() -> None:
    hidden = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(hidden, "JPEG")
    source = ps.planted_jpeg(seed=3, trailing=hidden.getvalue() + b"HIDDEN-SECOND-IMAGE")
    out = strip_photo(source)
    assert b"HIDDEN-SECOND-IMAGE" not in out.data
    assert out.data.endswith(b"\xff\xd9") and out.data.count(b"\xff\xd8") == 1
    assert out.removed["DataAfterEOI"] == 1


def test_jfif_thumbnail_is_dropped_and_density_kept() -> None:
    buf = io.BytesIO()
    Image.fromarray(ps.pixels(4)).save(buf, "JPEG", dpi=(300, 300))
    data = buf.getvalue()
    assert data[6:11] == b"JFIF\x00"
    thumb = bytes([2, 2]) + bytes([9, 8, 7]) * 4  # a 2x2 RGB JFIF thumbnail (JFIF 1.02 layout)
    app0_len = struct.unpack(">H", data[4:6])[0]
    payload = data[6 : 4 + app0_len][:12] + thumb
    source = data[:2] + ps.segment(0xE0, payload) + data[4 + app0_len :]
    out = strip_photo(source)
    with Image.open(io.BytesIO(out.data)) as im:
        assert im.info["dpi"] == pytest.approx((300, 300))
    assert bytes([9, 8, 7]) * 4 not in out.data
    assert out.removed["JFIFThumbnail"] == 1


def test_icc_profile_keeps_its_colour_data_and_loses_date_and_device_text() -> None:
    source = ps.planted_jpeg(seed=5)
    out = strip_photo(source)
    with Image.open(io.BytesIO(out.data)) as im:
        profile_bytes = im.info["icc_profile"]
    assert ps.ICC_DEVICE_TEXT not in profile_bytes
    assert profile_bytes[24:36] == bytes(12)  # creation date
    profile = ImageCms.ImageCmsProfile(io.BytesIO(profile_bytes))  # littlecms still reads it
    reference = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    # Same colour behaviour: converting through either profile gives the same pixels.
    image = Image.fromarray(ps.pixels(5, (16, 16)))
    lab = ImageCms.createProfile("LAB")
    ours = ImageCms.profileToProfile(image, profile, lab, outputMode="LAB")
    theirs = ImageCms.profileToProfile(image, reference, lab, outputMode="LAB")
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))


# --- PNG ------------------------------------------------------------------------------------


def test_png_loses_text_xmp_exif_time_and_private_chunks_and_keeps_its_pixels() -> None:
    source = ps.planted_png(seed=6)
    with Image.open(io.BytesIO(source)) as im:
        assert {"Author", "Comment", "XML:com.adobe.xmp", "exif"} <= set(im.info)
    out = strip_photo(source)
    with Image.open(io.BytesIO(out.data)) as im:
        im.load()
        assert set(im.info) <= {"icc_profile", "dpi", "gamma", "srgb", "transparency"}, im.info.keys()
        assert not im.getexif()
    for value in (ps.PNG_AUTHOR, ps.XMP_CREATOR, ps.PRIVATE_CHUNK_TEXT, ps.SERIAL, ps.GPS_BYTES, ps.DATE_ORIGINAL):
        assert value not in out.data
    assert b"tIME" not in out.data and b"prVt" not in out.data
    # zTXt is compressed: look inside every chunk Pillow would not show either.
    assert ps.COMMENT not in zlib.decompress(_idat(out.data))  # (pixels only in IDAT)
    assert np.array_equal(decoded(out.data), decoded(source))


def _idat(data: bytes) -> bytes:
    pos, found = 8, b""
    while pos < len(data):
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if ctype == b"IDAT":
            found += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return found


def test_a_rotated_png_keeps_only_its_orientation() -> None:
    out = strip_photo(ps.planted_png(seed=7, orientation=8))
    with Image.open(io.BytesIO(out.data)) as im:
        assert dict(im.getexif()) == {0x0112: 8}


# --- HEIC -----------------------------------------------------------------------------------


def test_heic_becomes_a_lossless_png_without_metadata() -> None:
    import pillow_heif

    source = ps.planted_heic(seed=8)
    assert ps.SERIAL in source and ps.XMP_CREATOR in source
    out = strip_photo(source)
    assert (out.kind, out.source_kind, out.suffix) == ("png", "heic", ".png")
    assert left_over(out.data) == []
    expected = np.asarray(pillow_heif.open_heif(io.BytesIO(source)).to_pillow().convert("RGB"))
    assert np.array_equal(decoded(out.data), expected)
    with Image.open(io.BytesIO(out.data)) as im:
        assert not im.getexif() and "XML:com.adobe.xmp" not in im.info


# --- refused --------------------------------------------------------------------------------


def _corrupt_png_crc(data: bytes) -> bytes:
    at = data.index(b"IDAT") + 6
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def _jpeg_with_overlong_app1(data: bytes) -> bytes:
    return data[:2] + b"\xff\xe1\xff\xf0Exif\x00\x00" + b"\x00" * 16  # declares 65520 bytes, has 22


def _jpeg_with_bad_exif(data: bytes) -> bytes:
    return data[:2] + ps.segment(0xE1, b"Exif\x00\x00XX*\x00garbage") + data[2:]


def _jpeg_with_truncated_ifd0(data: bytes) -> bytes:
    # IFD0 declares 5 entries and holds 1 (Orientation 6)
    tiff = b"MM\x00*\x00\x00\x00\x08" + b"\x00\x05" + b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00"
    return data[:2] + ps.segment(0xE1, b"Exif\x00\x00" + tiff) + data[2:]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: d[:-2], "truncated"),
        (_jpeg_with_overlong_app1, "APP1 segment at offset 2 is truncated"),
        (_jpeg_with_bad_exif, "EXIF block cannot be parsed"),
        (_jpeg_with_truncated_ifd0, "EXIF block cannot be parsed"),
    ],
    ids=["cut-in-scan", "no-eoi", "segment-length-past-end", "exif-not-tiff", "exif-ifd0-truncated"],
)
def test_a_jpeg_that_does_not_parse_is_refused_with_its_reason(make, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PhotoError) as refused:
        strip_photo(make(ps.planted_jpeg(seed=9)))
    assert reason in refused.value.reason


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_corrupt_png_crc, "chunk IDAT at offset"),
        (lambda d: d[: len(d) - 30], "truncated"),
        (lambda d: d[:8] + ps.png_chunk(b"tEXt", b"a\x00b") + d[8:], "first chunk is not IHDR"),
        (lambda d: d[:33] + ps.png_chunk(b"CgBI", b"\x00" * 4) + d[33:], "unknown critical chunk CgBI"),
    ],
    ids=["bad-crc", "truncated", "ihdr-not-first", "unknown-critical"],
)
def test_a_png_that_does_not_parse_is_refused_with_its_reason(make, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PhotoError) as refused:
        strip_photo(make(ps.planted_png(seed=10)))
    assert reason in refused.value.reason


def test_bad_crc_names_the_crc() -> None:
    with pytest.raises(PhotoError, match="bad CRC"):
        strip_photo(_corrupt_png_crc(ps.planted_png(seed=11)))


@pytest.mark.parametrize("data", [b"", b"hello, not an image", b"GIF89a" + b"\x00" * 32, b"%PDF-1.7\n"])
def test_not_a_photo_is_refused(data: bytes) -> None:
    with pytest.raises(PhotoError, match="not a JPEG, PNG or HEIC"):
        strip_photo(data)


def test_a_damaged_heic_is_refused() -> None:
    source = ps.planted_heic(seed=13)
    with pytest.raises(PhotoError, match="HEIC cannot be decoded"):
        strip_photo(source[: len(source) // 2])


def test_the_refusal_reason_carries_no_value_from_the_file() -> None:
    data = ps.planted_jpeg(seed=14)
    for make in (lambda d: d[: len(d) // 2], _jpeg_with_bad_exif):
        with pytest.raises(PhotoError) as refused:
            strip_photo(make(data))
        assert left_over(refused.value.reason.encode()) == []


@pytest.mark.parametrize("twelve", [False, True])
def test_a_10_or_12_bit_heic_becomes_a_16_bit_png_with_its_samples_and_no_metadata(
    twelve: bool, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """libheif (pillow-heif, the reference decoder) gives the samples scaled to 16 bits; libpng
    (imagecodecs) reads back the same, and sBIT says how many bits are significant."""
    import imagecodecs
    import pillow_heif

    from lightbox.sandbox.deid.photos_verify import verify_photo_tree

    samples = (np.random.default_rng(0).integers(0, 1024, (32, 48, 3)) << 6).astype(np.uint16)
    heif = pillow_heif.from_bytes(mode="RGB;16", size=(48, 32), data=samples.tobytes())
    monkeypatch.setattr(pillow_heif.options, "SAVE_HDR_TO_12_BIT", twelve)  # the encoder's switch
    buf = io.BytesIO()
    heif.save(
        buf, quality=-1, exif=ps.exif_block(thumbnail=False), xmp=ps.xmp_packet(), icc_profile=ps.icc_with_device_text()
    )
    source = buf.getvalue()
    assert ps.SERIAL in source and ps.XMP_CREATOR in source and ps.ICC_DEVICE_TEXT in source
    reference = pillow_heif.open_heif(io.BytesIO(source), convert_hdr_to_8bit=False)[0]
    assert reference.info["bit_depth"] == (12 if twelve else 10)
    expected = np.asarray(reference)
    assert expected.dtype == np.uint16
    out = strip_photo(source)
    assert (out.kind, out.source_kind) == ("png", "heic")
    assert left_over(out.data) == [] and ps.ICC_DEVICE_TEXT not in out.data
    assert np.array_equal(imagecodecs.png_decode(out.data), expected)
    depth = 12 if twelve else 10
    sbit = out.data.index(b"sBIT")
    assert out.data[sbit + 4 : sbit + 7] == bytes([depth] * 3)
    assert b"iCCP" in out.data  # the colour profile stays, sanitized
    with Image.open(io.BytesIO(out.data)) as im:
        im.load()  # the gate's full decode (Pillow) reads it too
        assert im.size == (48, 32) and not im.getexif()
    (tmp_path / "case").mkdir()
    (tmp_path / "case" / "photo.png").write_bytes(out.data)
    report = verify_photo_tree(tmp_path, [])
    assert report.ok, (report.violations, report.unreadable)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "JPEG"), ("CMYK", "JPEG"), ("L", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("I;16", "PNG")],
)
def test_other_colour_modes_keep_their_pixels(mode: str, fmt: str) -> None:
    image = Image.fromarray(ps.pixels(50)).convert(mode if mode != "I;16" else "I").convert(mode)
    buf = io.BytesIO()
    extra = {"transparency": 3} if mode == "P" else {}
    image.save(buf, fmt, exif=ps.exif_block(thumbnail=False), **extra)
    source = buf.getvalue()
    out = strip_photo(source)
    assert ps.SERIAL not in out.data and ps.GPS_BYTES not in out.data
    with Image.open(io.BytesIO(source)) as a, Image.open(io.BytesIO(out.data)) as b:
        assert (a.mode, a.size) == (b.mode, b.size)
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert a.info.get("transparency") == b.info.get("transparency")


@pytest.mark.parametrize(
    "options", [{"progressive": True}, {"restart_marker_blocks": 2}, {"subsampling": 0, "optimize": True}]
)
def test_progressive_and_restart_jpegs_keep_their_pixels(options: dict[str, object]) -> None:
    buf = io.BytesIO()
    Image.fromarray(ps.pixels(60, (128, 96))).save(buf, "JPEG", exif=ps.exif_block(), **options)
    source = buf.getvalue()
    out = strip_photo(source)
    assert ps.SERIAL not in out.data and ps.thumbnail_jpeg()[2:] not in out.data
    assert np.array_equal(decoded(out.data), decoded(source))
