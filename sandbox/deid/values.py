"""Replacement values: dummies per VR, shifted dates, cleaned text.

Values stay raw bytes in the file's own character set; cleaning works on a
latin-1 view so every byte maps to one character and back unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

TEXT_VRS = frozenset({"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"})
DATE_VRS = frozenset({"DA", "DT"})

DUMMY_TEXT = b"ANONYMIZED"
# D: "a non-zero length value that may be a dummy value and consistent with the VR".
DUMMIES: dict[str, bytes] = {
    "AE": DUMMY_TEXT,
    "AS": b"000Y",
    "AT": b"\0\0\0\0",
    "CS": DUMMY_TEXT,
    "DA": b"19000101",
    "DS": b"0 ",
    "DT": b"19000101000000",
    "IS": b"0 ",
    "LO": DUMMY_TEXT,
    "LT": DUMMY_TEXT,
    "PN": DUMMY_TEXT,
    "SH": DUMMY_TEXT,
    "ST": DUMMY_TEXT,
    "TM": b"000000",
    "UC": DUMMY_TEXT,
    "UR": b"urn:anonymized",
    "UT": DUMMY_TEXT,
    "FL": b"\0" * 4,
    "FD": b"\0" * 8,
    "SL": b"\0" * 4,
    "SS": b"\0" * 2,
    "SV": b"\0" * 8,
    "UL": b"\0" * 4,
    "US": b"\0" * 2,
    "UV": b"\0" * 8,
}
DUMMY_BINARY = b"\0" * 8  # OB OD OF OL OV OW UN


def dummy_for(vr: str) -> bytes:
    return DUMMIES.get(vr, DUMMY_BINARY)


def is_dummy(vr: str, value: bytes) -> bool:
    """Whether ``value`` is one this tool writes for D (verification accepts it)."""
    stripped = value.rstrip(b" \0")
    return stripped == dummy_for(vr).rstrip(b" \0") or stripped == DUMMY_TEXT or not stripped.strip(b"\0 ")


def split_values(value: bytes) -> list[bytes]:
    return value.rstrip(b" \0").split(b"\\")


def map_uids(value: bytes, mapper: Callable[[str], str]) -> bytes:
    uids = [v.strip(b" \0").decode("ascii", "replace") for v in split_values(value)]
    return "\\".join(mapper(u) if u else "" for u in uids).encode("ascii")


def _shift_date(text: str, days: int) -> str:
    """Shift a DA (or the date part of a DT); partial dates keep their precision."""
    from datetime import date, timedelta  # only date shifting needs it: not imported at start-up

    digits = text[:8]
    if not digits.isdigit() or len(digits) not in (4, 6, 8):
        return ""
    year, month, day = int(digits[:4]), int(digits[4:6] or 1), int(digits[6:8] or 1)
    try:
        shifted = date(year, month, day) + timedelta(days=days)
    except (ValueError, OverflowError):
        return ""
    return shifted.strftime("%Y%m%d")[: len(digits)] + text[len(digits) :]


def shift_dates(value: bytes, vr: str, days: int) -> bytes:
    """Shift every date in a DA/DT value (multi-valued and ranges too); unparseable -> empty."""
    out: list[str] = []
    for part in split_values(value):
        text = part.decode("ascii", "replace").strip()
        if not text:
            out.append("")
            continue
        ends = text.split("-") if vr == "DA" and "-" in text else [text]
        shifted = [(_shift_date(e, days) if e else "") for e in ends]
        if any(e and not s for e, s in zip(ends, shifted, strict=True)):
            return b""
        out.append("-".join(shifted))
    return "\\".join(out).encode("ascii")


# ---------------------------------------------------------------- cleaning

_STOPWORDS = frozenset({"THE", "AND", "FOR", "WITH", "NOT", "NONE", "ANONYMIZED", "UNKNOWN", "YES"})
# Identifying by form, whoever they belong to: dates, long numbers, e-mail addresses.
_GENERIC = re.compile(
    "|".join(
        (
            r"\b(?:19|20)\d{2}[-/.](?:0[1-9]|1[0-2])[-/.](?:0[1-9]|[12]\d|3[01])\b",  # 2024-01-31
            r"\b(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|1[0-2])[-/.](?:19|20)\d{2}\b",  # 31.01.2024, 01/31/2024
            r"\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b",  # 20240131
            r"\d{6,}",  # record and phone numbers
            r"[\w.+-]+@[\w-]+\.[\w.-]+",  # e-mail addresses
        )
    ),
    re.IGNORECASE,
)
# Words: letters (Latin-1 included) and digits; everything else separates.
_SPLIT = re.compile(r"([^0-9A-Za-z\u00c0-\u00ff]+)")
REDACTED = "*"


def identifying_terms(vr: str, value: bytes) -> list[str]:
    """Words of a value the profile removes, to be cleaned out of retained text (upper case)."""
    if vr in DATE_VRS:
        return []  # dates are caught by form
    text = value.decode("latin-1")
    return [t for t in _SPLIT.split(text.upper())[::2] if len(t) >= 3 and t not in _STOPWORDS]


@dataclass(frozen=True, slots=True)
class Scrubber:
    """Removes a file's own identifying words (and dates, long numbers, e-mails) from free text.

    Word lookup in a set rather than one big regular expression: a file may
    remove thousands of values, and compiling them per file would cost more
    than the rest of its de-identification.
    """

    terms: frozenset[str]

    @classmethod
    def build(cls, terms: Iterable[str]) -> Scrubber:
        return cls(frozenset(terms))

    def clean(self, value: bytes) -> bytes:
        original = value.decode("latin-1")
        text = _GENERIC.sub(REDACTED, original)
        parts = _SPLIT.split(text)
        for k in range(0, len(parts), 2):
            if parts[k].upper() in self.terms:
                parts[k] = REDACTED
        cleaned = "".join(parts)
        return value if cleaned == original else cleaned.encode("latin-1")
