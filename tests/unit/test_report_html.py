"""The HTML report: every section and plot present with the run's numbers; hostile names escaped."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import factories
from test_report import _run, _trail, _validation

from lightbox.api.results import HistogramBin, MetricValue, ReliabilityBin, SubgroupResult
from lightbox.api.validation import CriterionResult
from lightbox.report_html import render_html

HOSTILE = '<script>alert(1)</script>"&'


class _Page(HTMLParser):
    """Sections and figures by id, script elements, and text per section (stdlib parser, so the
    check does not trust the template's own idea of structure)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.tags: list[str] = []
        self.text: dict[str, str] = {}
        self._section: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for key, value in attrs:
            if key == "id" and value:
                self.ids.append(value)
                if tag == "section":
                    self._section = value

    def handle_data(self, data: str) -> None:
        if self._section:
            self.text[self._section] = self.text.get(self._section, "") + data


def _page() -> tuple[str, _Page]:
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
                HOSTILE: SubgroupResult(n=0, suppressed=True),
                "O": SubgroupResult(n=0, suppressed=True),
            }
        },
        roc=[(0.0, 0.0), (0.1, 0.55), (0.2, 0.8), (1.0, 1.0)],
        reliability=[
            ReliabilityBin(lower=0.0, upper=0.1, count=20, mean_predicted=0.05, observed_rate=0.1),
            ReliabilityBin(lower=0.1, upper=0.2, suppressed=True),
        ],
        dice_histogram=[
            HistogramBin(lower=0.8, upper=0.9, count=40),
            HistogramBin(lower=0.9, upper=1.0, suppressed=True),
        ],
    )
    latest.metrics["specificity"] = MetricValue(value=0.85, lower=0.78, upper=0.9, method="wilson")
    validation = _validation([_run(2, 0.88), latest])
    trail = _trail(validation, [_run(1, 0.90), _run(2, 0.88), latest])
    algorithm = factories.algorithm(vendor=HOSTILE, regulatory={"ceClass": "IIa", "udi": "(01)05790000000001"})
    data = factories.dataset(caseCount=120, cohort={"sex": {"F": 70, "M": 48, HOSTILE: 2}})
    html = render_html(validation, algorithm, data, trail)
    page = _Page()
    page.feed(html)
    return html, page


def test_every_section_and_plot_is_there_with_the_runs_numbers() -> None:
    html, page = _page()
    for section in (
        "device",
        "data",
        "protocol",
        "results",
        "verdict",
        "plots",
        "subgroups",
        "history",
        "drift",
        "claim",
    ):
        assert section in page.ids, section
    for plot in ("plot-roc", "plot-calibration", "plot-dice", "plot-forest", "plot-history"):
        assert plot in page.ids, plot
    assert page.tags.count("svg") == 5
    assert "CE class" in page.text["device"] and "(01)05790000000001" in page.text["device"]
    assert (
        "[0.860, 0.950]" in page.text["results"] and "obuchowski" in page.text["results"]
    )  # run 3: 0.91 - 0.05, + 0.04
    assert "auc (lower) >= 0.85" in page.text["verdict"] and "Passed" in page.text["verdict"]
    # Numbers inside the plots themselves (text kept as SVG text): the AUC and the operating point.
    assert "AUC 0.910" in page.text["plots"]
    assert "sens 0.800, spec 0.850" in page.text["plots"]
    assert "suppressed" in page.text["subgroups"]
    history = page.text["history"]
    assert (
        history.index("0.900 [0.850, 0.940]")
        < history.index("0.880 [0.830, 0.920]")
        < history.index("0.910 [0.860, 0.950]")
    )


def test_offline_and_escaped() -> None:
    html, page = _page()
    assert "script" not in page.tags  # the hostile vendor and group names stayed text
    assert HOSTILE not in html and "&lt;script&gt;" in html
    # Opens offline: nothing to fetch (XML namespace names in the SVG are identifiers, not fetched).
    for fetch in ("src=", "<link", "@import", 'href="http', "<img", "<script"):
        assert fetch not in html, fetch
    assert re.findall(r"url\(([^)]*)\)", html) and all(
        ref.startswith("#") for ref in re.findall(r"url\(([^)]*)\)", html)
    )


# Copied by hand from the CLAIM 2024 checklist form (Tejani et al., Radiology: Artificial Intelligence
# 2024;6(4):e240300; https://pubs.rsna.org/page/ai/claim), not from report_html: item numbers with
# their literal titles, and the first and last item of each section of the form.
CLAIM_2024_COUNT = 44
CLAIM_2024_TITLES = {
    1: "Identification as a study of AI methodology, specifying the category of technology used (eg, deep learning)",
    7: "Data sources",
    11: "De-identification methods",
    13: "Image acquisition protocol",
    17: "Annotation of test set",
    21: "Intended sample size",
    33: "Testing on external data",
    34: "Clinical trial registration",
    35: "Numbers of patients or examinations included and excluded",
    43: "Statement about the availability of software, trained model, and/or data",
    44: "Sources of funding and other support; role of funders",
}
CLAIM_2024_SECTIONS = {
    "Methods: data": (7, 13),
    "Methods: reference standard": (14, 18),
    "Methods: data partitions": (19, 20),
    "Methods: testing data": (21, 21),
    "Methods: model": (22, 24),
    "Methods: training": (25, 27),
    "Methods: evaluation": (28, 34),
    "Results: data": (35, 36),
    "Results: model performance": (37, 39),
    "Discussion": (40, 41),
    "Other information": (42, 44),
}


def _claim_rows(html: str) -> list[tuple[int, str, str, str]]:
    section = html[html.index('<section id="claim">') :]
    section = section[: section.index("</section>")]
    rows = re.findall(r"<tr><td>(\d+)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", section)
    return [(int(n), sec, title, who) for n, sec, title, who in rows]


def test_the_claim_section_is_claim_2024_numbered_as_published() -> None:
    html, page = _page()
    rows = _claim_rows(html)
    assert [n for n, *_ in rows] == list(range(1, CLAIM_2024_COUNT + 1))
    titles = {n: title for n, _, title, _ in rows}
    for number, title in CLAIM_2024_TITLES.items():
        assert titles[number] == title, number
    for section, (first, last) in CLAIM_2024_SECTIONS.items():
        assert [n for n, sec, _, _ in rows if sec == section] == list(range(first, last + 1)), section
    # The page names the version it lays out, and not the superseded 2020 list.
    assert "CLAIM 2024" in page.text["claim"] and "e240300" in page.text["claim"]
    assert "2020" not in page.text["claim"] and "Mongan" not in page.text["claim"]


def test_the_claim_section_says_who_answers_each_item() -> None:
    html, _ = _page()
    who = {n: w for n, _, _, w in _claim_rows(html)}
    # What a run answers, item by item: data sources (7), de-identification (11), missing data:
    # cases without output (12), metrics (28), uncertainty (29), robustness: subgroups and drift (30),
    # the site's data is external to the vendor (33), case flow (35), cohort (36), metrics with
    # intervals (37, 38). The model's internals are the vendor's; the study design is the site's.
    assert sorted(n for n, w in who.items() if w == "this run") == [7, 11, 12, 28, 29, 30, 33, 35, 36, 37, 38]
    assert {who[n] for n in (22, 23, 24, 25, 26, 27, 31)} == {"vendor must add"}
    assert {who[n] for n in (14, 15, 16, 17, 18, 21, 34, 40, 44)} == {"site must add"}
