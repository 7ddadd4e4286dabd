"""JPEG and JPEG 2000 tile headers: metadata segments removed, the image data untouched, what
cannot be walked refused. Streams come from imagecodecs' encoders (libjpeg-turbo, OpenJPEG)."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest

from lightbox.sandbox.deid.slide_codestreams import CodestreamError, scrub_j2k, scrub_jpeg

IMAGE = np.random.default_rng(7).integers(0, 255, (64, 64, 3), dtype=np.uint8)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def test_a_clean_encoder_stream_passes_unchanged() -> None:
    jpeg = imagecodecs.jpeg8_encode(IMAGE, level=90)
    result = scrub_jpeg(jpeg)
    assert jpeg[6:11] == b"JFIF\0"  # libjpeg's standard APP0: kept
    assert result.data == jpeg and result.removed == 0


def test_comment_exif_and_trailing_bytes_go_and_the_pixels_stay() -> None:
    jpeg = imagecodecs.jpeg8_encode(IMAGE, level=90)
    exif = _segment(0xE1, b"Exif\0\0" + b"MM\0*" + b"Patient Jane Doe")
    planted = jpeg[:2] + _segment(0xFE, b"Jane Doe 1961") + exif + jpeg[2:] + b"Jane Doe"
    result = scrub_jpeg(planted)
    assert result.removed == 3
    assert b"Jane" not in result.data
    assert result.data == jpeg
    assert np.array_equal(imagecodecs.jpeg8_decode(result.data), imagecodecs.jpeg8_decode(jpeg))


def test_jfif_with_a_thumbnail_goes_the_standard_jfif_stays() -> None:
    jpeg = imagecodecs.jpeg8_encode(IMAGE, level=90)
    plain_jfif = _segment(0xE0, b"JFIF\0\x01\x02\0\0\x01\0\x01\0\0")  # 16-byte segment, 0x0 thumbnail
    thumb_jfif = _segment(0xE0, b"JFIF\0\x01\x02\0\0\x01\0\x01\x02\x02" + bytes(12))  # a 2x2 thumbnail
    body = jpeg[2:]
    if body[:2] == b"\xff\xe0":  # drop the encoder's own APP0, to place ours
        body = body[2 + int.from_bytes(body[2:4], "big") :]
    assert scrub_jpeg(b"\xff\xd8" + plain_jfif + body).removed == 0
    assert scrub_jpeg(b"\xff\xd8" + thumb_jfif + body).removed == 1


def test_markers_inside_the_scan_are_followed_not_mistaken() -> None:
    """Stuffed 0xFF00 bytes and restart markers belong to the scan; a COM after it does not."""
    jpeg = imagecodecs.jpeg8_encode(IMAGE, level=100)
    assert b"\xff\x00" in jpeg  # the entropy-coded data has stuffed bytes
    with_com_after_scan = jpeg[:-2] + _segment(0xFE, b"late comment") + b"\xff\xd9"
    result = scrub_jpeg(with_com_after_scan)
    assert result.removed == 1 and result.data == jpeg


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x89PNG\r\n\x1a\n", "start-of-image"),
        (b"\xff\xd8\xff\xfe\x00\x40abc", "runs past"),
        (b"\xff\xd8\xff\xdb\x00\x04\x00\x00", "ends before"),
        (b"\xff\xd8\xff\xd8", "misplaced"),
        (b"\xff\xd8\x00\x00", "not a marker"),
        (b"\xff\xd8\xff\xda\x00\x02\x01\x02\x03", "no end-of-image"),
    ],
)
def test_streams_that_cannot_be_walked_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(CodestreamError, match=message):
        scrub_jpeg(data)


def test_j2k_main_header_comment_goes_and_decodes_the_same() -> None:
    j2k = imagecodecs.jpeg2k_encode(IMAGE, level=0, codecformat="J2K")
    assert j2k[:2] == b"\xff\x4f"
    # OpenJPEG writes its own COM ("Created by OpenJPEG version ..."), plant a second one too
    planted = j2k[:2] + j2k[2:].replace(b"\xff\x90", _segment(0x64, b"\0\x01Jane Doe") + b"\xff\x90", 1)
    result = scrub_j2k(planted)
    assert b"Jane" not in result.data and b"OpenJPEG" not in result.data
    assert planted.count(b"Created by OpenJPEG") == 1
    assert result.removed == 2  # OpenJPEG's and ours
    assert np.array_equal(imagecodecs.jpeg2k_decode(result.data), IMAGE)


def test_j2k_comment_in_a_tile_part_header_is_refused() -> None:
    j2k = imagecodecs.jpeg2k_encode(IMAGE, level=0, codecformat="J2K")
    sot = j2k.index(b"\xff\x90")
    psot = int.from_bytes(j2k[sot + 6 : sot + 10], "big")
    comment = _segment(0x64, b"\0\x01Jane")
    tile_part = bytearray(j2k[sot : sot + 12] + comment + j2k[sot + 12 : sot + psot])
    tile_part[6:10] = (psot + len(comment)).to_bytes(4, "big")
    planted = j2k[:sot] + bytes(tile_part) + j2k[sot + psot :]
    with pytest.raises(CodestreamError, match="tile-part header carries a comment"):
        scrub_j2k(planted)


def test_j2k_bytes_after_the_end_are_refused() -> None:
    j2k = imagecodecs.jpeg2k_encode(IMAGE, level=0, codecformat="J2K")
    with pytest.raises(CodestreamError):
        scrub_j2k(j2k + b"Jane Doe")


def test_jpeg_ls_scan_bytes_are_not_taken_for_markers() -> None:
    """JPEG-LS coded data holds 0xFF followed by bytes below 0x80 (T.87 9.1 bit stuffing): a
    JPEG walk stops there; the JPEG-LS walk finds the comments around the scan and CharLS
    decodes what is kept to the same pixels."""
    from lightbox.sandbox.deid.slide_codestreams import jpeg_kept

    image = np.random.default_rng(3).integers(0, 255, (64, 64), dtype=np.uint8)
    stream = imagecodecs.jpegls_encode(image, level=0)
    stuffed = [i for i in range(len(stream) - 1) if stream[i] == 0xFF and 0 < stream[i + 1] < 0x80]
    assert stuffed  # the case the JPEG walk would get wrong
    comment = _segment(0xFE, b"PID-12345678")
    planted = stream[:2] + comment + stream[:-2][2:] + comment + stream[-2:]
    kept = jpeg_kept(planted, ls=True)
    scrubbed = kept.join(planted).data
    assert b"PID" not in scrubbed and kept.removed >= 2
    assert np.array_equal(imagecodecs.jpegls_decode(scrubbed), image)
    with pytest.raises(CodestreamError):
        jpeg_kept(planted)
