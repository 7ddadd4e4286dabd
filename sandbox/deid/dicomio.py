"""Header-level DICOM reading and writing on raw bytes.

De-identification only touches the header, so this module parses the data set
into a light element tree and leaves pixel data as a byte range of the source
file: the writer streams that range with ``copy_file_range``, never decoding or
even copying it through Python. Building full pydicom datasets costs several
times more than the copy itself, which is what the speed target is measured
against.

Supported encodings: implicit and explicit VR little endian (native and every
encapsulated transfer syntax) and deflated explicit VR little endian. Explicit
VR big endian is retired and refused.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
# Bulk data streamed through untouched when it sits at the top level.
BULK_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})

LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"})
KNOWN_VRS = LONG_VRS | frozenset(
    {
        "AE",
        "AS",
        "AT",
        "CS",
        "DA",
        "DS",
        "DT",
        "FL",
        "FD",
        "IS",
        "LO",
        "LT",
        "PN",
        "SH",
        "SL",
        "SS",
        "ST",
        "TM",
        "UI",
        "UL",
        "US",
    }
)

_HH = struct.Struct("<HH")
_H = struct.Struct("<H")
_L = struct.Struct("<L")
_HHL = struct.Struct("<HHL")
_EXPLICIT_SHORT = struct.Struct("<HH2sH")
_EXPLICIT_LONG = struct.Struct("<HH2s2xL")


class DicomError(Exception):
    """The file is not DICOM, or not DICOM this module can rewrite safely."""


@dataclass(slots=True)
class Element:
    """One attribute. ``items`` is set for sequences, ``value`` otherwise.

    ``span`` marks top-level bulk data that stays in the source file: the
    (start, end) byte range of the whole element, header included.
    """

    tag: int
    vr: str
    value: bytes = b""
    items: list[list[Element]] | None = None
    span: tuple[int, int] | None = None


@dataclass(slots=True)
class ParsedFile:
    """A file's meta information, header elements and where its bytes live."""

    meta: list[Element]
    elements: list[Element]  # empty when parsed with ``elements=False``
    transfer_syntax: str
    buffer: bytes | bytearray | mmap.mmap
    start: int  # offset of the data set in ``buffer``
    file_size: int  # ``buffer`` may hold only the first bytes of the file
    # True when ``buffer`` is the file itself, so spans can be copied by the kernel.
    spans_in_file: bool = True

    @property
    def implicit(self) -> bool:
        return self.transfer_syntax == IMPLICIT_LE


@lru_cache(maxsize=4096)
def dictionary_vr(tag: int) -> str:
    """VR for implicit-VR data; ambiguous dictionary VRs resolve to the wider one."""
    if tag >> 16 & 1:
        return "UN"
    # pydicom costs a quarter second to import; only implicit-VR files need its dictionary.
    from pydicom.datadict import dictionary_VR

    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return "UN"
    if vr == "OB or OW":
        return "OW"
    if " or " in vr:
        return vr.split(" or ")[0]
    return vr


def tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


# ---------------------------------------------------------------- reading


def _read_items(
    buf: bytes | mmap.mmap, pos: int, length: int, implicit: bool, limit: int
) -> tuple[list[list[Element]], int]:
    items: list[list[Element]] = []
    end = limit if length == UNDEFINED else pos + length
    if end > limit:
        raise DicomError("sequence runs past the end of the file")
    while pos < end:
        if pos + 8 > limit:
            raise DicomError("truncated sequence")
        group, elem, item_len = _HHL.unpack_from(buf, pos)
        tag = group << 16 | elem
        pos += 8
        if tag == SEQUENCE_DELIMITER:
            return items, pos
        if tag != ITEM:
            raise DicomError(f"unexpected {tag_text(tag)} inside a sequence")
        if item_len == UNDEFINED:
            elements, pos = _read_dataset(buf, pos, limit, implicit, top=False, until_delimiter=True)
        else:
            if pos + item_len > end:
                raise DicomError("sequence item runs past its sequence")
            elements, pos = _read_dataset(buf, pos, pos + item_len, implicit, top=False, until_delimiter=False)
        items.append(elements)
    if length == UNDEFINED:
        raise DicomError("sequence without a delimiter")
    return items, pos


def _skip_encapsulated(buf: bytes | bytearray | mmap.mmap, pos: int, limit: int) -> int:
    """End offset of encapsulated pixel data (items up to the sequence delimiter)."""
    while pos + 8 <= limit:
        group, elem, item_len = _HHL.unpack_from(buf, pos)
        pos += 8
        if (group << 16 | elem) == SEQUENCE_DELIMITER:
            return pos
        if item_len == UNDEFINED:
            raise DicomError("encapsulated fragment of undefined length")
        pos += item_len
    raise DicomError("encapsulated pixel data without a delimiter")


def _read_dataset(
    buf: bytes | bytearray | mmap.mmap, pos: int, end: int, implicit: bool, *, top: bool, until_delimiter: bool
) -> tuple[list[Element], int]:
    elements: list[Element] = []
    append = elements.append
    while pos < end:
        if pos + 8 > end:
            # Trailing padding shorter than an element header is harmless only at the very end.
            if top and not any(buf[pos:end]):
                return elements, end
            raise DicomError("truncated element header")
        if implicit:
            group, elem, length = _HHL.unpack_from(buf, pos)
            tag = group << 16 | elem
            if tag == ITEM_DELIMITER:
                return elements, pos + 8
            vr = "SQ" if length == UNDEFINED and tag not in BULK_TAGS else dictionary_vr(tag)
            vpos = pos + 8
        else:
            group, elem, raw_vr, length = _EXPLICIT_SHORT.unpack_from(buf, pos)
            tag = group << 16 | elem
            if tag == ITEM_DELIMITER:
                return elements, pos + 8
            try:
                vr = raw_vr.decode("ascii")
            except UnicodeDecodeError:
                raise DicomError(f"invalid VR at {tag_text(tag)}") from None
            if vr in LONG_VRS:
                if pos + 12 > end:
                    raise DicomError("truncated element header")
                length = _L.unpack_from(buf, pos + 8)[0]
                vpos = pos + 12
            elif vr in KNOWN_VRS:
                vpos = pos + 8
            else:
                raise DicomError(f"invalid VR {vr!r} at {tag_text(tag)}")
        if top and tag in BULK_TAGS:
            if length == UNDEFINED:
                stop = _skip_encapsulated(buf, vpos, end)
            else:
                stop = vpos + length
                if stop > end:
                    raise DicomError("pixel data runs past the end of the file (truncated?)")
            append(Element(tag, vr, span=(pos, stop)))
            pos = stop
            continue
        if vr == "SQ" or (vr == "UN" and (length == UNDEFINED or (not group & 1 and dictionary_vr(tag) == "SQ"))):
            # An undefined-length UN is a sequence encoded implicitly (PS3.5 6.2.2).
            items, pos = _read_items(buf, vpos, length, implicit or vr == "UN", end)
            append(Element(tag, "SQ", items=items))
            continue
        if length == UNDEFINED:
            if tag not in BULK_TAGS:
                raise DicomError(f"undefined length on {tag_text(tag)} ({vr})")
            # Encapsulated pixels inside an item (e.g. an icon image): kept as raw bytes.
            pos = _skip_encapsulated(buf, vpos, end)
            append(Element(tag, vr, buf[vpos:pos]))
            continue
        pos = vpos + length
        if pos > end:
            raise DicomError(f"{tag_text(tag)} runs past the end of the data")
        append(Element(tag, vr, buf[vpos:pos]))
    if until_delimiter:
        raise DicomError("item without a delimiter")
    return elements, pos


def _looks_explicit(buf: bytes | mmap.mmap, pos: int) -> bool:
    return bytes(buf[pos + 4 : pos + 6]).decode("latin-1") in KNOWN_VRS


HEAD_BYTES = 1 << 15  # enough for most headers; larger ones are re-read whole


def parse_file(path: Path, elements: bool = True) -> ParsedFile:
    """Parse ``path``'s meta and (unless ``elements`` is False) its data set. Raises DicomError."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return parse_fd(fd, whole=True, elements=elements)
    finally:
        os.close(fd)


def parse_fd(fd: int, *, whole: bool, elements: bool = False, scratch: bytearray | None = None) -> ParsedFile:
    """Parse an open file: its first HEAD_BYTES only, or (``whole``) all of it, memory-mapped.

    ``scratch`` (HEAD_BYTES long) is reused for the head of a large file instead of a new
    buffer: a fresh 32 KiB allocation costs several times what reading into warm memory
    does. The result then refers to ``scratch``, so it is valid until the next call.
    """
    size = os.fstat(fd).st_size
    if size < 12:
        raise DicomError("empty or too short to be DICOM")
    buf: bytes | bytearray | mmap.mmap
    if whole:
        buf = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    elif scratch is not None and size >= len(scratch) == HEAD_BYTES:
        n = os.preadv(fd, [scratch], 0)
        buf = scratch if n == HEAD_BYTES else bytes(scratch[:n])
    else:
        buf = os.pread(fd, HEAD_BYTES, 0)
    parsed = parse_buffer(buf, size, elements and whole)
    if parsed.transfer_syntax == DEFLATED_LE and not whole and len(buf) < size:
        return parse_fd(fd, whole=True, elements=elements)
    return parsed


def parse_buffer(buf: bytes | mmap.mmap, file_size: int, elements: bool = True) -> ParsedFile:
    """Parse meta (and data set) from ``buf``, which holds the first bytes of a ``file_size``-byte file."""
    meta: list[Element] = []
    size = len(buf)
    if size >= 132 and buf[128:132] == b"DICM":
        pos = 132
        while pos + 8 <= size and _H.unpack_from(buf, pos)[0] == 0x0002:
            group, elem, raw_vr, length = _EXPLICIT_SHORT.unpack_from(buf, pos)
            vr = raw_vr.decode("latin-1")
            if vr in LONG_VRS:
                length = _L.unpack_from(buf, pos + 8)[0]
                vpos = pos + 12
            elif vr in KNOWN_VRS:
                vpos = pos + 8
            else:
                raise DicomError("file meta information is not explicit VR")
            if length == UNDEFINED or vpos + length > size:
                raise DicomError("file meta information is truncated")
            meta.append(Element(group << 16 | elem, vr, buf[vpos : vpos + length]))
            pos = vpos + length
        ts = next((e.value for e in meta if e.tag == 0x00020010), b"").rstrip(b"\0 ").decode("ascii", "replace")
        if not ts:
            ts = EXPLICIT_LE if pos + 8 <= size and _looks_explicit(buf, pos) else IMPLICIT_LE
    else:
        # No preamble: accept only what plainly starts like a data set.
        pos = 0
        group = _H.unpack_from(buf, 0)[0]
        if group not in (0x0002, 0x0008):
            raise DicomError("not a DICOM file (no DICM marker)")
        ts = EXPLICIT_LE if _looks_explicit(buf, 0) else IMPLICIT_LE
        if group == 0x0002:
            raise DicomError("file meta information without a preamble")
    if ts == EXPLICIT_BE:
        raise DicomError("explicit VR big endian (retired) is not supported")
    spans_in_file = True
    if ts == DEFLATED_LE:
        try:
            buf = zlib.decompress(bytes(buf[pos:]), -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise DicomError(f"deflated data set does not inflate: {exc}") from None
        pos, size, file_size, spans_in_file = 0, len(buf), len(buf), False
    if pos + 8 > size:
        raise DicomError("no data set after the file meta information")
    found: list[Element] = []
    if elements:
        found, _ = _read_dataset(buf, pos, size, ts == IMPLICIT_LE, top=True, until_delimiter=False)
    return ParsedFile(
        meta=meta,
        elements=found,
        transfer_syntax=ts,
        buffer=buf,
        start=pos,
        file_size=file_size,
        spans_in_file=spans_in_file,
    )


# ---------------------------------------------------------------- writing


def _encode_into(out: bytearray, elements: list[Element], implicit: bool) -> None:
    for e in elements:
        group, elem = e.tag >> 16, e.tag & 0xFFFF
        if e.items is not None:
            if implicit:
                out += _HHL.pack(group, elem, UNDEFINED)
            else:
                out += _EXPLICIT_LONG.pack(group, elem, b"SQ", UNDEFINED)
            for item in e.items:
                out += _HHL.pack(0xFFFE, 0xE000, UNDEFINED)
                _encode_into(out, item, implicit)
                out += _HHL.pack(0xFFFE, 0xE00D, 0)
            out += _HHL.pack(0xFFFE, 0xE0DD, 0)
            continue
        if e.span is not None:
            raise DicomError("bulk data is only allowed at the top level")
        value = e.value
        if len(value) & 1:
            value = value + (b"\0" if e.vr in ("UI", "OB", "UN") else b" ")
        n = len(value)
        if implicit:
            out += _HHL.pack(group, elem, n)
        elif e.vr in LONG_VRS:
            out += _EXPLICIT_LONG.pack(group, elem, e.vr.encode(), n)
        elif n <= 0xFFFF:
            out += _EXPLICIT_SHORT.pack(group, elem, e.vr.encode(), n)
        else:
            out += _EXPLICIT_LONG.pack(group, elem, b"UN", n)
        out += value


def encode_elements(elements: list[Element], implicit: bool) -> bytes:
    out = bytearray()
    _encode_into(out, elements, implicit)
    return bytes(out)


def encode_meta(meta: list[Element]) -> bytes:
    body = encode_elements(meta, implicit=False)
    group_length = _EXPLICIT_SHORT.pack(0x0002, 0x0000, b"UL", 4) + _L.pack(len(body))
    return b"\0" * 128 + b"DICM" + group_length + body


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy_range(src_fd: int, dst_fd: int, start: int, end: int) -> None:
    offset, remaining = start, end - start
    try:
        while remaining:
            n = os.copy_file_range(src_fd, dst_fd, remaining, offset)
            if n == 0:
                raise DicomError("source file shrank while being copied")
            offset += n
            remaining -= n
    except OSError:
        # Filesystems without copy_file_range: fall back to an ordinary copy.
        while remaining:
            chunk = os.pread(src_fd, min(remaining, 1 << 20), offset)
            if not chunk:
                raise DicomError("source file shrank while being copied") from None
            _write_all(dst_fd, chunk)
            offset += len(chunk)
            remaining -= len(chunk)


def write_pieces(
    dst_fd: int,
    parsed: ParsedFile,
    meta: bytes,
    pieces: list[bytearray | tuple[int, int]],
    src_fd: int,
) -> None:
    """Write meta + data set pieces to ``dst_fd``; ``(start, end)`` pieces are copied from the source."""
    if parsed.transfer_syntax == DEFLATED_LE:
        body = b"".join(bytes(parsed.buffer[p[0] : p[1]]) if isinstance(p, tuple) else bytes(p) for p in pieces)
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        _write_all(dst_fd, meta + compressor.compress(body) + compressor.flush())
        return
    pending = bytearray(meta)
    for piece in pieces:
        if not isinstance(piece, tuple):
            pending += piece
            continue
        start, end = piece
        if parsed.spans_in_file:
            _write_all(dst_fd, pending)
            pending = bytearray()
            _copy_range(src_fd, dst_fd, start, end)
        else:
            pending += parsed.buffer[start:end]
    _write_all(dst_fd, pending)
