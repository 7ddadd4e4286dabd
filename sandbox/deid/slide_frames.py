"""Compressed frames of DICOM slide and photograph instances: metadata segments taken out of
each frame without decoding it.

A whole-slide scanner or a camera writes JPEG frames with its own headers, and a DICOM
encapsulation copies them whole: an EXIF APP1 (dates, the device's serial number, a
thumbnail of the picture), a COM comment (a barcode read off the label, an operator's
note), an XMP packet, or bytes after the end-of-image marker. No Annex E rule reaches
inside the pixel data, so for the instances whose frames come from such devices (VL
microscopy and whole-slide, VL photographic and ophthalmic photography: every VL image
class, and modalities SM, GM, XC, OP), each frame is walked with
:mod:`slide_codestreams`: COM and APPn go (JFIF APP0 and Adobe APP14 of the standard size
stay, a decoder needs their colour information), as do JPEG 2000 main-header comments.
The entropy-coded data is copied as it is.

When nothing is removed the pixel data stays one range of the source file (the kernel
copies it). Otherwise the new pixel data is written as ranges of the source (what each
frame keeps), one fragment per frame, with new item lengths, a new Basic Offset Table
when the source had one (PS3.5 A.4), and the NUL padding odd lengths need. Memory holds
one frame at a time.

What cannot be walked is refused, naming the frame and why: a frame whose markers cannot
be followed, fragments that cannot be assigned to frames, an offset table that points
between fragments, an Extended Offset Table that would have to change (it is not
rewritten), or a compression whose headers this module cannot read.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from lightbox.sandbox.deid.dicomio import Element, ParsedFile
from lightbox.sandbox.deid.slide_codestreams import CodestreamError, Kept, j2k_kept, jpeg_kept

PIXEL_DATA = 0x7FE00010
EXTENDED_OFFSET_TABLE = 0x7FE00001
NUMBER_OF_FRAMES = 0x00280008
ITEM, SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
_HHL = struct.Struct("<HHL")
_L = struct.Struct("<L")

VL_IMAGE_ROOT = "1.2.840.10008.5.1.4.1.1.77.1"  # every VL image storage class (PS3.4 B.5)
CAMERA_MODALITIES = ("SM", "GM", "XC", "OP")

# Transfer syntaxes (PS3.5 Table A-1 and 8-1) by how their frames are walked.
JPEG = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                  "1.2.840.10008.1.2.4.70"})
JPEG_LS = frozenset({"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})
JPEG_2000 = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
                       "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"})
# Encapsulated, but with no header that could carry text: RLE (a 64-byte table of offsets),
# encapsulated uncompressed, deflated image frames.
NO_HEADERS = frozenset({"1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1.98", "1.2.840.10008.1.2.8.1"})
NATIVE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"})

Reader = Callable[[int, int], bytes]
# One frame is held in memory while it is walked: a larger one is refused, as a slide TIFF's
# tile is (a whole-slide tile is well under 1 MiB, a camera's JPEG a few MiB).
MAX_FRAME_BYTES = 64 << 20


class FrameError(ValueError):
    """The frames cannot be walked; the message names the frame and why, never a value."""


@dataclass(frozen=True, slots=True)
class Encapsulated:
    """Encapsulated pixel data as found: where each fragment's value is, the offset table."""

    header: bytes  # the PixelData element header, copied as it is
    table: list[int]  # Basic Offset Table, empty when the source has none
    fragments: list[tuple[int, int]]  # (offset of the value, length)
    first_item: int  # offset of the first fragment's item header
    end: int  # just after the sequence delimiter


@dataclass(frozen=True, slots=True)
class FramePlan:
    """Each frame's fragments and what of it is kept (ranges of the joined fragments)."""

    frames: list[list[tuple[int, int]]]
    kept: list[Kept]
    sizes: list[int]  # each frame's joined length without its NUL padding

    @property
    def changed(self) -> bool:
        return not all(k.unchanged(n) for k, n in zip(self.kept, self.sizes, strict=True))

    @property
    def removed(self) -> int:
        return sum(k.removed for k in self.kept)

    @property
    def frames_with_metadata(self) -> int:
        return sum(1 for k in self.kept if k.removed)


def applies(sop_class: str, modality: str) -> bool:
    """Whether an instance's frames come from a camera or scanner that writes its own headers."""
    return sop_class.startswith(VL_IMAGE_ROOT) or modality.strip().upper() in CAMERA_MODALITIES


def _walker(transfer_syntax: str) -> Callable[[bytes], Kept] | None:
    """How a frame of this transfer syntax is scrubbed; None when its frames have no headers.
    Raises FrameError for a compression this module cannot read."""
    if transfer_syntax in JPEG:
        return jpeg_kept
    if transfer_syntax in JPEG_LS:
        return lambda data: jpeg_kept(data, ls=True)
    if transfer_syntax in JPEG_2000:
        return j2k_kept
    if transfer_syntax in NO_HEADERS:
        return None
    raise FrameError(
        f"transfer syntax {transfer_syntax}: its frames' headers cannot be checked for metadata "
        "(JPEG, JPEG-LS, JPEG 2000, RLE and uncompressed frames can)"
    )


def read_encapsulated(read: Reader, start: int, stop: int, implicit: bool) -> Encapsulated:
    """The items of the PixelData element whose header begins at ``start`` (within ``stop``)."""
    size = 8 if implicit else 12
    header = read(start, size)
    if len(header) != size or _HHL.unpack_from(header)[0:2] != (0x7FE0, 0x0010):
        raise FrameError("pixel data: not where the data set said")
    if _L.unpack_from(header, size - 4)[0] != UNDEFINED:
        raise FrameError("pixel data: an encapsulated transfer syntax with pixels of defined length")
    pos, items = start + size, list[tuple[int, int]]()
    while True:
        head = read(pos, 8)
        if len(head) != 8 or pos + 8 > stop:
            raise FrameError("pixel data: the fragments run past the end of the data")
        group, elem, length = _HHL.unpack(head)
        tag = group << 16 | elem
        if tag == SEQUENCE_DELIMITER:
            end = pos + 8
            break
        if tag != ITEM or length == UNDEFINED or pos + 8 + length > stop:
            raise FrameError(f"pixel data: item {len(items)} is not a fragment of defined length")
        items.append((pos + 8, length))
        pos += 8 + length
    if not items:
        raise FrameError("pixel data: no Basic Offset Table item")
    (table_at, table_length), fragments = items[0], items[1:]
    if table_length % 4:
        raise FrameError("pixel data: the Basic Offset Table's length is not a multiple of 4")
    raw = read(table_at, table_length)
    table = list(struct.unpack(f"<{table_length // 4}L", raw)) if table_length else []
    first_item = table_at + table_length
    return Encapsulated(header, table, fragments, first_item, end)


def group_frames(pixels: Encapsulated, frames: int) -> list[list[tuple[int, int]]]:
    """The fragments of each frame (PS3.5 A.4): by the offset table, else one per frame, else
    one frame made of all of them."""
    fragments = pixels.fragments
    if pixels.table:
        if len(pixels.table) != frames:
            raise FrameError(f"pixel data: the Basic Offset Table has {len(pixels.table)} entries for {frames} frames")
        starts = {value - 8 - pixels.first_item: i for i, (value, _) in enumerate(fragments)}
        try:
            firsts = [starts[offset] for offset in pixels.table]
        except KeyError:
            raise FrameError("pixel data: the Basic Offset Table points between fragments") from None
        if firsts[0] != 0 or firsts != sorted(set(firsts)):
            raise FrameError("pixel data: the Basic Offset Table is not in frame order from the first fragment")
        bounds = [*firsts, len(fragments)]
        return [fragments[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    if len(fragments) == frames:
        return [[f] for f in fragments]
    if frames == 1 and fragments:
        return [list(fragments)]
    raise FrameError(
        f"pixel data: {len(fragments)} fragments for {frames} frames without an offset table: "
        "the frames cannot be told apart"
    )


def _unpadded(data: bytes) -> bytes:
    """A frame without the one NUL byte that pads an odd-length stream to even (PS3.5 A.4);
    anything else after the end marker stays, for the walk to find and remove."""
    return data[:-1] if data.endswith(b"\xff\xd9\x00") else data


def plan_frames(read: Reader, pixels: Encapsulated, frames: int, transfer_syntax: str) -> FramePlan | None:
    """What each frame keeps; None when the frames have no headers to walk."""
    walk = _walker(transfer_syntax)
    if walk is None:
        return None
    grouped = group_frames(pixels, frames)
    kept, sizes = [], []
    for index, fragments in enumerate(grouped):
        if sum(length for _, length in fragments) > MAX_FRAME_BYTES:
            raise FrameError(f"frame {index + 1} of {len(grouped)}: larger than {MAX_FRAME_BYTES >> 20} MiB")
        data = _unpadded(b"".join(read(offset, length) for offset, length in fragments))
        sizes.append(len(data))
        try:
            kept.append(walk(data))
        except CodestreamError as exc:
            message = str(exc).replace("a JPEG 2000 tile", "it").replace("a JPEG tile", "it")
            raise FrameError(f"frame {index + 1} of {len(grouped)}: {message}") from None
    return FramePlan(grouped, kept, sizes)


def _source_ranges(fragments: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """``[start, end)`` of a frame's joined fragments as ranges of the source."""
    out, base = [], 0
    for offset, length in fragments:
        lo, hi = max(start, base), min(end, base + length)
        if lo < hi:
            out.append((offset + lo - base, offset + hi - base))
        base += length
    return out


def rebuilt_pieces(pixels: Encapsulated, plan: FramePlan) -> list[bytearray | tuple[int, int]]:
    """The new PixelData element as pieces: bytes written here, ``(start, end)`` copied from the source."""
    pieces: list[bytearray | tuple[int, int]] = []
    lengths = [sum(b - a for a, b in kept.ranges) for kept in plan.kept]
    padded = [n + n % 2 for n in lengths]
    table = b""
    if pixels.table:
        offsets, at = [], 0
        for n in padded:
            offsets.append(at)
            at += 8 + n
        if at > 0xFFFFFFFF:
            raise FrameError("pixel data: the frames no longer fit a Basic Offset Table")
        table = struct.pack(f"<{len(offsets)}L", *offsets)
    pending = bytearray(pixels.header) + _HHL.pack(0xFFFE, 0xE000, len(table)) + table
    for fragments, kept, length, size in zip(plan.frames, plan.kept, lengths, padded, strict=True):
        pending += _HHL.pack(0xFFFE, 0xE000, size)
        for a, b in kept.ranges:
            for source in _source_ranges(fragments, a, b):
                pieces.append(pending)
                pieces.append(source)
                pending = bytearray()
        if size != length:
            pending += b"\0"
    pending += _HHL.pack(0xFFFE, 0xE0DD, 0)
    pieces.append(pending)
    return [p for p in pieces if not isinstance(p, bytearray) or p]


@dataclass(frozen=True, slots=True)
class Instance:
    """What the frame scrub needs to know of an instance beside its pixel data."""

    sop_class: str
    modality: str
    transfer_syntax: str
    frames: int
    extended_offset_table: bool
    implicit: bool


def scrub_pieces(
    pieces: list[bytearray | tuple[int, int]], instance: Instance, read: Reader
) -> tuple[list[bytearray | tuple[int, int]], int]:
    """``pieces`` (a rewritten data set, see rewrite.Rewritten) with the PixelData range
    replaced by its scrubbed frames, and how many segments went. Unchanged pieces when no
    frame carries anything. Raises FrameError."""
    if not applies(instance.sop_class, instance.modality) or instance.transfer_syntax in NATIVE:
        return pieces, 0
    for index, piece in enumerate(pieces):
        if not isinstance(piece, tuple) or _HHL.unpack_from(read(piece[0], 8).ljust(8, b"\0"))[0:2] != (0x7FE0, 0x10):
            continue
        pixels = read_encapsulated(read, piece[0], piece[1], instance.implicit)
        plan = plan_frames(read, pixels, instance.frames, instance.transfer_syntax)
        if plan is None or not plan.changed:
            return pieces, 0
        if instance.extended_offset_table:
            raise FrameError(
                f"pixel data: {plan.frames_with_metadata} frame(s) carry metadata segments and the instance has an "
                "Extended Offset Table, which this tool does not rewrite"
            )
        rebuilt = rebuilt_pieces(pixels, plan)
        tail = [(pixels.end, piece[1])] if piece[1] > pixels.end else []
        return [*pieces[:index], *rebuilt, *tail, *pieces[index + 1 :]], plan.removed
    return pieces, 0


def scrub_file(
    parsed: ParsedFile, recorded: dict[int, bytes], fd: int, pieces: list[bytearray | tuple[int, int]]
) -> tuple[list[bytearray | tuple[int, int]], int]:
    """:func:`scrub_pieces` for a file being de-identified (batch.process_file)."""
    from lightbox.sandbox.deid.attributes import MODALITY, SOP_CLASS_UID, text
    from lightbox.sandbox.deid.slide_dicom import scan_header

    sop_class, modality = text(recorded.get(SOP_CLASS_UID)), text(recorded.get(MODALITY))
    if not applies(sop_class, modality) or parsed.transfer_syntax in NATIVE:
        return pieces, 0
    found = scan_header(parsed, fd, (NUMBER_OF_FRAMES, EXTENDED_OFFSET_TABLE))
    instance = Instance(
        sop_class,
        modality,
        parsed.transfer_syntax,
        _frames(text(found.get(NUMBER_OF_FRAMES))),
        bool(found.get(EXTENDED_OFFSET_TABLE)),
        parsed.implicit,
    )
    return scrub_pieces(pieces, instance, reader_for(parsed, fd))


def reader_for(parsed: ParsedFile, fd: int | None) -> Reader:
    """Reads source bytes at the offsets the rewrite's pieces use."""
    if parsed.spans_in_file and fd is not None and len(parsed.buffer) < parsed.file_size:
        return lambda offset, n: os.pread(fd, n, offset)
    buffer = parsed.buffer
    return lambda offset, n: bytes(buffer[offset : offset + n])


def gate_findings(parsed: ParsedFile) -> Counter[tuple[str, int]]:
    """The verification gate's view of a parsed instance's frames: how many frames still carry
    metadata segments (FrameMetadata) or cannot be walked (FrameStructure). Names and counts only."""
    from lightbox.sandbox.deid.attributes import MODALITY, SOP_CLASS_UID, find, find_text

    elements: list[Element] = parsed.elements
    found: Counter[tuple[str, int]] = Counter()
    pixel = find(elements, PIXEL_DATA)
    if pixel is None or pixel.span is None or parsed.transfer_syntax in NATIVE:
        return found
    if not applies(find_text(elements, SOP_CLASS_UID), find_text(elements, MODALITY)):
        return found
    read = reader_for(parsed, None)
    try:
        frames = _frames(find_text(elements, NUMBER_OF_FRAMES))
        pixels = read_encapsulated(read, pixel.span[0], pixel.span[1], parsed.implicit)
        plan = plan_frames(read, pixels, frames, parsed.transfer_syntax)
    except FrameError:
        found[("FrameStructure", PIXEL_DATA)] += 1
        return found
    if plan is not None and plan.frames_with_metadata:
        found[("FrameMetadata", PIXEL_DATA)] += plan.frames_with_metadata
    return found


def _frames(value: str) -> int:
    """NumberOfFrames (IS); 1 when absent. Raises FrameError when it is not a positive number."""
    value = value.strip()
    if not value:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise FrameError("NumberOfFrames is not a positive integer")
    return int(value)
