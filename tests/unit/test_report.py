"""The Markdown report: what a quality officer needs, from the objects the operator keeps."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import factories

from lightbox.api import AuditRecord, Validation
from lightbox.api.results import MetricValue, SubgroupResult
from lightbox.api.validation import CriterionResult, RunRecord
from lightbox.operator import audit
from lightbox.report import render
from lightbox.text import CONTROL_CHARACTERS

UID = "0a1b2c3d-0000-4000-8000-000000000000"


def _run(number: int, auc: float, verdict: str = "Passed", **extra) -> RunRecord:
    return RunRecord(
        name=f"chest-v1-r{number}", number=number, phase="Succeeded", reason="Succeeded",
        finished_at=datetime(2026, 11, number, 3, 5, tzinfo=UTC), dataset_hash="sha256:" + "ab" * 32,
        cases=120, scored=118, verdict=verdict,
        metrics={"auc": MetricValue(value=auc, lower=auc - 0.05, upper=auc + 0.04, method="obuchowski"),
                 "sensitivity": MetricValue(value=0.8, lower=0.7, upper=0.87, method="wilson")},
        **extra,
    )


def _validation(runs: list[RunRecord]) -> Validation:
    v = factories.validation(
        metrics=["auc", "sensitivity"], confidenceLevel=0.9, schedule="0 3 * * *",
        acceptance=[{"metric": "auc", "threshold": 0.85, "bound": "lower"}],
    )
    body = v.model_dump(by_alias=True, exclude_none=True)
    body["metadata"]["uid"] = UID
    body["status"] = {"runs": [r.model_dump(by_alias=True, exclude_none=True, mode="json") for r in runs]}
    return Validation.model_validate(body)


def _trail(validation: Validation, runs: list[RunRecord]) -> list[AuditRecord]:
    algorithm = factories.algorithm(regulatory={"ceClass": "IIa", "udi": "(01)05790000000001"})
    return [
        AuditRecord.model_validate(audit.audit_record(validation, r, algorithm, factories.dataset(), "region", "x"))
        for r in runs
    ]


def test_a_report_names_device_data_protocol_results_and_history() -> None:
    latest = _run(
        3,
        0.91,
        criteria=[
            CriterionResult(
                metric="auc", bound="lower", comparison=">=", threshold=0.85, observed=0.86, outcome="Passed"
            )
        ],
        subgroups={
            "sex": {
                "F": SubgroupResult(n=70, metrics={"auc": MetricValue(value=0.9, lower=0.84, upper=0.95)}),
                "M": SubgroupResult(n=0, suppressed=True),
                "O": SubgroupResult(n=0, suppressed=True),
            }
        },
    )
    validation = _validation([_run(2, 0.88), latest])  # history kept 2 runs in status
    trail = _trail(validation, [_run(1, 0.90), _run(2, 0.88), latest])  # the trail keeps all 3
    data = factories.dataset(caseCount=120, cohort={"sex": {"F": 70, "M": 48, "O": 2}})
    text = render(
        validation, factories.algorithm(regulatory={"ceClass": "IIa", "udi": "(01)05790000000001"}), data, trail
    )

    assert text.startswith("# Validation chest-v1\n")
    for expected in (
        "| Vendor | Acme Imaging |", "| CE class | IIa |", "| UDI-DI | (01)05790000000001 |",
        "| Content hash | `sha256:" + "00" * 32 + "` |", "| sex | F 70, M 48, O 2 |",
        "90% intervals", "on the schedule `0 3 * * *`", "| auc | lower bound | >= 0.85 |",
        "Run 3 (chest-v1-r3): **Succeeded**", "Verdict: **Passed**",
        "| metric | estimate | 90% interval | method |", "| auc | 0.910 | [0.860, 0.950] | obuchowski |",
        "| auc (lower) >= 0.85 | 0.860 | Passed |",
        "| sex | F | 70 | auc | 0.900 [0.840, 0.950] |", "| sex | M | suppressed | — | — |",
    ):
        assert expected in text, expected
    history = text.split("## History (audit trail)")[1]
    assert [line.split("|")[1].strip() for line in history.strip().splitlines()[2:]] == ["1", "2", "3"]
    assert "auc 0.900 [0.850, 0.940]" in history  # run 1: gone from status, kept in the trail


def test_a_failed_run_says_why_and_a_missing_algorithm_is_named() -> None:
    failed = RunRecord(name="chest-v1-r1", number=1, phase="Failed", reason="DeadlineExceeded",
                       message="the run did not finish within its deadline of 3600 seconds")
    validation = _validation([failed])
    text = render(validation, None, None, [])
    assert "Run 1 (chest-v1-r1): **Failed**" in text
    assert "Reason: DeadlineExceeded: the run did not finish within its deadline of 3600 seconds" in text
    assert "Algorithm chest does not exist." in text and "Dataset chest-2025 does not exist." in text
    assert "No run has finished yet." in text  # nothing in the trail


def test_records_of_an_earlier_validation_with_the_same_name_are_left_out() -> None:
    validation = _validation([_run(1, 0.9)])
    other = factories.validation()
    other.metadata["uid"] = "ffffffff-old"
    text = render(validation, None, None, _trail(validation, [_run(1, 0.9)]) + _trail(other, [_run(1, 0.5)]))
    assert "auc 0.500" not in text and "auc 0.900" in text


def test_table_cells_cannot_break_the_table() -> None:
    validation = _validation([])
    text = render(validation, factories.algorithm(vendor="Acme | Imaging\nGmbH"), None, [])
    assert "| Vendor | Acme \\| Imaging GmbH |" in text


# --- Hostile text: what users, vendors and DICOM headers wrote must render as itself. ---
# The oracle is an independent CommonMark + GFM-table parser (markdown-it-py): the
# report is parsed as a reader's viewer would and the resulting HTML is inspected.

FORGED_ROW = "| auc | 0.999 | [0.990, 1.000] | delong |"
HOSTILE = {
    "vendor": f"Acme\n{FORGED_ROW}",
    "product": "ChestAI\r\n# Verdict: Passed",
    "version": "\x1b[2J\x1b[32m1.2.0\x1b[0m",
    "intendedUse": "Triage <script>alert(1)</script> [click](https://phish.example) **approved** `x` ~~no~~ "
    "&lt;b&gt; \u202eevil",
    "udi": "(01)0579|0000000001_*_",
}


def _hostile_report() -> str:
    algorithm = factories.algorithm(
        vendor=HOSTILE["vendor"], product=HOSTILE["product"], version=HOSTILE["version"],
        regulatory={"ceClass": "IIa", "udi": HOSTILE["udi"], "intendedUse": HOSTILE["intendedUse"]},
    )
    data = factories.dataset(
        caseCount=120, cohort={"manufacturer": {"Acme\n| forged | 1 |": 60, "<img src=x onerror=alert(1)>": 60}}
    )
    data.spec.site = "site\n## Verdict: Passed"
    failed = RunRecord(name="chest-v1-r1", number=1, phase="Failed", reason="VendorFailed",
                       message="exit 1\n\n# Verdict: Passed\n\x1b]8;;https://evil.example\x07link")
    return render(_validation([failed]), algorithm, data, [])


def _html(text: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").enable("strikethrough").render(text)


def test_hostile_text_cannot_forge_rows_headings_links_or_html() -> None:
    text = _hostile_report()
    html = _html(text)
    # One heading of each level we write, none from the values.
    assert re.findall(r"<h1>(.*?)</h1>", html) == ["Validation chest-v1"]
    assert re.findall(r"<h2>(.*?)</h2>", html) == ["Device", "Data", "Protocol", "Latest run", "History (audit trail)"]
    assert "Verdict: Passed</h" not in html
    # The device table: a header and seven rows of two cells each, the vendor's row intact.
    device = html.split("<h2>Device</h2>")[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", device, flags=re.S)
    assert len(rows) == 1 + 7
    assert all(len(re.findall(r"<t[hd]>", row)) == 2 for row in rows)
    assert "<td>Acme | auc | 0.999 | [0.990, 1.000] | delong |</td>" in device
    assert "<td>(01)0579|0000000001_*_</td>" in device
    # No markup comes through: no element, link, emphasis or strikethrough of the vendor's.
    for forbidden in ("<script", "<img", "<a ", "<strong>approved", "<code>x</code>", "<s>no</s>", "<del>"):
        assert forbidden not in html, forbidden
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "[click](https://phish.example)" in html
    assert "&amp;lt;b&amp;gt;" in html  # an entity in the value shows as typed, not as <b>
    # The cohort: two groups, each one cell, the forged row only text.
    data = html.split("<h2>Data</h2>")[1].split("<h2>")[0]
    assert "<td>forged</td>" not in data and "| forged | 1 | 60" in data


def test_hostile_text_cannot_reach_a_terminal_as_control_characters() -> None:
    text = _hostile_report()
    assert not [line for line in text.splitlines() if CONTROL_CHARACTERS.search(line)]
    assert "\x1b" not in text and "\r" not in text and "\u202e" not in text
    assert "\ufffd\\[2J\ufffd\\[32m1.2.0\ufffd\\[0m" in text  # visibly replaced, not silently dropped
    # Every line is one we wrote: the values' line breaks became spaces.
    assert not [line for line in text.splitlines() if line.startswith(("# Verdict", "## Verdict", FORGED_ROW))]
    assert "Reason: VendorFailed: exit 1 \\# Verdict" not in text  # '#' mid-line is harmless and left alone
    assert "Reason: VendorFailed: exit 1 # Verdict: Passed \ufffd\\]8;;https://evil.example\ufffdlink" in text


def test_ordinary_text_is_left_readable() -> None:
    html = _html(
        render(_validation([]), factories.algorithm(vendor="Société d'Imagerie (Zürich) 1.2-rc.1 + more"), None, [])
    )
    assert "<td>Société d'Imagerie (Zürich) 1.2-rc.1 + more</td>" in html.replace("&#x27;", "'")
