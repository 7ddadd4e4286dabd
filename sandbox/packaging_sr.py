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
* Detection with SCOORD3D (PS3.3 C.18.9, 3D Spatial Coordinates Macro): a POINT (x, y, z) in
  millimetres in the patient coordinate system of the Frame of Reference the item names, which
  must be the case's. The stage step records the first series' geometry (each slice's
  ImagePositionPatient, the ImageOrientationPatient, PixelSpacing: :func:`slice_geometry`); the
  point is placed on the slice nearest along the slice normal, within half the slice gap, and
  its pixel index is its offset from that slice's first pixel centre along the row and column
  directions over the pixel spacing (PS3.3 C.7.6.2.1.1; no half pixel: ImagePositionPatient is
  the centre of the first pixel).

Refused, with the reason: other SOP classes, documents about another study, TEXT or CODE only
(free text is never parsed: the scorer takes numbers only), ambiguous items, points on images
not in the case's input, other graphic types, SCOORD3D points in another frame of reference or
between slices, or on a case whose series has no geometry.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Mapping, Sequence
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


def _is_point(item: Any) -> bool:
    return _is(item, "SCOORD") or _is(item, "SCOORD3D")


def _finding(
    group: Any, names: set[str], slice_uids: Sequence[str], geometry: Mapping[str, Any] | None
) -> dict[str, Any]:
    children = _children(group)
    points = [c for c in children if _is_point(c)]
    scores = [c for c in children if _is(c, "NUM") and _meaning(c) in names]
    if len(points) != 1 or len(scores) != 1:
        raise Unreadable(
            f"{_WHAT}: a finding's container must hold one SCOORD and one NUM named after the positive label or "
            "probability"
        )
    point = points[0]
    if _is(point, "SCOORD3D"):
        return {"location": _place_3d(point, geometry), "score": _number(scores[0])}
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


def sr_findings(
    data: bytes,
    positive: str,
    study_uid: str | None,
    slice_uids: Sequence[str],
    geometry: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The contract's findings from an SR's point measurements (``slice_uids``: the case's first
    series in slice order, which places each SCOORD point's image; ``geometry``: that series'
    :func:`slice_geometry`, which places each SCOORD3D point)."""
    names = {positive.strip().lower(), "probability"}

    def read() -> list[dict[str, Any]]:
        items = list(_walk(_document(data, study_uid)))
        groups = [i for i in items if _is(i, "CONTAINER") and any(_is_point(c) for c in _children(i))]
        if len(groups) > MAX_FINDINGS:
            raise Unreadable(f"{_WHAT} holds more than {MAX_FINDINGS} findings")
        findings = [_finding(group, names, slice_uids, geometry) for group in groups]
        if sum(_is_point(i) for i in items) != len(findings):
            raise Unreadable(f"{_WHAT} holds a SCOORD outside a finding's container")
        return findings

    return list(_guarded(read))


# --- SCOORD3D: patient coordinates onto the case's slices -------------------------------------


def _vector(values: Any, n: int) -> list[float]:
    out = [float(v) for v in values]
    if len(out) != n or not all(map(math.isfinite, out)):
        raise ValueError("not a finite vector")
    return out


def slice_geometry(datasets: Sequence[Any], slice_gap: float) -> dict[str, Any] | None:
    """What places a patient-coordinate point on the series ``datasets`` (in slice order): its
    Frame of Reference, orientation, pixel spacing and each slice's position; None when a slice
    lacks any of them (a SCOORD3D finding on such a case is then refused)."""
    try:
        frame = str(datasets[0].get("FrameOfReferenceUID", "") or "")
        orientation = _vector(datasets[0].ImageOrientationPatient, 6)
        spacing = _vector(datasets[0].PixelSpacing, 2)
        positions = [_vector(ds.ImagePositionPatient, 3) for ds in datasets]
    except (AttributeError, TypeError, ValueError, IndexError):
        return None
    if not frame or min(spacing) <= 0 or not slice_gap > 0:
        return None
    return {
        "frameOfReferenceUid": frame,
        "orientation": orientation,
        "pixelSpacing": spacing,
        "positions": positions,
        "sliceGap": float(slice_gap),
    }


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _place_3d(point: Any, geometry: Mapping[str, Any] | None) -> dict[str, float]:
    """The contract's (x, y, slice) of a SCOORD3D POINT (see the module's docstring)."""
    if geometry is None:
        raise Unreadable(
            f"{_WHAT}: a finding's SCOORD3D cannot be placed: the case's first series has no patient geometry "
            "(FrameOfReferenceUID, ImagePositionPatient, ImageOrientationPatient, PixelSpacing)"
        )
    data = [float(v) for v in (point.get("GraphicData") or [])]
    if str(point.get("GraphicType", "")) != "POINT" or len(data) != 3 or not all(map(math.isfinite, data)):
        raise Unreadable(f"{_WHAT}: a finding's SCOORD3D is not a POINT (one finite x, y, z)")
    if str(point.get("ReferencedFrameOfReferenceUID", "")) != geometry["frameOfReferenceUid"]:
        raise Unreadable(f"{_WHAT}: a finding's SCOORD3D is not in the frame of reference of the case's images")
    row_dir, col_dir = geometry["orientation"][:3], geometry["orientation"][3:]
    normal = (
        row_dir[1] * col_dir[2] - row_dir[2] * col_dir[1],
        row_dir[2] * col_dir[0] - row_dir[0] * col_dir[2],
        row_dir[0] * col_dir[1] - row_dir[1] * col_dir[0],
    )
    offsets = [[p - o for p, o in zip(data, origin, strict=True)] for origin in geometry["positions"]]
    distances = [abs(_dot(offset, normal)) for offset in offsets]
    index = min(range(len(distances)), key=distances.__getitem__)
    if distances[index] > geometry["sliceGap"] / 2:
        raise Unreadable(f"{_WHAT}: a finding's SCOORD3D point lies on no slice of the case's first series")
    row_spacing, column_spacing = geometry["pixelSpacing"]
    offset = offsets[index]
    return {"x": _dot(offset, row_dir) / column_spacing, "y": _dot(offset, col_dir) / row_spacing, "slice": index}
