"""Metadata inside compressed slide tiles: JPEG and JPEG 2000 headers, scrubbed without decoding.

A tiled slide's tiles are copied as compressed bytes, so whatever a scanner wrote into a
tile's own header travels with them: JPEG comment (COM) and application (APPn) segments
can hold text, a JPEG 2000 main header can hold comments (COM). Only the marker segments
are walked here; the entropy-coded data is copied as it is and never decoded.

Kept: the segments a decoder needs (tables, frame and scan headers, restart intervals), a
JFIF APP0 of the standard size without a thumbnail and an Adobe APP14 of the standard size
(both only say how to interpret the colours). Removed: every COM, every other APPn and
bytes after the end-of-image marker. What cannot be walked is refused
(:class:`CodestreamError`), never passed through.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_H = struct.Struct(">H")
_L = struct.Struct(">L")

SOI, EOI, SOS, COM = 0xD8, 0xD9, 0xDA, 0xFE
# After a scan header, the entropy-coded data runs to the next marker that is neither a
# stuffed 0xFF00 nor a restart marker (RST0-7); 0xFF fill bytes may precede a marker.
_NOT_MARKERS = frozenset({0x00, 0xFF, *range(0xD0, 0xD8)})


# JPEG-LS (ITU-T T.87 section 9.1) stuffs a 0 bit after every 0xFF of coded data, so there a
# marker is 0xFF followed by a byte with its high bit set.
_NOT_MARKERS_LS = frozenset({*range(0x80), 0xFF, *range(0xD0, 0xD8)})


def _next_marker(data: bytes, pos: int, not_markers: frozenset[int] = _NOT_MARKERS) -> int:
    """Offset of the 0xFF that starts the next marker after entropy-coded data, or -1.
    (bytes.find between candidates: a regex over the whole scan was 10x slower.)"""
    find, size = data.find, len(data)
    while (pos := find(b"\xff", pos)) >= 0:
        if pos + 1 >= size:
            return -1
        if data[pos + 1] not in not_markers:
            return pos
        pos += 1 if data[pos + 1] == 0xFF else 2
    return -1


_JFIF_LENGTH = 16  # APP0 "JFIF\0" with a 0x0 thumbnail (JFIF 1.02, section "JFIF APP0 marker")
_ADOBE_LENGTH = 14  # APP14 "Adobe" with version, flags and colour transform


class CodestreamError(ValueError):
    """A tile's header cannot be walked: the slide is refused rather than copied blind."""


@dataclass(frozen=True, slots=True)
class Scrubbed:
    data: bytes
    removed: int  # segments (or trailing runs) taken out


Range = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Kept:
    """What of a stream survives the scrub, as ``[start, end)`` ranges of the input (adjacent
    ranges merged): callers that copy from a file (DICOM frames) copy these ranges without
    holding the scrubbed stream."""

    ranges: list[Range]
    removed: int

    def unchanged(self, size: int) -> bool:
        return self.removed == 0 and self.ranges == [(0, size)]

    def join(self, data: bytes) -> Scrubbed:
        if self.unchanged(len(data)):
            return Scrubbed(data, 0)
        return Scrubbed(b"".join(data[a:b] for a, b in self.ranges), self.removed)


def _keep(ranges: list[Range], start: int, end: int) -> None:
    if ranges and ranges[-1][1] == start:
        ranges[-1] = (ranges[-1][0], end)
    elif end > start:
        ranges.append((start, end))


def _keep_app(marker: int, segment: bytes) -> bool:
    """Whether an APPn segment (marker + length + payload) only describes colour."""
    payload = segment[4:]
    if marker == 0xE0:
        return len(segment) == 2 + _JFIF_LENGTH and payload.startswith(b"JFIF\0") and payload[12:14] == b"\0\0"
    if marker == 0xEE:
        return len(segment) == 2 + _ADOBE_LENGTH and payload.startswith(b"Adobe")
    return False


def scrub_jpeg(data: bytes) -> Scrubbed:
    """``data`` (a JPEG stream, or an abbreviated tables-only stream) without COM, other APPn
    segments and trailing bytes. Raises CodestreamError when the markers cannot be followed."""
    return jpeg_kept(data).join(data)


def jpeg_kept(data: bytes, ls: bool = False) -> Kept:
    """The ranges of ``data`` that :func:`scrub_jpeg` keeps; ``ls`` for a JPEG-LS stream, whose
    coded data ends at other markers."""
    if not data.startswith(b"\xff\xd8"):
        raise CodestreamError("a JPEG tile does not start with a start-of-image marker")
    not_markers = _NOT_MARKERS_LS if ls else _NOT_MARKERS
    ranges: list[Range] = [(0, 2)]
    pos, size, removed = 2, len(data), 0
    while True:
        if pos + 2 > size:
            raise CodestreamError("a JPEG tile ends before its end-of-image marker")
        if data[pos] != 0xFF:
            raise CodestreamError(f"a JPEG tile has a byte that is not a marker at offset {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == EOI:
            _keep(ranges, pos, pos + 2)
            pos += 2
            break
        if marker in (SOI, 0x01) or 0xD0 <= marker <= 0xD7:
            raise CodestreamError(f"a JPEG tile has a misplaced marker 0xFF{marker:02X}")
        if pos + 4 > size:
            raise CodestreamError("a JPEG tile's segment is truncated")
        end = pos + 2 + _H.unpack_from(data, pos + 2)[0]
        if end > size or end < pos + 4:
            raise CodestreamError("a JPEG tile's segment length runs past the tile")
        if marker == COM or (0xE0 <= marker <= 0xEF and not _keep_app(marker, data[pos:end])):
            removed += 1
        else:
            _keep(ranges, pos, end)
        pos = end
        if marker == SOS:
            found = _next_marker(data, pos, not_markers)
            if found < 0:
                raise CodestreamError("a JPEG tile's scan has no end-of-image marker")
            _keep(ranges, pos, found)
            pos = found
    if pos < size:
        removed += 1  # bytes after EOI: no decoder reads them, anything can hide there
    return Kept(ranges, removed)


# JPEG 2000 codestream (ITU-T T.800 Annex A): SOC, main header segments, then tile-parts
# (SOT ... SOD data), then EOC.
_SOC, _SOT, _SOD, _EOC, _J2K_COM = 0xFF4F, 0xFF90, 0xFF93, 0xFFD9, 0xFF64


def scrub_j2k(data: bytes) -> Scrubbed:
    """A JPEG 2000 codestream without comments in its main header. A comment in a tile-part
    header would change the tile-part's length field and its index: refused instead."""
    return j2k_kept(data).join(data)


def j2k_kept(data: bytes) -> Kept:
    """The ranges of ``data`` that :func:`scrub_j2k` keeps."""
    if len(data) < 4 or _H.unpack_from(data, 0)[0] != _SOC:
        raise CodestreamError("a JPEG 2000 tile does not start with a start-of-codestream marker")
    ranges: list[Range] = [(0, 2)]
    pos, size, removed = 2, len(data), 0
    while True:  # main header, up to the first tile-part
        if pos + 4 > size:
            raise CodestreamError("a JPEG 2000 tile's main header is truncated")
        marker, length = _H.unpack_from(data, pos)[0], _H.unpack_from(data, pos + 2)[0]
        if marker == _SOT:
            break
        if marker >> 8 != 0xFF or length < 2 or pos + 2 + length > size:
            raise CodestreamError("a JPEG 2000 tile's main header cannot be followed")
        if marker == _J2K_COM:
            removed += 1
        else:
            _keep(ranges, pos, pos + 2 + length)
        pos += 2 + length
    _check_tile_parts(data, pos)
    _keep(ranges, pos, size)
    return Kept(ranges, removed)


def _check_tile_parts(data: bytes, pos: int) -> None:
    size = len(data)
    while pos + 2 <= size:
        marker = _H.unpack_from(data, pos)[0]
        if marker == _EOC:
            if pos + 2 != size:
                raise CodestreamError("a JPEG 2000 tile has bytes after its end-of-codestream marker")
            return
        if marker != _SOT or pos + 12 > size:
            raise CodestreamError("a JPEG 2000 tile-part cannot be followed")
        psot = _L.unpack_from(data, pos + 6)[0]
        end = size - 2 if psot == 0 else pos + psot
        if end > size or end < pos + 12:
            raise CodestreamError("a JPEG 2000 tile-part's length runs past the tile")
        header = pos + 12
        while header + 2 <= end:
            header_marker = _H.unpack_from(data, header)[0]
            if header_marker == _SOD:
                break
            if header_marker == _J2K_COM:
                raise CodestreamError("a JPEG 2000 tile-part header carries a comment")
            if header + 4 > end:
                raise CodestreamError("a JPEG 2000 tile-part header is truncated")
            header += 2 + _H.unpack_from(data, header + 2)[0]
        else:
            raise CodestreamError("a JPEG 2000 tile-part has no start-of-data marker")
        pos = end
    raise CodestreamError("a JPEG 2000 tile has no end-of-codestream marker")
