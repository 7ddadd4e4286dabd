"""Classification scores and detection findings from a vendor's DICOM Structured Report (a MONAI
Application Package's result), read as hostile data.

Accepted documents: Basic Text, Enhanced, Comprehensive and Comprehensive 3D SR about the case's
study (StudyInstanceUID), at most 4 MiB, 10000 content items and 16 levels deep.

* Classification: a NUM content item named after the positive label (Concept Name's Code
  Meaning, case-insensitive), or exactly one NUM item in all; its Numeric Value is the score.
  TID 1500 measurement reports nest NUM items in containers; a simple document holds one at the root.
* Detection (TID 1500 style): each container holding a SCOORD content item is one finding, and
  must hold exactly one SCOORD of Graphic Type POINT, selected from (a child IMAGE item) an image
  of the case's first series, and one NUM named after the positive label or "probability" (the
  score). SCOORD's (column, row) has its origin at the top-left corner of the top-left pixel
  (PS3.3 C.18.6, Spatial Coordinates Macro), so the contract's pixel index is the value minus 0.5. A document without
  SCOORD items reports no findings.

Refused, with the reason: other SOP classes, documents about another study, TEXT or CODE only
(free text is never parsed: the scorer takes numbers only), ambiguous items, points on images
not in the case's input, other graphic types.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
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
MAX_FINDINGS = 1000  # the contract's findings per case
_WHAT = "a DICOM SR result"


def _meaning(item: Any) -> str:
    codes = item.get("ConceptNameCodeSequence") or []
    return str(codes[0].get("CodeMeaning", "")).strip().lower() if len(codes) else ""


def _children(item: Any) -> list[Any]:
    return list(item.get("ContentSequence") or [])


def _walk(root: Any) -> Iterator[Any]:
    """Every content item, without recursion and bounded in count and depth."""
    stack = [(item, 1) for item in _children(root)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > MAX_CONTENT_ITEMS or depth > MAX_CONTENT_DEPTH:
            raise Unreadable(
                f"{_WHAT} has more than {MAX_CONTENT_ITEMS} content items or is nested deeper than {MAX_CONTENT_DEPTH}"
            )
        yield item
        stack.extend((child, depth + 1) for child in _children(item))


def _is(item: Any, value_type: str) -> bool:
    return str(item.get("ValueType", "")) == value_type


def _number(item: Any) -> float:
    measured = item.get("MeasuredValueSequence") or []
    return float(measured[0].NumericValue) if len(measured) else math.nan


def _document(data: bytes, study_uid: str | None) -> Any:
    import pydicom

    if len(data) > MAX_SR_BYTES:
        raise Unreadable(f"{_WHAT} is larger than {MAX_SR_BYTES >> 20} MiB")
    ds = pydicom.dcmread(io.BytesIO(data))
    if str(ds.get("SOPClassUID", "")) not in SR_SOP_CLASSES:
        raise Unreadable(f"{_WHAT} is not one of {', '.join(SR_SOP_CLASSES.values())}")
    if study_uid is not None and str(ds.get("StudyInstanceUID", "")) != study_uid:
        raise Unreadable(f"{_WHAT} is about another study than the case's input")
    return ds


def _guarded(read: Any) -> Any:
    """``read()``, any failure other than a rule of ours being an unreadable file."""
    try:
        return read()
    except Unreadable:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever else the vendor's file does wrong, it is unreadable
        raise Unreadable(f"{_WHAT} is not readable DICOM ({type(exc).__name__})") from None


def sr_score(data: bytes, positive: str, study_uid: str | None) -> float:
    """The positive label's score in an SR; ``study_uid``: the case's study, which the SR must be about."""

    def read() -> float:
        items = [(_meaning(item), item) for item in _walk(_document(data, study_uid)) if _is(item, "NUM")]
        named = [item for name, item in items if name == positive.strip().lower()]
        chosen = named or ([items[0][1]] if len(items) == 1 else [])
        if len(chosen) != 1:
            raise Unreadable(
                f"{_WHAT} holds no single NUM content item named after the positive label (or a single NUM item in "
                "all); TEXT and CODE items are not read"
            )
        return _number(chosen[0])

    return float(_guarded(read))


def _finding(group: Any, names: set[str], slice_uids: Sequence[str]) -> dict[str, Any]:
    children = _children(group)
    points = [c for c in children if _is(c, "SCOORD")]
    scores = [c for c in children if _is(c, "NUM") and _meaning(c) in names]
    if len(points) != 1 or len(scores) != 1:
        raise Unreadable(
            f"{_WHAT}: a finding's container must hold one SCOORD and one NUM named after the positive label or "
            "probability"
        )
    point = points[0]
    data = [float(v) for v in (point.get("GraphicData") or [])]
    if str(point.get("GraphicType", "")) != "POINT" or len(data) != 2:
        raise Unreadable(f"{_WHAT}: a finding's SCOORD is not a POINT (one column, row pair)")
    images = [c for c in _children(point) if _is(c, "IMAGE")]
    refs = [str(r.get("ReferencedSOPInstanceUID", "")) for i in images for r in (i.get("ReferencedSOPSequence") or [])]
    if len(refs) != 1 or refs[0] not in slice_uids:
        raise Unreadable(f"{_WHAT}: a finding's point is not selected from one image of the case's first series")
    return {
        "location": {"x": data[0] - 0.5, "y": data[1] - 0.5, "slice": list(slice_uids).index(refs[0])},
        "score": _number(scores[0]),
    }


def sr_findings(data: bytes, positive: str, study_uid: str | None, slice_uids: Sequence[str]) -> list[dict[str, Any]]:
    """The contract's findings from an SR's point measurements (``slice_uids``: the case's first
    series in slice order, which places each point's image)."""
    names = {positive.strip().lower(), "probability"}

    def read() -> list[dict[str, Any]]:
        items = list(_walk(_document(data, study_uid)))
        groups = [i for i in items if _is(i, "CONTAINER") and any(_is(c, "SCOORD") for c in _children(i))]
        if len(groups) > MAX_FINDINGS:
            raise Unreadable(f"{_WHAT} holds more than {MAX_FINDINGS} findings")
        findings = [_finding(group, names, slice_uids) for group in groups]
        if sum(_is(i, "SCOORD") for i in items) != len(findings):
            raise Unreadable(f"{_WHAT} holds a SCOORD outside a finding's container")
        return findings

    return list(_guarded(read))
