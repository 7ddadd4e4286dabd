"""PS3.15 Table E.1-1, loaded from the packaged JSON and resolved for a set of options.

The table is data (``confidentiality_profile_attributes.json``, copied unchanged
from the shared folder); this module only decides, per attribute, which single
action applies once the options are chosen:

* an option column's action replaces the basic one when that option is on;
  when two chosen options disagree, K (retain) beats C (clean), because every
  retain option is an explicit request to keep;
* combined codes are resolved without the IOD's attribute types, which this
  tool does not know, by taking the alternative that is valid for every type:
  X/Z -> Z, X/D, Z/D and X/Z/D -> D. X/Z/U* (reference sequences) keeps the
  sequence and replaces the instance UIDs inside it (action ``U*``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

TABLE_FILE = "confidentiality_profile_attributes.json"

# Option name (lightbox.api.run.DeidOption; a test keeps the two equal) -> column
# of the table. Not imported from the API: that pulls in pydantic, which costs
# more start-up time than de-identifying a few hundred files.
OPTION_COLUMNS: dict[str, str] = {
    "retainSafePrivate": "rtnSafePrivOpt",
    "retainUIDs": "rtnUIDsOpt",
    "retainDeviceIdentity": "rtnDevIdOpt",
    "retainInstitutionIdentity": "rtnInstIdOpt",
    "retainPatientCharacteristics": "rtnPatCharsOpt",
    "retainLongitudinalFullDates": "rtnLongFullDatesOpt",
    "retainLongitudinalModifiedDates": "rtnLongModifDatesOpt",
    "cleanDescriptors": "cleanDescOpt",
    "cleanStructuredContent": "cleanStructContOpt",
    "cleanGraphics": "cleanGraphOpt",
}

OPTIONS: tuple[str, ...] = tuple(OPTION_COLUMNS)

_COMBINED = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U*"}

# Wildcard rows, keyed by the ``id`` the table gives them.
CURVE_ID = "50xxxxxx"
OVERLAY_DATA_ID = "60xx3000"
OVERLAY_COMMENTS_ID = "60xx4000"
PRIVATE_ID = "ggggeeee-where-gggg-is-odd"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    action: str  # one of X Z D U U* C K


@dataclass(frozen=True, slots=True)
class Profile:
    """The table resolved for one set of options."""

    options: frozenset[str]
    rules: dict[int, Rule]
    curve_action: str
    overlay_action: str
    private_action: str
    cleans: bool  # some attribute's action is C

    def __reduce__(self) -> tuple[object, tuple[tuple[str, ...]]]:
        # Workers rebuild the profile from its options (cached per process) rather than
        # unpickling hundreds of rules with every chunk of files.
        return (compile_profile, (tuple(sorted(self.options)),))

    def rule(self, tag: int) -> Rule | None:
        return self.rules.get(tag)

    def has(self, option: str) -> bool:
        return option in self.options


@lru_cache(maxsize=1)
def load_table() -> tuple[dict[str, str], ...]:
    """The table's rows (read once; treat as read-only)."""
    # Read beside this module (importlib.resources costs more start-up time than the read).
    text = Path(__file__).with_name(TABLE_FILE).read_text(encoding="utf-8")
    return tuple(json.loads(text))


def validate_options(options: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(options)
    unknown = sorted(chosen - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown de-identification option(s): {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    if {"retainLongitudinalFullDates", "retainLongitudinalModifiedDates"} <= chosen:
        raise ValueError("retainLongitudinalFullDates and retainLongitudinalModifiedDates exclude each other")
    return chosen


def resolve_action(row: dict[str, str], options: frozenset[str]) -> str:
    return _resolve(row["basicProfile"], tuple((o, row[c]) for o, c in OPTION_COLUMNS.items() if c in row), options)


def _resolve(basic: str, overrides: tuple[tuple[str, str], ...], options: frozenset[str]) -> str:
    chosen = {action for option, action in overrides if option in options}
    if "K" in chosen:
        return "K"
    if "C" in chosen:
        return "C"
    return _COMBINED.get(basic, basic)


@lru_cache(maxsize=1)
def _rows() -> tuple[tuple[int | None, str, str, str, tuple[tuple[str, str], ...]], ...]:
    """Per row: (tag, or None for wildcard rows), id, name, basic action, (option, action) pairs."""
    rows = []
    for row in load_table():
        text = row["tag"]
        wildcard = "X" in text[1:10] or "G" in text[1:10]
        tag = None if wildcard else int(text[1:5] + text[6:10], 16)
        overrides = tuple((o, row[c]) for o, c in OPTION_COLUMNS.items() if c in row)
        rows.append((tag, row["id"], row["name"], row["basicProfile"], overrides))
    return tuple(rows)


@lru_cache(maxsize=64)
def _compile(options: frozenset[str]) -> Profile:
    rules: dict[int, Rule] = {}
    wildcard: dict[str, str] = {}
    for tag, row_id, name, basic, overrides in _rows():
        action = _resolve(basic, overrides, options) if overrides else _COMBINED.get(basic, basic)
        if tag is None:
            wildcard[row_id] = action
        else:
            rules[tag] = Rule(name, action)
    missing = {CURVE_ID, OVERLAY_DATA_ID, OVERLAY_COMMENTS_ID, PRIVATE_ID} - set(wildcard)
    if missing:
        raise RuntimeError(f"profile table lacks wildcard rows {sorted(missing)}")
    overlay = "C" if "C" in (wildcard[OVERLAY_DATA_ID], wildcard[OVERLAY_COMMENTS_ID]) else "X"
    return Profile(
        options=options,
        rules=rules,
        curve_action=wildcard[CURVE_ID],
        overlay_action=overlay,
        private_action=wildcard[PRIVATE_ID],
        cleans="C" in {r.action for r in rules.values()} | set(wildcard.values()),
    )


def compile_profile(options: Iterable[str] = ()) -> Profile:
    """The profile for ``options`` (validated; compiled once per option set)."""
    return _compile(validate_options(options))
