"""Leak tests: plant a recognisable value in every attribute of Table E.1-1 (top
level, inside a sequence, inside sequences of sequences, in private blocks,
overlays and curves), de-identify under every option combination, and search
the output *bytes* for anything that should not be there.

Every planted value carries its attribute's index in a pattern that a regular
expression finds anywhere in a file (``LK0042X`` for text, a 1931-1935 date for
dates, ``...498.42.77`` for UIDs), so one scan per output lists every survivor.
"""

from __future__ import annotations

import itertools
import re
import warnings
from dataclasses import dataclass
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from lightbox.sandbox.deid.batch import Job, deidentify_bytes, make_settings, process_file
from lightbox.sandbox.deid.profile import OPTIONS, Profile, load_table
from lightbox.sandbox.deid.pseudonyms import Pseudonymizer
from lightbox.sandbox.deid.safe_private import SafePrivateList

FAMILY = "ZYXWVUT"  # the patient's family name: planted in PatientName and inside every text value
NESTED = 1000  # index offset of the copies planted inside a sequence
IN_PRIVATE = 2000  # index offset of the copies planted inside a (safelisted) private sequence
NEST_TAG = 0x00283010  # VOI LUT Sequence: not in the table, so kept and recursed into
SAFE = SafePrivateList(frozenset({("LKSAFE", 0x0019, 0x01), ("LKSAFE", 0x0019, 0x04)}))
TEXT_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"}
BINARY_VRS = {"OB", "OW", "UN", "OD", "OF", "OL", "OV"}
KEY = b"leak-test-key-0123456789abcdef"


def concrete_rows() -> list[tuple[int, str]]:
    rows = []
    for row in load_table():
        text = row["tag"]
        if "X" in text[1:10] or "G" in text[1:10] or text[1:5] in ("0000", "0002"):
            continue
        rows.append((int(text[1:5] + text[6:10], 16), row["name"]))
    return rows


ROWS = concrete_rows()
PATIENT_IDENTITY = "id:" + next(f"LK{i:04d}X {FAMILY}" for i, (tag, _) in enumerate(ROWS) if tag == 0x00100020)


def date_for(i: int) -> str:
    return (date(1931, 1, 1) + timedelta(days=i)).strftime("%Y%m%d")


def value_for(tag: int, vr: str, i: int) -> object:
    marker = f"LK{i:04d}X"
    if tag == 0x00100010:
        return f"{FAMILY}^{marker}"
    if vr in TEXT_VRS:
        return f"{marker} {FAMILY}"
    if vr == "UR":
        return f"http://h.example/{marker}"
    if vr == "DA":
        return date_for(i)
    if vr == "DT":
        return date_for(i) + "101010"
    if vr == "TM":
        return f"101010.9{i:05d}"
    if vr == "UI":
        return f"1.2.826.0.1.3680043.8.498.{i}.77"
    if vr == "DS":
        return f"7777.{i:04d}"
    if vr == "IS":
        return f"+7777{i:04d}"
    if vr == "AS":
        return "087Y"
    if vr in ("US", "SS"):
        return 4242
    if vr in BINARY_VRS:
        return f"LKB{i:04d}X".encode()
    if vr == "SQ":
        item = Dataset()
        item.CodeMeaning = f"LK{i:04d}S {FAMILY}"
        return Sequence([item])
    raise AssertionError(f"no planted value for VR {vr}")


def plant_rows(ds: Dataset, offset: int) -> None:
    for i, (tag, _) in enumerate(ROWS):
        vr = dictionary_VR(tag).split(" or ")[0]
        ds.add_new(tag, vr, value_for(tag, vr, i + offset))


def plant_private(ds: Dataset, base: int, rows_offset: int | None = None) -> None:
    safe = ds.private_block(0x0019, "LKSAFE", create=True)
    safe.add_new(0x01, "LO", f"LK{base + 1:04d}P")  # on the test safelist
    safe.add_new(0x02, "LO", f"LK{base + 2:04d}P {FAMILY}")
    item = Dataset()
    item.PatientName = f"{FAMILY}^LK{base + 3:04d}P"
    safe.add_new(0x03, "SQ", Sequence([item]))
    if rows_offset is not None:
        # A safelisted private sequence: kept under retainSafePrivate, so its items must be rewritten.
        rows = Dataset()
        plant_rows(rows, rows_offset)
        safe.add_new(0x04, "SQ", Sequence([rows]))
    other = ds.private_block(0x0009, "ACME PHI", create=True)
    other.add_new(0x10, "PN", f"{FAMILY}^LK{base + 4:04d}P")


def build_planted(nested: bool = True) -> bytes:
    """CT_small with every row planted at the top level and (``nested``) inside a sequence."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for elem in list(ds):
        if elem.tag.is_private:
            del ds[elem.tag]
    plant_rows(ds, 0)
    plant_private(ds, 9000, IN_PRIVATE if nested else None)
    if nested:
        item = Dataset()
        plant_rows(item, NESTED)
        plant_private(item, 9100)
        ds.add_new(NEST_TAG, "SQ", Sequence([item]))
    # Overlay group 6000 and curve group 5000.
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60001500, "LO", "LK3001G")
    ds.add_new(0x60003000, "OW", b"LKB3000X")
    ds.add_new(0x60004000, "LT", f"LK3002G {FAMILY}")
    ds.add_new(0x50003000, "OB", b"LKB3003X")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@dataclass(frozen=True)
class Planted:
    tag: int
    vr: str
    kind: str  # text, seq, bin, date, time, uid, num
    in_private: bool = False


def planted_index() -> dict[tuple[str, int], Planted]:
    """(kind, index) -> what was planted there, for the table rows at both depths."""
    kinds = {"DA": "date", "DT": "date", "TM": "time", "UI": "uid", "DS": "num", "IS": "num", "SQ": "seq"}
    found = {}
    for offset in (0, NESTED, IN_PRIVATE):
        for i, (tag, _) in enumerate(ROWS):
            vr = dictionary_VR(tag).split(" or ")[0]
            kind = "text" if vr in TEXT_VRS or vr == "UR" else "bin" if vr in BINARY_VRS else kinds.get(vr, "")
            if kind:
                found[(kind, i + offset)] = Planted(tag, vr, kind, offset == IN_PRIVATE)
    return found


PLANTED = planted_index()
# One expression for every kind of marker; the group that matched names the kind.
KINDS = ("text", "seq", "bin", "time", "uid", "num", "private", "graphics")
MARKERS = re.compile(
    rb"LK(\d{4})X|LK(\d{4})S|LKB(\d{4})X|101010\.9(\d{5})|1\.2\.826\.0\.1\.3680043\.8\.498\.(\d+)\.77"
    rb"|(?:7777\.|\+7777)(\d{4})|LK(9\d{3})P|LK(3\d{3})G"
)
DATE_PATTERN = re.compile(rb"(?=(193[1-8]\d{4}))")
DATE_INDEX = {date_for(i).encode(): i for i in range(0, 3 * NESTED)}


def survivors(data: bytes) -> set[tuple[str, int]]:
    found = {(KINDS[m.lastindex - 1], int(m.group(m.lastindex))) for m in MARKERS.finditer(data) if m.lastindex}
    found |= {("date", DATE_INDEX[m]) for m in DATE_PATTERN.findall(data) if m in DATE_INDEX}
    return found


def action(profile: Profile, tag: int) -> str | None:
    rule = profile.rules.get(tag)
    return rule.action if rule is not None else None


def may_survive(profile: Profile, planted: Planted) -> bool:
    """Whether the profile lets this planted value through (kept, or cleaned without removing it)."""
    if planted.in_private and not profile.has("retainSafePrivate"):
        return False
    act = action(profile, planted.tag)
    if planted.kind == "seq":
        return act in (None, "K", "C", "U*")
    if act in (None, "K"):
        return True
    if act == "C":
        # Cleaning keeps text (minus identifying words) and times; dates are shifted away.
        return planted.kind != "date"
    return False


def leaks(data: bytes, profile: Profile) -> list[str]:
    problems = []
    for kind, i in sorted(survivors(data)):
        if kind == "private":
            if not (profile.has("retainSafePrivate") and i in (9001, 9101)):
                problems.append(f"private marker LK{i}P survived")
            continue
        if kind == "graphics" or (kind == "bin" and i >= 3000):
            if not profile.has("cleanGraphics"):
                problems.append(f"overlay/curve marker {i} survived")
            continue
        planted = PLANTED.get((kind, i))
        if planted is None:
            problems.append(f"unknown survivor {kind} {i}")
        elif not may_survive(profile, planted):
            problems.append(
                f"{kind} planted in {planted.tag:08X} (index {i}, action {action(profile, planted.tag)}) survived"
            )
    # The family name may only survive inside a kept text value; cleaning must remove it.
    for m in re.finditer(FAMILY.encode(), data):
        before = data[max(0, m.start() - 8) : m.start()]
        owner = re.fullmatch(rb"LK(\d{4})([XS]) ", before)
        kind = "text" if owner and owner.group(2) == b"X" else "seq"
        planted = PLANTED.get((kind, int(owner.group(1)))) if owner else None
        kept = (None, "K") if kind == "text" else (None, "K", "U*")
        dropped = planted is not None and planted.in_private and not profile.has("retainSafePrivate")
        if planted is None or dropped or action(profile, planted.tag) not in kept:
            problems.append(f"family name survived at byte {m.start()} after {before!r}")
    return problems


def combinations() -> list[tuple[str, ...]]:
    """Every option set the profile accepts (the two longitudinal options exclude each other)."""
    combos = []
    for n in range(len(OPTIONS) + 1):
        for combo in itertools.combinations(OPTIONS, n):
            if not {"retainLongitudinalFullDates", "retainLongitudinalModifiedDates"} <= set(combo):
                combos.append(combo)
    return combos


def key_with_large_shift() -> bytes:
    """A key whose date shift moves every planted date out of the planted range (no false matches)."""
    for n in range(1000):
        key = KEY + str(n).encode()
        if Pseudonymizer(key).date_shift_days(PATIENT_IDENTITY) < -2800:
            return key
    raise AssertionError("no suitable key")


@pytest.fixture(scope="module")
def planted_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("planted") / "planted.dcm"
    path.write_bytes(build_planted())
    return path


@pytest.fixture(scope="module")
def planted_top_level(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("planted") / "top.dcm"
    path.write_bytes(build_planted(nested=False))
    return path


def representative() -> list[tuple[str, ...]]:
    retain = tuple(o for o in OPTIONS if o.startswith("retain") and o != "retainLongitudinalModifiedDates")
    clean = tuple(o for o in OPTIONS if o.startswith("clean"))
    everything = tuple(o for o in OPTIONS if o != "retainLongitudinalFullDates")
    return [(), *((o,) for o in OPTIONS), retain, clean, everything, retain + clean]


def deidentify(src: Path, dst: Path, options: tuple[str, ...], key: bytes) -> bytes:
    job = Job(make_settings(key, options, SAFE), dst, dst.with_name(dst.name + "-q"), allow_burned_in=True)
    outputs = []
    # Twice with the same settings: the second pass takes the cached replacements that every
    # file after the first of a run gets, and must write exactly the same bytes.
    for _ in range(2):
        outcome = process_file(src, job)
        assert outcome.status == "written", outcome
        assert outcome.output is not None
        outputs.append(Path(outcome.output).read_bytes())
    assert outputs[0] == outputs[1]
    return outputs[1]


def test_planting_covers_every_row(planted_file: Path) -> None:
    data = planted_file.read_bytes()
    ds = pydicom.dcmread(planted_file)
    in_private = ds.private_block(0x0019, "LKSAFE")[0x04].value[0]
    for tag, name in ROWS:
        assert tag in ds, name
        assert tag in ds[NEST_TAG][0], name
        assert tag in in_private, name
    # Sanity: the survivors scan sees the planted values in the input.
    assert len(survivors(data)) >= len(PLANTED)
    assert FAMILY.encode() in data


@pytest.mark.parametrize("options", representative(), ids=lambda o: "+".join(o) or "basic")
def test_no_leaks_top_level_nested_private(options: tuple[str, ...], planted_file: Path, tmp_path: Path) -> None:
    key = key_with_large_shift()
    data = deidentify(planted_file, tmp_path / "out", options, key)
    assert leaks(data, make_settings(key, options, SAFE).profile) == []


def test_no_leaks_under_every_option_combination(planted_top_level: Path, tmp_path: Path) -> None:
    # All 768 accepted option sets; the nested copy is covered by the representative sets above,
    # since sequences are rewritten by the same rules as the top level.
    key = key_with_large_shift()
    combos = combinations()
    assert len(combos) == 3 * 2**8
    failures = {}
    planted = planted_top_level.read_bytes()
    for combo in combos:
        settings = make_settings(key, combo, SAFE)
        data = deidentify_bytes(planted, settings)  # the same rewrite as files get, minus the disk
        problems = leaks(data, settings.profile)
        if problems:
            failures[combo] = problems[:5]
    assert not failures, failures


def test_leak_check_catches_a_leak(planted_file: Path) -> None:
    # The checker itself: on the raw input almost everything is a leak.
    problems = leaks(planted_file.read_bytes(), make_settings(KEY, ()).profile)
    assert len(problems) > 1000


def test_kept_and_cleaned_values_do_survive(planted_file: Path, tmp_path: Path) -> None:
    # Guard against a de-identifier that passes by deleting everything.
    key = key_with_large_shift()
    options = (
        "retainDeviceIdentity",
        "retainInstitutionIdentity",
        "retainUIDs",
        "retainSafePrivate",
        "cleanDescriptors",
        "cleanGraphics",
    )
    data = deidentify(planted_file, tmp_path / "out", options, key)
    found = survivors(data)
    profile = make_settings(key, options, SAFE).profile
    expected = {k for k, p in PLANTED.items() if may_survive(profile, p)}
    assert expected <= found
    assert b"LKB3000X" in data and b"LK3002G *" in data  # overlay kept, its comment cleaned
    assert any(PLANTED[k].in_private for k in found if k in PLANTED)  # the safelisted private sequence was kept
