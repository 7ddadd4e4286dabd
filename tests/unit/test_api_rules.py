"""Pure rules behind admission: the cron grammar, sub-path resolution, the control-character set.

The references are independent of the code under test: croniter (the library the
operator schedules with) and crontab(5)'s field ranges for the cron grammar; paths
resolved by hand for sub-paths; Python's unicodedata for control characters.
"""

from __future__ import annotations

import re
import unicodedata

import pytest
from croniter import croniter
from factories import algorithm, dataset, policy, validation

from lightbox.api.common import CONTROL_CHARACTERS_RE2, VolumeLocation
from lightbox.api.subpath import EscapesClaim, normalised, overlap, segments
from lightbox.api.validation import CRON
from lightbox.operator import builders
from lightbox.operator.config import OperatorConfig
from lightbox.text import CONTROL_CHARACTERS

# crontab(5): the values each field takes.
RANGES = {0: range(0, 60), 1: range(0, 24), 2: range(1, 32), 3: range(1, 13), 4: range(0, 8)}
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def _with(field: int, value: str) -> str:
    fields = ["*"] * 5
    fields[field] = value
    return " ".join(fields)


@pytest.mark.parametrize("field", range(5))
def test_cron_values_are_admitted_exactly_within_the_field_range(field):
    for value in range(-1, 100):
        expression = _with(field, str(value))
        admitted = re.fullmatch(CRON, expression) is not None
        assert admitted == (value in RANGES[field]), expression
        if admitted:
            assert croniter.is_valid(expression), expression


@pytest.mark.parametrize("field", range(5))
def test_every_admitted_range_step_and_list_runs_under_croniter(field):
    values = [str(v) for v in RANGES[field]][:: max(1, len(RANGES[field]) // 6)] + ["*"]
    steps = ["", "/1", "/2", "/7", "/0", "/99"]
    admitted = 0
    for low in values:
        for high in ["", *values[:3]]:
            for step in steps:
                item = low if not high or low == "*" else f"{low}-{high}"
                for form in (item + step, f"{item}{step},{values[-2]}"):
                    expression = _with(field, form)
                    if re.fullmatch(CRON, expression):
                        admitted += 1
                        assert croniter.is_valid(expression), expression
                    if step in ("/0", "/99"):
                        assert not re.fullmatch(CRON, expression), expression
    assert admitted > 100


def test_cron_names_and_macros():
    for name in MONTHS + [m.upper() for m in MONTHS] + ["Jan"]:
        assert re.fullmatch(CRON, _with(3, name)) and croniter.is_valid(_with(3, name)), name
        assert not re.fullmatch(CRON, _with(4, name)), name
    for name in DAYS + [d.upper() for d in DAYS]:
        assert re.fullmatch(CRON, _with(4, name)) and croniter.is_valid(_with(4, name)), name
        assert not re.fullmatch(CRON, _with(3, name)), name
    for macro in ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"):
        assert re.fullmatch(CRON, macro) and croniter.is_valid(macro), macro
    # croniter extensions and look-alikes are left out, so admission never admits what only croniter reads.
    for refused in ("@reboot", "@every 5m", "0 0 L * *", "0 0 1W * *", "0 0 * * 5#2", "0 0 ? * *", "0 0 * * * 2026",
                    "H * * * *", "0 0 * * 1-", "0 0 * *", "0\t0 * * *", "0 0 * * *\n", "*-5 * * * *", "janx 0 * * *"):
        assert not re.fullmatch(CRON, refused), refused


# (as written, the folders it walks into from the claim's root), resolved by hand.
SEGMENTS = [
    ("", ()), (".", ()), ("/", ()), ("//", ()), ("./", ()), ("a/..", ()),
    ("chest", ("chest",)), ("chest/", ("chest",)), ("./chest", ("chest",)), ("/chest", ("chest",)),
    ("chest//studies", ("chest", "studies")), ("chest/./studies/.", ("chest", "studies")),
    ("chest/truth/../studies", ("chest", "studies")), ("a/b/c/../../d", ("a", "d")),
    ("..a/b..", ("..a", "b..")), ("a\\..\\b", ("a\\..\\b",)), ("...", ("...",)),
]


@pytest.mark.parametrize(("written", "walked"), SEGMENTS)
def test_sub_paths_resolve_as_a_path_walk(written, walked):
    assert segments(written) == walked
    assert normalised(written) == "/".join(walked)


@pytest.mark.parametrize("written", ["..", "../x", "a/../..", "a/../../a", "/..", "./../a", "a/./b/../../../c"])
def test_a_sub_path_climbing_out_of_its_claim_is_an_error(written):
    with pytest.raises(EscapesClaim):
        segments(written)
    assert overlap(
        VolumeLocation(claim_name="c", sub_path="far/away"), VolumeLocation(claim_name="c", sub_path=written)
    )


def test_overlap_is_symmetric_and_stops_at_segment_boundaries():
    def loc(path: str, claim: str = "c") -> VolumeLocation:
        return VolumeLocation(claim_name=claim, sub_path=path)

    pairs = [("a", "a/b", True), ("a/b", "a/bc", False), ("a", "ab", False), ("a/b", "A/B/", True), ("", "x", True)]
    for first, second, expected in pairs:
        assert overlap(loc(first), loc(second)) is expected, (first, second)
        assert overlap(loc(second), loc(first)) is expected, (second, first)
    assert not overlap(loc("a"), loc("a", claim="other"))


def test_no_run_pod_is_built_with_the_truth_where_the_studies_are():
    config = OperatorConfig(trusted_image="ghcr.io/lightbox-health/lightbox@sha256:" + "1" * 64)
    args = (validation(), algorithm(), None, policy(), config)
    builders.run_pod_spec(*args[:2], dataset(), *args[3:])  # disjoint: built
    for studies, truth in (
        ("chest/studies", "chest/studies/"),
        ("chest/studies", ""),
        ("chest", "chest/x/../studies/t"),
    ):
        with pytest.raises(ValueError, match="spec.groundTruth overlaps spec.studies"):
            builders.run_pod_spec(*args[:2], dataset(studies=studies, truth=truth), *args[3:])


_EXPLICIT_BIDI = {"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"}


def _unsafe(char: str) -> bool:
    """Independent definition: control, line/paragraph separator, or a bidirectional control."""
    return (
        unicodedata.category(char) in ("Cc", "Zl", "Zp")
        or unicodedata.bidirectional(char) in _EXPLICIT_BIDI
        or char in "\u200e\u200f\u061c"  # LRM, RLM, ALM: invisible marks that reorder neighbouring text
    )


def test_the_control_character_sets_cover_exactly_the_unsafe_characters():
    # The RE2 pattern for the API server, read with Python's \u escapes instead of \x{...}.
    as_python = re.compile(
        re.sub(r"\\x\{([0-9a-f]+)\}", lambda m: "\\u" + m.group(1).rjust(4, "0"), CONTROL_CHARACTERS_RE2)
    )
    for code_point in range(0x30000):
        char = chr(code_point)
        if 0xD800 <= code_point <= 0xDFFF:
            continue
        expected = _unsafe(char)
        assert bool(CONTROL_CHARACTERS.fullmatch(char)) == expected, hex(code_point)
        assert bool(as_python.fullmatch(char)) == expected, hex(code_point)
