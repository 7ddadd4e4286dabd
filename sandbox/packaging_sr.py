"""A classification score from a vendor's DICOM Structured Report (a MONAI Application Package's
result), read as hostile data.

Accepted: Basic Text, Enhanced, Comprehensive and Comprehensive 3D SR documents whose content
tree holds a NUM content item (TID 1500 measurement reports nest them in containers; a simple
document holds one at the root) named after the positive label (Concept Name's Code Meaning,
case-insensitive), or exactly one NUM item in all; its Numeric Value is the score. Refused, with
the reason: other SOP classes, documents for another study than the case's, documents without
such an item, TEXT or CODE only (free text is never parsed: the scorer takes numbers only).
"""

from __future__ import annotations

import io
import math
from typing import Any

from lightbox.sandbox.safeio import Unreadable

SR_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
}
MAX_SR_BYTES = 4 << 20
MAX_CONTENT_ITEMS = 10000
MAX_CONTENT_DEPTH = 16
_WHAT = "a DICOM SR result"


def _meaning(item: Any) -> str:
    codes = item.get("ConceptNameCodeSequence") or []
    return str(codes[0].get("CodeMeaning", "")) if len(codes) else ""


def _num_items(root: Any) -> list[tuple[str, Any]]:
    """(concept name, item) of every NUM item, walked without recursion and bounded."""
    found: list[tuple[str, Any]] = []
    stack = [(item, 1) for item in (root.get("ContentSequence") or [])]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > MAX_CONTENT_ITEMS or depth > MAX_CONTENT_DEPTH:
            raise Unreadable(
                f"{_WHAT} has more than {MAX_CONTENT_ITEMS} content items or is nested deeper than {MAX_CONTENT_DEPTH}"
            )
        if str(item.get("ValueType", "")) == "NUM":
            found.append((_meaning(item).strip().lower(), item))
        stack.extend((child, depth + 1) for child in (item.get("ContentSequence") or []))
    return found


def sr_score(data: bytes, positive: str, study_uid: str | None) -> float:
    """The positive label's score in an SR; ``study_uid``: the case's study, which the SR must be about."""
    import pydicom

    if len(data) > MAX_SR_BYTES:
        raise Unreadable(f"{_WHAT} is larger than {MAX_SR_BYTES >> 20} MiB")
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        sop_class = str(ds.get("SOPClassUID", ""))
        study = str(ds.get("StudyInstanceUID", ""))
        if sop_class not in SR_SOP_CLASSES:
            raise Unreadable(f"{_WHAT} is not one of {', '.join(SR_SOP_CLASSES.values())}")
        if study_uid is not None and study != study_uid:
            raise Unreadable(f"{_WHAT} is about another study than the case's input")
        items = _num_items(ds)
        value_items = [(name, item) for name, item in items if name == positive.strip().lower()] or (
            items if len(items) == 1 else []
        )
        if len(value_items) != 1:
            raise Unreadable(
                f"{_WHAT} holds no single NUM content item named after the positive label (or a single NUM item in all); "
                "TEXT and CODE items are not read"
            )
        measured = value_items[0][1].get("MeasuredValueSequence") or []
        value = float(measured[0].NumericValue) if len(measured) else math.nan
    except Unreadable:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever else the vendor's file does wrong, it is unreadable
        raise Unreadable(f"{_WHAT} is not readable DICOM ({type(exc).__name__})") from None
    return value
