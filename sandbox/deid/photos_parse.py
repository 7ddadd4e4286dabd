"""Container structure of photos: JPEG segments, PNG chunks, ICC profiles.

Only the layout is parsed here (where each segment or chunk starts and ends, what it is);
the de-identifier (``photos.py``) decides what to keep and the verifier (``photos_verify.py``)
what to report. Anything that does not parse cleanly raises :class:`PhotoError` with a
reason naming the structure and its offset, never a value from the file: a file whose
metadata cannot be parsed cannot be shown to be free of identifiers, so it is refused.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from typing import Literal

PhotoKind = Literal["jpeg", "png", "heic"]

JPEG_SOI = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# ISO BMFF 'ftyp' brands of HEIF stills (HEVC, AVIF is not accepted: no clinical camera writes it).
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"})

# JPEG markers
SOS, EOI, COM = 0xDA, 0xD9, 0xFE
STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field
# In entropy-coded data a 0xFF is followed by 0x00 (stuffing), RSTn or more fill 0xFF; any
# other byte starts the next marker.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


class PhotoError(ValueError):
    """The file cannot be parsed; ``reason`` says which structure and where."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sniff(data: bytes) -> PhotoKind | None:
    """The format from the content (never the file name)."""
    if data.startswith(JPEG_SOI):
        return "jpeg"
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        return "heic"
    return None


@dataclass(frozen=True, slots=True)
class Segment:
    """A JPEG marker segment: ``data[start:end]`` is the whole segment (marker included);
    for SOS, ``end`` also covers the entropy-coded data that follows it."""

    marker: int
    start: int
    end: int
    payload: bytes  # the segment's bytes after the length field (empty for standalone markers)


@dataclass(frozen=True, slots=True)
class JpegLayout:
    segments: list[Segment]
    eoi_end: int  # offset just past EOI
    trailing: int  # bytes after EOI


def marker_name(marker: int) -> str:
    if 0xE0 <= marker <= 0xEF:
        return f"APP{marker - 0xE0}"
    if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
        return f"SOF{marker - 0xC0}"
    names = {0xC4: "DHT", 0xCC: "DAC", 0xDA: "SOS", 0xDB: "DQT", 0xDC: "DNL", 0xDD: "DRI", 0xDE: "DHP",
             0xDF: "EXP", 0xFE: "COM", 0xD9: "EOI", 0xD8: "SOI", 0x01: "TEM"}
    return names.get(marker, f"RST{marker - 0xD0}" if 0xD0 <= marker <= 0xD7 else f"marker 0x{marker:02X}")


def parse_jpeg(data: bytes) -> JpegLayout:
    if not data.startswith(JPEG_SOI):
        raise PhotoError("not a JPEG (no SOI marker)")
    segments: list[Segment] = []
    pos, size = 2, len(data)
    while True:
        if pos >= size:
            raise PhotoError(f"JPEG ends at offset {size} without an EOI marker (truncated)")
        if data[pos] != 0xFF:
            raise PhotoError(f"JPEG: expected a marker at offset {pos}")
        while pos + 1 < size and data[pos + 1] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos + 1 >= size:
            raise PhotoError(f"JPEG ends at offset {size} inside a marker (truncated)")
        marker, start = data[pos + 1], pos
        if marker == EOI:
            return JpegLayout(segments, pos + 2, size - (pos + 2))
        if marker == 0xD8 or marker == 0x00:
            raise PhotoError(f"JPEG: unexpected {marker_name(marker)} at offset {pos}")
        if marker in STANDALONE:
            segments.append(Segment(marker, start, pos + 2, b""))
            pos += 2
            continue
        if pos + 4 > size:
            raise PhotoError(f"JPEG: {marker_name(marker)} segment at offset {start} is truncated")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if length < 2 or end > size:
            raise PhotoError(
                f"JPEG: {marker_name(marker)} segment at offset {start} is truncated (length runs past the end)"
            )
        payload = data[pos + 4 : end]
        if marker == SOS:
            found = _NEXT_MARKER.search(data, end)
            if found is None:
                raise PhotoError(f"JPEG: the scan starting at offset {start} has no end (truncated, no EOI)")
            end = found.start()
        segments.append(Segment(marker, start, end, payload))
        pos = end


@dataclass(frozen=True, slots=True)
class Chunk:
    type: bytes
    start: int
    end: int
    data: bytes

    @property
    def name(self) -> str:
        return self.type.decode("latin-1")

    @property
    def critical(self) -> bool:
        return not self.type[0] & 0x20


@dataclass(frozen=True, slots=True)
class PngLayout:
    chunks: list[Chunk]
    iend_end: int
    trailing: int


_CHUNK_TYPE = re.compile(rb"^[A-Za-z]{4}$")


def parse_png(data: bytes) -> PngLayout:
    if not data.startswith(PNG_SIGNATURE):
        raise PhotoError("not a PNG (bad signature)")
    chunks: list[Chunk] = []
    pos, size = len(PNG_SIGNATURE), len(data)
    while True:
        if pos + 12 > size:
            raise PhotoError(f"PNG ends at offset {size} without an IEND chunk (truncated)")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if not _CHUNK_TYPE.match(ctype):
            raise PhotoError(f"PNG: invalid chunk type at offset {pos}")
        name = ctype.decode("latin-1")
        if length > 0x7FFFFFFF or pos + 12 + length > size:
            raise PhotoError(f"PNG: chunk {name} at offset {pos} is truncated (length runs past the end)")
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if zlib.crc32(ctype + body) != crc:
            raise PhotoError(f"PNG: chunk {name} at offset {pos} has a bad CRC")
        if not chunks and ctype != b"IHDR":
            raise PhotoError("PNG: the first chunk is not IHDR")
        end = pos + 12 + length
        chunks.append(Chunk(ctype, pos, end, body))
        if ctype == b"IEND":
            return PngLayout(chunks, end, size - end)
        pos = end


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


# --- ICC profiles ---------------------------------------------------------------------------

ICC_HEADER = 128
# Header fields that date or attribute the profile: creation date/time (24..36) and the MD5
# profile ID (84..100), which any change invalidates (zero = "not computed", allowed by ICC.1).
ICC_DATE = slice(24, 36)
ICC_PROFILE_ID = slice(84, 100)
# Tags with free text or dates about a particular device, target or calibration: a per-unit
# calibrated profile can carry a serial number or a calibration date in them. The colour
# tags (matrix, TRC, LUTs, white point) and the profile's own name (desc) and copyright stay.
ICC_DROPPED_TAGS = frozenset({b"dmnd", b"dmdd", b"targ", b"meta", b"calt", b"vued", b"pseq", b"psid", b"ciis", b"scrd"})


@dataclass(frozen=True, slots=True)
class IccTag:
    signature: bytes
    offset: int
    size: int


def parse_icc(profile: bytes) -> list[IccTag]:
    if len(profile) < ICC_HEADER + 4:
        raise PhotoError("ICC profile is shorter than its header")
    (declared,) = struct.unpack_from(">I", profile, 0)
    if declared != len(profile) or profile[36:40] != b"acsp":
        raise PhotoError("ICC profile header is invalid (size or 'acsp' signature)")
    (count,) = struct.unpack_from(">I", profile, ICC_HEADER)
    if ICC_HEADER + 4 + 12 * count > len(profile):
        raise PhotoError("ICC profile tag table runs past the end")
    tags = []
    for i in range(count):
        sig, offset, size = struct.unpack_from(">4sII", profile, ICC_HEADER + 4 + 12 * i)
        if offset + size > len(profile):
            raise PhotoError("ICC profile tag data runs past the end")
        tags.append(IccTag(sig, offset, size))
    return tags


def sanitize_icc(profile: bytes) -> bytes:
    """The profile with its date, profile ID and device/calibration text tags removed; same size.

    Dropped tags leave the table and their bytes are zeroed (unless a kept tag shares them);
    the table's freed entries become zero padding. Offsets do not move, so the colour data is
    byte for byte what it was.
    """
    tags = parse_icc(profile)
    kept = [t for t in tags if t.signature not in ICC_DROPPED_TAGS]
    out = bytearray(profile)
    out[ICC_DATE] = bytes(12)
    out[ICC_PROFILE_ID] = bytes(16)
    kept_ranges = [(t.offset, t.offset + t.size) for t in kept]
    for t in tags:
        if t.signature in ICC_DROPPED_TAGS:
            overlaps = any(a < t.offset + t.size and t.offset < b for a, b in kept_ranges)
            if not overlaps:
                out[t.offset : t.offset + t.size] = bytes(t.size)
    table = struct.pack(">I", len(kept)) + b"".join(struct.pack(">4sII", t.signature, t.offset, t.size) for t in kept)
    table += bytes(4 + 12 * len(tags) - len(table))
    out[ICC_HEADER : ICC_HEADER + len(table)] = table
    return bytes(out)


def icc_findings(profile: bytes) -> list[tuple[str, str]]:
    """(keyword, detail) of what :func:`sanitize_icc` would remove (for the verifier)."""
    tags = parse_icc(profile)
    found = [("ICCDeviceTag", t.signature.decode("latin-1")) for t in tags if t.signature in ICC_DROPPED_TAGS]
    if any(profile[ICC_DATE]):
        found.append(("ICCCreationDate", "header"))
    if any(profile[ICC_PROFILE_ID]):
        found.append(("ICCProfileID", "header"))
    return found
