"""Apply a resolved profile to a parsed header.

Per attribute: X drops it, Z empties it, D writes a dummy, U maps each UID
through the keyed pseudonymizer, C cleans (dates shifted per patient, text
stripped of the file's own identifying values), K and unlisted attributes are
kept. Sequences: X/Z/D act on the whole sequence (D leaves one empty item, since
the items' own attributes, e.g. Text Value or Code Meaning, are not all in the
table); K, C, U* and unlisted sequences are kept and their items processed with
the same rules, so nesting depth never lets a value through.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from lightbox.sandbox.deid.dicomio import Element
from lightbox.sandbox.deid.profile import Profile
from lightbox.sandbox.deid.pseudonyms import Pseudonymizer
from lightbox.sandbox.deid.safe_private import SafePrivateList
from lightbox.sandbox.deid.values import (
    DATE_VRS,
    TEXT_VRS,
    Scrubber,
    dummy_for,
    identifying_terms,
    map_uids,
    shift_dates,
)

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


def patient_identity(elements: list[Element]) -> str:
    """What makes two files the same patient: the ID, else name and birth date."""
    pid = find_text(elements, PATIENT_ID)
    if pid:
        return "id:" + pid
    return "name:" + find_text(elements, PATIENT_NAME) + "\0" + find_text(elements, PATIENT_BIRTH_DATE)


def burned_in_reason(elements: list[Element]) -> str | None:
    """Why this file may carry burned-in text in its pixels, or None."""
    flag = find_text(elements, BURNED_IN_ANNOTATION).upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES"
    if flag == "NO":
        return None
    sop_class = find_text(elements, SOP_CLASS_UID)
    if sop_class in US_SOP_CLASSES or find_text(elements, MODALITY).upper() == "US":
        return "ultrasound image without BurnedInAnnotation NO (ultrasound usually carries burned-in text)"
    if sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
        return "secondary capture without BurnedInAnnotation NO (screen captures usually carry burned-in text)"
    return None


def _is_curve(group: int) -> bool:
    return 0x5000 <= group <= 0x501E and not group & 1


def _is_overlay(group: int) -> bool:
    return 0x6000 <= group <= 0x601E and not group & 1


@dataclass(slots=True)
class _FileState:
    settings: Settings
    top: list[Element]
    identity: str
    patient_pseudonym: str
    shift_days: int
    _scrubber: Scrubber | None = field(default=None)

    @property
    def scrubber(self) -> Scrubber:
        # Built only when some attribute is actually cleaned: collecting terms walks the whole header.
        if self._scrubber is None:
            terms: list[str] = []
            _collect_terms(self.top, self.settings.profile, terms, removing=False)
            self._scrubber = Scrubber.build(terms)
        return self._scrubber


def _collect_terms(elements: list[Element], profile: Profile, terms: list[str], removing: bool) -> None:
    for e in elements:
        group = e.tag >> 16
        if group & 1 or _is_curve(group) or _is_overlay(group):
            gone = True
        else:
            rule = profile.rules.get(e.tag)
            gone = removing or (rule is not None and rule.action in ("X", "Z", "D"))
        if e.items is not None:
            for item in e.items:
                _collect_terms(item, profile, terms, gone)
        elif gone and (e.vr in TEXT_VRS or e.vr in DATE_VRS):
            terms.extend(identifying_terms(e.vr, e.value))


def _clean(e: Element, state: _FileState) -> Element:
    if e.items is not None:
        return Element(e.tag, "SQ", items=[_dataset(item, state, in_clean=True) for item in e.items])
    if e.vr in DATE_VRS:
        if state.settings.profile.has("retainLongitudinalModifiedDates"):
            return Element(e.tag, e.vr, shift_dates(e.value, e.vr, state.shift_days))
        return Element(e.tag, e.vr, state.scrubber.clean(e.value))
    if e.vr in TEXT_VRS:
        return Element(e.tag, e.vr, state.scrubber.clean(e.value))
    return e


def _apply(e: Element, action: str | None, state: _FileState, in_clean: bool) -> Element | None:
    if action is None or action == "K":
        if e.items is not None:
            return Element(e.tag, "SQ", items=[_dataset(item, state, in_clean) for item in e.items])
        if in_clean and action is None and e.vr in TEXT_VRS:
            return Element(e.tag, e.vr, state.scrubber.clean(e.value))
        return e
    if action == "X":
        return None
    if action == "C":
        return _clean(e, state)
    if action == "U*":
        if e.items is not None:
            return Element(e.tag, "SQ", items=[_dataset(item, state, in_clean) for item in e.items])
        action = "U"
    if e.items is not None:
        return Element(e.tag, "SQ", items=[] if action == "Z" else [[]])
    if e.tag in PSEUDONYM_TAGS and action in ("Z", "D"):
        return Element(e.tag, e.vr, state.patient_pseudonym.encode())
    if action == "Z":
        return Element(e.tag, e.vr, b"")
    if action == "U" or e.vr == "UI":
        return Element(e.tag, e.vr, map_uids(e.value, state.settings.pseudonymizer.uid) if e.value.strip(b" \0") else b"")
    return Element(e.tag, e.vr, dummy_for(e.vr))


def _private(elements: list[Element], state: _FileState, in_clean: bool) -> dict[int, Element | None]:
    """Decide every private element of one data set: kept (processed) or dropped (None)."""
    decided: dict[int, Element | None] = {}
    settings = state.settings
    keep_safe = settings.profile.private_action == "C"
    creators: dict[tuple[int, int], str] = {}
    kept_blocks: set[tuple[int, int]] = set()
    for e in elements:
        group, elem = e.tag >> 16, e.tag & 0xFFFF
        if not group & 1:
            continue
        decided[e.tag] = None
        if not keep_safe or group <= 0x0007 or group == 0xFFFF:
            continue
        if 0x0010 <= elem <= 0x00FF and e.items is None:
            creators[(group, elem)] = text(e.value)
        elif elem >= 0x1000:
            creator = creators.get((group, elem >> 8))
            if creator is not None and settings.safe_private.allows(creator, group, elem):
                kept_blocks.add((group, elem >> 8))
                decided[e.tag] = _apply(e, "K", state, in_clean)
    for group, block in kept_blocks:
        tag = group << 16 | block
        decided[tag] = next(e for e in elements if e.tag == tag)
    return decided


def _dataset(elements: list[Element], state: _FileState, in_clean: bool) -> list[Element]:
    profile = state.settings.profile
    private: dict[int, Element | None] | None = None
    out: list[Element] = []
    for e in elements:
        tag = e.tag
        group = tag >> 16
        if group & 1:
            if private is None:
                private = _private(elements, state, in_clean)
            kept = private.get(tag)
            if kept is not None:
                out.append(kept)
            continue
        if tag & 0xFFFF == 0 or e.span is not None:
            # Group lengths would be wrong after editing (and are retired); bulk data streams through.
            if e.span is not None:
                out.append(e)
            continue
        if _is_curve(group):
            action: str | None = profile.curve_action
        elif _is_overlay(group):
            action = profile.overlay_action
        else:
            rule = profile.rules.get(tag)
            action = rule.action if rule is not None else None
        result = _apply(e, action, state, in_clean)
        if result is not None:
            out.append(result)
    return out


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


def deidentify_elements(elements: list[Element], settings: Settings) -> list[Element]:
    """The de-identified top-level data set, with the profile's own attributes added."""
    identity = patient_identity(elements)
    pseudo = settings.pseudonymizer
    state = _FileState(
        settings=settings,
        top=elements,
        identity=identity,
        patient_pseudonym=pseudo.patient_id(identity),
        shift_days=pseudo.date_shift_days(identity),
    )
    out = _dataset(elements, state, in_clean=False)
    added = method_elements(settings.profile)
    replaced = {e.tag for e in added}
    out = [e for e in out if e.tag not in replaced] + added
    out.sort(key=lambda e: e.tag)
    return out


def file_meta(elements: list[Element], original_meta: list[Element], transfer_syntax: str) -> list[Element]:
    """Fresh file meta: nothing from the source's AE titles or implementation survives."""
    sop_class = find_text(elements, SOP_CLASS_UID) or find_text(original_meta, 0x00020002)
    sop_instance = find_text(elements, SOP_INSTANCE_UID)
    return [
        Element(0x00020001, "OB", b"\0\1"),
        Element(0x00020002, "UI", sop_class.encode()),
        Element(0x00020003, "UI", sop_instance.encode()),
        Element(0x00020010, "UI", transfer_syntax.encode()),
        Element(0x00020012, "UI", IMPLEMENTATION_CLASS_UID.encode()),
        Element(0x00020013, "SH", IMPLEMENTATION_VERSION),
    ]
