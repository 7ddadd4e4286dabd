"""DICOM whole-slide images: the label and overview instances are removed, not de-identified.

A VL Whole Slide Microscopy series holds, beside the pyramid's levels (ImageType value 3
VOLUME, or THUMBNAIL), a photograph of the slide's label (LABEL) and one of the whole glass
slide (OVERVIEW). Both show barcodes and handwritten names in their pixels, which no header
rule reaches: the instance goes, with all its frames. So does any instance that says its
pixels show the specimen label (SpecimenLabelInImage YES). The rest of a WSI instance goes
through the Annex E profile like any other (ContainerIdentifier and SpecimenIdentifier get
dummies, the issuer sequences are emptied, SpecimenUID is mapped, descriptions removed...),
and its frames are copied as bytes, never decoded.
"""

from __future__ import annotations

import mmap
from typing import Any

from lightbox.sandbox.deid.attributes import MODALITY, SOP_CLASS_UID, text
from lightbox.sandbox.deid.dicomio import Element, ParsedFile
from lightbox.sandbox.deid.values import split_values

IMAGE_TYPE = 0x00080008
SPECIMEN_LABEL_IN_IMAGE = 0x00480010
VL_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
# VL Endoscopic/Microscopic/Slide-Coordinates/Photographic/WSI... share this root; the slide
# rule applies to the microscopy ones and to any SM/GM instance.
VL_MICROSCOPY = ("1.2.840.10008.5.1.4.1.1.77.1.2", "1.2.840.10008.5.1.4.1.1.77.1.3", VL_WSI)
SLIDE_MODALITIES = ("SM", "GM")
REMOVED_FLAVOURS = {"LABEL": "slide label image", "OVERVIEW": "slide overview (macro) image"}
WANTED = (IMAGE_TYPE, SPECIMEN_LABEL_IN_IMAGE)


def is_slide_instance(sop_class: str, modality: str) -> bool:
    return sop_class.startswith(VL_MICROSCOPY) or modality.upper() in SLIDE_MODALITIES


def removal_reason(sop_class: str, modality: str, image_type: bytes | str, label_in_image: bytes | str) -> str | None:
    """Why a microscopy instance is removed (its pixels show the slide's label), or None."""
    if not is_slide_instance(sop_class, modality):
        return None
    raw = image_type.encode("latin-1") if isinstance(image_type, str) else image_type
    values = [text(v).upper() for v in split_values(raw)]
    if len(values) >= 3 and values[2] in REMOVED_FLAVOURS:
        return f"{REMOVED_FLAVOURS[values[2]]} (ImageType value 3 {values[2]})"
    if sop_class == VL_WSI and (len(values) < 3 or not values[2]):
        # Type 1 in the WSI module: without it a label cannot be told from a level, so deny.
        return "whole-slide image without ImageType value 3 (a label cannot be told from a level)"
    label = label_in_image if isinstance(label_in_image, str) else text(label_in_image)
    if label.strip().upper() == "YES":
        return "the pixels show the specimen label (SpecimenLabelInImage YES)"
    return None


def removal_for(parsed: ParsedFile, recorded: dict[int, bytes], fd: int) -> str | None:
    """:func:`removal_reason` for a file being de-identified; reads the two attributes only
    for microscopy instances."""
    sop_class, modality = text(recorded.get(SOP_CLASS_UID)), text(recorded.get(MODALITY))
    if not is_slide_instance(sop_class, modality):
        return None
    found = scan_header(parsed, fd, WANTED)
    return removal_reason(sop_class, modality, found.get(IMAGE_TYPE, b""), found.get(SPECIMEN_LABEL_IN_IMAGE, b""))


def scan_header(parsed: ParsedFile, fd: int, wanted: tuple[int, ...]) -> dict[int, bytes]:
    """Top-level values of ``wanted`` (a memory map when the header is longer than the read head)."""
    from lightbox.sandbox.deid.rewrite import scan_top_level

    buf: Any = parsed.buffer
    mapped = None
    if parsed.spans_in_file and len(buf) < parsed.file_size:
        buf = mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    try:
        return scan_top_level(buf, parsed.start, len(buf), parsed.implicit, wanted)
    finally:
        if mapped is not None:
            mapped.close()


def gate_finding(elements: list[Element]) -> tuple[str, int] | None:
    """The verification gate's finding for a parsed instance that should have been removed:
    (keyword, tag), never the value."""
    from lightbox.sandbox.deid.attributes import find, find_text

    image_type = find(elements, IMAGE_TYPE)
    raw = image_type.value if image_type is not None and image_type.items is None else b""
    reason = removal_reason(
        find_text(elements, SOP_CLASS_UID),
        find_text(elements, MODALITY),
        bytes(raw),
        find_text(elements, SPECIMEN_LABEL_IN_IMAGE),
    )
    if reason is None:
        return None
    if "LABEL)" in reason:
        return "LabelImage", IMAGE_TYPE
    if "OVERVIEW)" in reason:
        return "OverviewImage", IMAGE_TYPE
    if "without ImageType" in reason:
        return "ImageType", IMAGE_TYPE
    return "SpecimenLabelInImage", SPECIMEN_LABEL_IN_IMAGE
