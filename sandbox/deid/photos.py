"""De-identification of one photo (JPEG, PNG, HEIC): every metadata block goes.

Pure: bytes in, bytes out (:func:`strip_photo`). Pixels are never re-encoded for JPEG and PNG:

* **JPEG**: segment surgery. Kept: the segments needed to decode (SOFn, DHT, DQT, DRI, DAC, SOS
  and its entropy-coded data), a JFIF APP0 rewritten without its thumbnail, the Adobe APP14
  (colour transform of CMYK/YCCK files), and the ICC profile (APP2) with its date and device
  text removed. Dropped: EXIF (GPS, dates, serials, owner, MakerNote, the IFD1 thumbnail),
  XMP, IPTC/Photoshop (APP13), comments, MPF and every other APPn, and anything after EOI
  (multi-picture secondary images, a second image appended to hide it).
* **PNG**: chunk surgery. Kept: IHDR, PLTE, IDAT, IEND and the ancillary chunks needed to show
  the image as taken (tRNS transparency; gAMA, cHRM, sRGB, cICP, mDCV, cLLI, sBIT colour; iCCP
  sanitized as above; pHYs, the pixel size, which measurements of lesions need). Dropped: text
  (tEXt, zTXt, iTXt, which carry XMP), eXIf, tIME, bKGD, hIST, sPLT, APNG frames and every
  unknown ancillary chunk; an unknown critical chunk refuses the file.
* **HEIC**: the container holds metadata as items located by offset tables; rather than
  rewrite those, the primary image is decoded (libheif, through pillow-heif, applying the
  HEIF rotation and mirroring) and written as a PNG: lossless from the decoded pixels, so no
  generation loss, and only what is written exists in the output (depth maps, thumbnails and
  other auxiliary images are not carried over). A 10- or 12-bit HEIC becomes a 16-bit PNG
  with an sBIT chunk naming its significant bits.

Orientation: a JPEG/PNG whose EXIF says it is rotated keeps a minimal EXIF with the
Orientation tag alone, so it still displays upright without re-encoding.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field

from lightbox.sandbox.deid.photos_parse import (
    COM,
    PhotoError,
    PhotoKind,
    Segment,
    marker_name,
    parse_jpeg,
    parse_png,
    png_chunk,
    sanitize_icc,
    sniff,
)

ORIENTATION = 0x0112
EXIF_HEADER = b"Exif\x00\x00"
ICC_APP2 = b"ICC_PROFILE\x00"
ICC_CHUNK = 65519  # 65535 - length field - "ICC_PROFILE\0" - sequence/count bytes
JFIF = b"JFIF\x00"
ADOBE = b"Adobe"

# JPEG markers kept as they are: what the decoder needs.
_JPEG_KEPT = frozenset({*range(0xC0, 0xD0), 0xDA, 0xDB, 0xDC, 0xDD, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7}) - {
    0xC8
}
_PNG_KEPT = frozenset(
    {
        b"IHDR",
        b"PLTE",
        b"IDAT",
        b"IEND",
        b"tRNS",
        b"gAMA",
        b"cHRM",
        b"sRGB",
        b"cICP",
        b"mDCV",
        b"cLLI",
        b"sBIT",
        b"pHYs",
    }
)

# EXIF tags named when counting what was removed (the verifier names the same).
EXIF_GPS_IFD, EXIF_IFD, EXIF_IFD1 = 0x8825, 0x8769, -1  # -1: Pillow's key for IFD1
MAX_PIXELS = 200_000_000  # a decompression bomb is refused, not decoded


@dataclass(frozen=True, slots=True)
class StrippedPhoto:
    data: bytes
    kind: PhotoKind  # of the output: jpeg or png (a HEIC comes out as png)
    source_kind: PhotoKind
    removed: Counter[str] = field(default_factory=Counter)  # what went, by the gate's keywords (never values)
    orientation: int = 1
    make: str = ""  # EXIF Make of the source, for the cohort's manufacturer count

    @property
    def suffix(self) -> str:
        return ".jpg" if self.kind == "jpeg" else ".png"


@dataclass(frozen=True, slots=True)
class ExifSummary:
    orientation: int
    make: str
    findings: list[tuple[str, str]]  # (keyword, location) beyond Orientation

    @property
    def names(self) -> list[str]:
        return [keyword for keyword, _ in self.findings]


def read_exif(payload: bytes) -> ExifSummary:
    """Orientation, Make and the names of the identifying groups present in an EXIF block
    (``Exif\\0\\0`` + TIFF), by Pillow's reader. IFD0 must read without a warning: a block whose
    orientation cannot be trusted is refused rather than guessed."""
    from PIL import Image

    exif = Image.Exif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            exif.load(payload if payload.startswith(EXIF_HEADER) else EXIF_HEADER + payload)
            ifd0 = dict(exif)
        # IFD0 (where Orientation lives) is read strictly above. The sub-IFDs only name what
        # is removed: writers differ in how they end them (piexif omits the last next-IFD
        # pointer, on which Pillow warns), so they are read leniently. The stripper drops the
        # whole block and the gate accepts only the exact minimal block, so nothing rests on it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gps = exif.get_ifd(EXIF_GPS_IFD) if EXIF_GPS_IFD in ifd0 else {}
            sub = exif.get_ifd(EXIF_IFD) if EXIF_IFD in ifd0 else {}
            ifd1 = exif.get_ifd(EXIF_IFD1)
    except (SyntaxError, ValueError, struct.error, UserWarning, OSError, KeyError, TypeError) as exc:
        raise PhotoError(f"EXIF block cannot be parsed ({type(exc).__name__})") from None
    findings = exif_findings(ifd0, sub, gps, ifd1)
    orientation = exif.get(ORIENTATION, 1)
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        raise PhotoError("EXIF Orientation is not 1-8")
    make = exif.get(0x010F, "")
    return ExifSummary(orientation, make if isinstance(make, str) else "", findings)


def exif_findings(
    ifd0: dict[int, object], sub: dict[int, object], gps: dict[int, object], ifd1: dict[int, object]
) -> list[tuple[str, str]]:
    """(keyword, location) of what an EXIF block holds beyond Orientation; the gate reports the
    same pairs. GPS and the IFD1 thumbnail are named as a whole (every tag in them goes)."""
    from PIL import ExifTags

    found: list[tuple[str, str]] = []
    if gps:
        found.append(("GPSInfo", "EXIF 0x8825"))
    if ifd1:
        found.append(("Thumbnail", "EXIF IFD1"))
    for tag in sorted({*ifd0, *sub} - {EXIF_IFD, EXIF_GPS_IFD, ORIENTATION}):
        found.append((ExifTags.TAGS.get(tag, "UnknownTag"), f"EXIF 0x{tag:04X}"))
    return found


def minimal_exif(orientation: int) -> bytes:
    """``Exif\\0\\0`` + a TIFF block holding only IFD0 Orientation."""
    from PIL import Image

    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    data = exif.tobytes()
    return data if data.startswith(EXIF_HEADER) else EXIF_HEADER + data


def _segment(marker: int, payload: bytes) -> bytes:
    if len(payload) + 2 > 0xFFFF:
        raise PhotoError(f"JPEG: {marker_name(marker)} payload too large to write")
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _icc_segments(profile: bytes) -> list[bytes]:
    parts = [profile[i : i + ICC_CHUNK] for i in range(0, len(profile), ICC_CHUNK)]
    if len(parts) > 255:
        raise PhotoError("ICC profile too large for JPEG APP2")
    return [_segment(0xE2, ICC_APP2 + bytes((n, len(parts))) + part) for n, part in enumerate(parts, start=1)]


def _jpeg_icc(segments: list[Segment]) -> bytes | None:
    parts = [s.payload[len(ICC_APP2) :] for s in segments if s.marker == 0xE2 and s.payload.startswith(ICC_APP2)]
    if not parts:
        return None
    total = {p[1] for p in parts if len(p) >= 2}
    order = sorted((p[0], p[2:]) for p in parts if len(p) >= 2)
    if len(total) != 1 or [n for n, _ in order] != list(range(1, len(parts) + 1)) or len(parts) != total.pop():
        raise PhotoError("JPEG: ICC profile chunks are missing, repeated or out of sequence")
    return b"".join(body for _, body in order)


def _jfif_without_thumbnail(payload: bytes) -> bytes:
    if len(payload) < 14:
        raise PhotoError("JPEG: JFIF APP0 is truncated")
    return payload[:12] + b"\x00\x00"  # version, units, densities; thumbnail 0x0


def strip_jpeg(data: bytes) -> StrippedPhoto:
    layout = parse_jpeg(data)
    removed: Counter[str] = Counter()
    head: list[bytes] = []
    body: list[bytes] = []
    orientation, make = 1, ""
    seen_exif = seen_jfif = seen_adobe = False
    for seg in layout.segments:
        m, p = seg.marker, seg.payload
        if m in _JPEG_KEPT:
            body.append(data[seg.start : seg.end])
        elif m == 0xE0 and p.startswith(JFIF) and not seen_jfif:
            seen_jfif = True
            head.insert(0, _segment(0xE0, _jfif_without_thumbnail(p)))
            if len(p) > 14:
                removed["JFIFThumbnail"] += 1
        elif m == 0xE1 and p.startswith(EXIF_HEADER) and not seen_exif:
            seen_exif = True
            exif = read_exif(p)
            orientation, make = exif.orientation, exif.make
            removed.update(exif.names)
            removed["EXIF"] += 1
        elif m == 0xEE and p.startswith(ADOBE) and len(p) == 12 and not seen_adobe:
            seen_adobe = True
            body.insert(0, data[seg.start : seg.end])
        elif m == 0xE2 and p.startswith(ICC_APP2):
            continue  # reassembled below
        else:
            removed[jpeg_block_keyword(seg)] += 1
    profile = _jpeg_icc(layout.segments)
    extra: list[bytes] = []
    if orientation != 1:
        extra.append(_segment(0xE1, minimal_exif(orientation)))
    if profile is not None:
        extra.extend(_icc_segments(sanitize_icc(profile)))
    if layout.trailing:
        removed["DataAfterEOI"] += 1
    out = b"\xff\xd8" + b"".join(head) + b"".join(extra) + b"".join(body) + b"\xff\xd9"
    return StrippedPhoto(out, "jpeg", "jpeg", removed, orientation, make)


def jpeg_block_keyword(seg: Segment) -> str:
    """The keyword a dropped JPEG segment is counted and reported under."""
    p = seg.payload
    if seg.marker == COM:
        return "Comment"
    if seg.marker == 0xE1 and p.startswith(b"http://ns.adobe.com/xap/1.0/\x00"):
        return "XMP"
    if seg.marker == 0xE1 and p.startswith(b"http://ns.adobe.com/xmp/extension/\x00"):
        return "XMPExtension"
    if seg.marker == 0xED:
        return "IPTC"
    if seg.marker == 0xE2 and p.startswith(b"MPF\x00"):
        return "MultiPictureFormat"
    if seg.marker == 0xE0 and p.startswith(b"JFXX\x00"):
        return "JFIFExtensionThumbnail"
    return marker_name(seg.marker)


def strip_png(data: bytes) -> StrippedPhoto:
    layout = parse_png(data)
    removed: Counter[str] = Counter()
    out: list[bytes] = [data[:8]]
    orientation, make = 1, ""
    exif_at: int | None = None
    for chunk in layout.chunks:
        if chunk.type in _PNG_KEPT:
            out.append(data[chunk.start : chunk.end])
            if chunk.type == b"IHDR":
                exif_at = len(out)
        elif chunk.type == b"iCCP":
            out.append(png_chunk(b"iCCP", _sanitize_iccp(chunk.data)))
        elif chunk.critical:
            raise PhotoError(f"PNG: unknown critical chunk {chunk.name} (the image cannot be shown without it)")
        else:
            if chunk.type == b"eXIf":
                exif = read_exif(chunk.data)
                orientation, make = exif.orientation, exif.make
                removed.update(exif.names)
                removed["EXIF"] += 1
            else:
                removed[png_chunk_keyword(chunk.type, chunk.data)] += 1
    if orientation != 1 and exif_at is not None:
        out.insert(exif_at, png_chunk(b"eXIf", minimal_exif(orientation)[len(EXIF_HEADER) :]))
    if layout.trailing:
        removed["DataAfterIEND"] += 1
    return StrippedPhoto(b"".join(out), "png", "png", removed, orientation, make)


def png_chunk_keyword(ctype: bytes, body: bytes) -> str:
    """The keyword a dropped PNG chunk is counted and reported under."""
    if ctype == b"iTXt" and body.startswith(b"XML:com.adobe.xmp\x00"):
        return "XMP"
    if ctype in (b"tEXt", b"zTXt", b"iTXt"):
        return "TextChunk"
    if ctype == b"tIME":
        return "ModificationTime"
    return "AncillaryChunk"


def _sanitize_iccp(body: bytes) -> bytes:
    name_end = body.find(b"\x00")
    if not 1 <= name_end <= 79 or len(body) < name_end + 2 or body[name_end + 1] != 0:
        raise PhotoError("PNG: iCCP chunk is malformed")
    try:
        profile = zlib.decompress(body[name_end + 2 :])
    except zlib.error:
        raise PhotoError("PNG: iCCP profile does not decompress") from None
    return _iccp_body(profile)


def _iccp_body(profile: bytes) -> bytes:
    # The profile name is free text: a neutral one replaces it.
    return b"ICC profile\x00\x00" + zlib.compress(sanitize_icc(profile), 9)


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def _png_high_depth(samples: object, depth: int, profile: bytes | None) -> bytes:
    """A 16-bit PNG of a HEIC's 10- or 12-bit samples (libheif gives them scaled to 16 bits):
    lossless, with sBIT saying how many bits are significant and the sanitized ICC profile.
    Pillow writes no 16-bit colour PNG; libpng (imagecodecs) does."""
    import imagecodecs
    import numpy as np

    array = np.asarray(samples)
    if array.dtype != np.uint16 or array.ndim != 3 or array.shape[2] not in (3, 4):
        raise PhotoError(f"HEIC with {depth}-bit samples decodes to an unexpected layout")
    png = bytes(imagecodecs.png_encode(np.ascontiguousarray(array), level=1))
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length and type, body, CRC
    extra = _chunk(b"sBIT", bytes([depth]) * array.shape[2])
    if profile:
        extra += _chunk(b"iCCP", _iccp_body(profile))
    return png[:ihdr_end] + extra + png[ihdr_end:]


def strip_heic(data: bytes) -> StrippedPhoto:
    try:
        import pillow_heif
    except ImportError:  # pragma: no cover - a dependency; without it HEIC is refused, not passed
        raise PhotoError("HEIC cannot be processed here (pillow-heif is not installed)") from None
    try:
        heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
        primary = heif[heif.primary_index]
        if primary.size[0] * primary.size[1] > MAX_PIXELS:
            raise PhotoError("HEIC image has more pixels than allowed")
        depth = int(primary.info.get("bit_depth", 8))
        if depth not in (8, 10, 12):
            raise PhotoError(f"HEIC with {depth}-bit samples is not supported (8, 10 or 12 bits)")
        # Rounding 10 or 12 bits to 8 would change the pixels without anyone asking: kept as 16
        # (the array is libheif's decode, its rotation and mirroring applied, as to_pillow's is).
        high = _png_high_depth(primary, depth, primary.info.get("icc_profile")) if depth > 8 else None
        image = primary.to_pillow() if high is None else None
    except PhotoError:
        raise
    except Exception as exc:  # noqa: BLE001 - libheif raises several types; all mean "cannot parse"
        raise PhotoError(f"HEIC cannot be decoded ({type(exc).__name__})") from None
    removed: Counter[str] = Counter()
    exif = primary.info.get("exif")
    make = ""
    if exif:
        summary = read_exif(exif)
        make = summary.make
        removed.update(summary.names)
        removed["EXIF"] += 1
    if primary.info.get("xmp"):
        removed["XMP"] += 1
    if len(heif) > 1:
        removed["HEICOtherImages"] += len(heif) - 1
    if primary.info.get("thumbnails"):
        removed["HEICThumbnail"] += len(primary.info["thumbnails"])
    profile = primary.info.get("icc_profile")
    if high is not None or image is None:
        return StrippedPhoto(high or b"", "png", "heic", removed, 1, make)
    buf = io.BytesIO()
    image.info.clear()
    # zlib level 1: a camera photo's noise barely compresses at any level; level 6 took 1.7x
    # the time and gave a larger file (3.1 against 2.4 MB) on the bench's 1200x900 photos.
    image.save(buf, "PNG", icc_profile=sanitize_icc(profile) if profile else None, compress_level=1)
    return StrippedPhoto(buf.getvalue(), "png", "heic", removed, 1, make)


def strip_photo(data: bytes) -> StrippedPhoto:
    """The photo without metadata; raises :class:`PhotoError` (with the reason) when the file
    is not a JPEG, PNG or HEIC, or any of its structure or metadata cannot be parsed, or the
    result does not decode."""
    kind = sniff(data)
    if kind == "jpeg":
        result = strip_jpeg(data)
    elif kind == "png":
        result = strip_png(data)
    elif kind == "heic":
        result = strip_heic(data)
    else:
        raise PhotoError("not a JPEG, PNG or HEIC photo (by its content)")
    check_decodes(result.data)
    return result


def check_decodes(data: bytes) -> tuple[int, int]:
    """Decode fully (a truncated scan or IDAT stream is refused); the size (width, height)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.size[0] * im.size[1] > MAX_PIXELS:
                    raise PhotoError("image has more pixels than allowed")
                im.load()
                return im.size
    except PhotoError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError...
        raise PhotoError(f"the image data does not decode ({type(exc).__name__}: {str(exc)[:80]})") from None
