"""The attributes de-identification reads and adds around the per-attribute
rewrite: the profile's own attributes (CID 7050 codes), fresh file meta, the
burned-in text check, and the words that cleaning removes from retained text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from lightbox.sandbox.deid.dicomio import Element
from lightbox.sandbox.deid.profile import Profile
from lightbox.sandbox.deid.pseudonyms import Pseudonymizer
from lightbox.sandbox.deid.safe_private import SafePrivateList
from lightbox.sandbox.deid.values import TEXT_VRS, identifying_terms

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
PATIENT_BIRTH_DATE = 0x00100030
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
STUDY_INSTANCE_UID = 0x0020000D
MODALITY = 0x00080060
BURNED_IN_ANNOTATION = 0x00280301
PATIENT_IDENTITY_REMOVED = 0x00120062
DEIDENTIFICATION_METHOD = 0x00120063
DEIDENTIFICATION_METHOD_CODES = 0x00120064
LONGITUDINAL_TEMPORAL_MODIFIED = 0x00280303
CODE_VALUE, CODING_SCHEME, CODE_MEANING = 0x00080100, 0x00080102, 0x00080104

# Attributes that carry the patient pseudonym rather than a generic dummy, so
# the de-identified data still groups by patient.
PSEUDONYM_TAGS = frozenset({PATIENT_NAME, PATIENT_ID})

# CID 7050 "De-identification Method" codes (scheme DCM), per option. Spelled out
# rather than read from pydicom.sr.codedict, whose import alone costs more than
# de-identifying a hundred files; a test checks them against pydicom's copy.
BASIC_CODE = ("113100", "Basic Application Confidentiality Profile")
METHOD_CODES: dict[str, tuple[str, str]] = {
    "retainSafePrivate": ("113111", "Retain Safe Private Option"),
    "retainUIDs": ("113110", "Retain UIDs Option"),
    "retainDeviceIdentity": ("113109", "Retain Device Identity Option"),
    "retainInstitutionIdentity": ("113112", "Retain Institution Identity Option"),
    "retainPatientCharacteristics": ("113108", "Retain Patient Characteristics Option"),
    "retainLongitudinalFullDates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "retainLongitudinalModifiedDates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "cleanDescriptors": ("113105", "Clean Descriptors Option"),
    "cleanStructuredContent": ("113104", "Clean Structured Content Option"),
    "cleanGraphics": ("113103", "Clean Graphics Option"),
}
IMPLEMENTATION_CLASS_UID = "2.25." + str(int.from_bytes(hashlib.sha256(b"lightbox.sandbox.deid").digest()[:16], "big"))
IMPLEMENTATION_VERSION = b"LIGHTBOX_DEID_1"

US_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.6.1",  # US Image
        "1.2.840.10008.5.1.4.1.1.3.1",  # US Multi-frame Image
        "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume
        "1.2.840.10008.5.1.4.1.1.6",  # retired
        "1.2.840.10008.5.1.4.1.1.3",  # retired
    }
)
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"


@dataclass(frozen=True, slots=True)
class Settings:
    profile: Profile
    pseudonymizer: Pseudonymizer
    safe_private: SafePrivateList
    # Encoded Z/D replacements, which depend only on (tag, VR, encoding, action): the same
    # few dozen elements are rebuilt in every file otherwise. Per instance, so per worker.
    encoded: dict[tuple[int, bytes, bool, str], bytes] = field(default_factory=dict, compare=False, repr=False)


def text(value: bytes | None) -> str:
    return "" if value is None else value.decode("latin-1").strip(" \0")


def find(elements: list[Element], tag: int) -> Element | None:
    for e in elements:
        if e.tag == tag:
            return e
        if e.tag > tag:
            return None
    return None


def find_text(elements: list[Element], tag: int) -> str:
    e = find(elements, tag)
    return "" if e is None or e.items is not None else text(e.value)


def burned_in_reason(values: dict[int, bytes]) -> str | None:
    """Why this file may carry burned-in text in its pixels (given its top-level values), or None."""
    flag = text(values.get(BURNED_IN_ANNOTATION)).upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES"
    if flag == "NO":
        return None
    sop_class = text(values.get(SOP_CLASS_UID))
    if sop_class in US_SOP_CLASSES or text(values.get(MODALITY)).upper() == "US":
        return "ultrasound image without BurnedInAnnotation NO (ultrasound usually carries burned-in text)"
    if sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
        return "secondary capture without BurnedInAnnotation NO (screen captures usually carry burned-in text)"
    return None


def is_curve(group: int) -> bool:
    return 0x5000 <= group <= 0x501E and not group & 1


def is_overlay(group: int) -> bool:
    return 0x6000 <= group <= 0x601E and not group & 1


def collect_terms(elements: list[Element], terms: list[str]) -> None:
    """Identifying words of every text value in ``elements`` (which are being removed), nested too."""
    for e in elements:
        if e.items is not None:
            for item in e.items:
                collect_terms(item, terms)
        elif e.vr in TEXT_VRS:
            terms.extend(identifying_terms(e.vr, e.value))


def _code_item(code: tuple[str, str]) -> list[Element]:
    return [
        Element(CODE_VALUE, "SH", code[0].encode()),
        Element(CODING_SCHEME, "SH", b"DCM"),
        Element(CODE_MEANING, "LO", code[1].encode()),
    ]


def method_elements(profile: Profile) -> list[Element]:
    """PatientIdentityRemoved, DeidentificationMethod(+CodeSequence), LongitudinalTemporalInformationModified."""
    chosen = [BASIC_CODE] + [code for option, code in METHOD_CODES.items() if option in profile.options]
    items = [_code_item(c) for c in chosen]
    meanings = b"\\".join(item[2].value for item in items)
    if profile.has("retainLongitudinalModifiedDates"):
        temporal = b"MODIFIED"
    elif profile.has("retainLongitudinalFullDates"):
        temporal = b"UNMODIFIED"
    else:
        temporal = b"REMOVED"
    return [
        Element(PATIENT_IDENTITY_REMOVED, "CS", b"YES"),
        Element(DEIDENTIFICATION_METHOD, "LO", meanings),
        Element(DEIDENTIFICATION_METHOD_CODES, "SQ", items=items),
        Element(LONGITUDINAL_TEMPORAL_MODIFIED, "CS", temporal),
    ]


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str, padding: int = 0) -> list[Element]:
    """Fresh file meta: nothing from the source's AE titles or implementation survives.

    ``padding`` zero bytes go into (0002,0102) Private Information, whose creator is
    this implementation: see :func:`alignment_padding` for why.
    """
    meta = [
        Element(0x00020001, "OB", b"\0\1"),
        Element(0x00020002, "UI", sop_class.encode()),
        Element(0x00020003, "UI", sop_instance.encode()),
        Element(0x00020010, "UI", transfer_syntax.encode()),
        Element(0x00020012, "UI", IMPLEMENTATION_CLASS_UID.encode()),
        Element(0x00020013, "SH", IMPLEMENTATION_VERSION),
    ]
    if padding:
        meta.append(Element(0x00020100, "UI", IMPLEMENTATION_CLASS_UID.encode()))
        meta.append(Element(0x00020102, "OB", bytes(padding)))
    return meta


PAGE = 4096
ALIGN_MIN_BULK = 1 << 16
# Bytes (0002,0100) and the header of (0002,0102) add: 8 + the even-padded UID, then 12.
_PADDING_OVERHEAD = 8 + len(IMPLEMENTATION_CLASS_UID) + (len(IMPLEMENTATION_CLASS_UID) & 1) + 12


def alignment_padding(header_bytes: int, bulk_offset: int, bulk_bytes: int) -> int:
    """Zero bytes to add to the meta so the pixel data keeps its offset within a page.

    The kernel copies a file range page by page; when source and destination
    offsets differ within the page, every page is copied in two pieces, which
    costs noticeably more than the header rewrite itself. Only worth it for
    large bulk data.
    """
    if bulk_bytes < ALIGN_MIN_BULK:
        return 0
    gap = (bulk_offset - header_bytes) % PAGE
    while gap < _PADDING_OVERHEAD:
        gap += PAGE
    return gap - _PADDING_OVERHEAD
