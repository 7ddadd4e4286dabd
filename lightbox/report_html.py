"""``lightbox report --html``: the Markdown report's content as one self-contained HTML page.

The page is a jinja2 template with autoescape on (names, versions, labels and cohort groups come
from users, vendors and DICOM headers); plots are drawn with matplotlib's Agg backend and embedded
as inline SVG, so the file opens offline. ``render_html`` is pure: objects in, text out.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from lightbox.api import Algorithm, AuditRecord, Dataset, Validation
from lightbox.api.validation import RunRecord


class ClaimItem(NamedTuple):
    number: int
    section: str
    title: str
    #: "run": this report answers it from the run; "vendor"/"site": who must add it.
    who: Literal["run", "vendor", "site"]


#: The checklist's version, as the report names it.
CLAIM_VERSION = "CLAIM 2024"
CLAIM_CITATION = (
    "Tejani AS, Klontzas ME, Gatti AA, et al. Checklist for Artificial Intelligence in Medical Imaging "
    "(CLAIM): 2024 Update. Radiology: Artificial Intelligence 2024;6(4):e240300"
)
CLAIM_SOURCE = "https://pubs.rsna.org/doi/10.1148/ryai.240300"

#: The 44 items of CLAIM 2024 with their published numbers, sections and titles, as printed on the
#: journal's checklist form (https://pubs.rsna.org/page/ai/claim; the article's full text is PMC11304031).
#: Neither RSNA nor PMC could be reached from where this was written: the titles were transcribed
#: from three independent public transcriptions of that form, which agree on every number and
#: section. Where they differ in a title (hyphenation of "preprocessing" and "intrarater"; item 39
#: "incorrect results" against "incorrectly classified cases"; a parenthesis after item 4), the
#: reading of two of the three is kept. Check against the RSNA form before quoting a title.
#: A run answers an item only where the report shows it from the run's own record.
CLAIM_ITEMS: tuple[ClaimItem, ...] = (
    ClaimItem(
        1,
        "Title/Abstract",
        "Identification as a study of AI methodology, specifying the category of technology used (eg, deep learning)",
        "site",
    ),
    ClaimItem(2, "Abstract", "Summary of study design, methods, results, and conclusions", "site"),
    ClaimItem(
        3,
        "Introduction",
        "Scientific and/or clinical background, including the intended use and role of the AI approach",
        "vendor",
    ),
    ClaimItem(4, "Introduction", "Study aims, objectives, and hypotheses", "site"),
    ClaimItem(5, "Methods: study design", "Prospective or retrospective study", "site"),
    ClaimItem(6, "Methods: study design", "Study goal", "site"),
    ClaimItem(7, "Methods: data", "Data sources", "run"),
    ClaimItem(8, "Methods: data", "Inclusion and exclusion criteria", "site"),
    ClaimItem(9, "Methods: data", "Data preprocessing", "vendor"),
    ClaimItem(10, "Methods: data", "Selection of data subsets", "site"),
    ClaimItem(11, "Methods: data", "De-identification methods", "run"),
    ClaimItem(12, "Methods: data", "How missing data were handled", "run"),
    ClaimItem(13, "Methods: data", "Image acquisition protocol", "site"),
    ClaimItem(14, "Methods: reference standard", "Definition of method(s) used to obtain reference standard", "site"),
    ClaimItem(15, "Methods: reference standard", "Rationale for choosing the reference standard", "site"),
    ClaimItem(16, "Methods: reference standard", "Source of reference standard annotations", "site"),
    ClaimItem(17, "Methods: reference standard", "Annotation of test set", "site"),
    ClaimItem(
        18,
        "Methods: reference standard",
        "Measures of inter- and intrarater variability of features described by the annotators",
        "site",
    ),
    ClaimItem(19, "Methods: data partitions", "How data were assigned to partitions", "site"),
    ClaimItem(20, "Methods: data partitions", "Level at which partitions are disjoint", "site"),
    ClaimItem(21, "Methods: testing data", "Intended sample size", "site"),
    ClaimItem(22, "Methods: model", "Detailed description of model", "vendor"),
    ClaimItem(23, "Methods: model", "Software libraries, frameworks, and packages", "vendor"),
    ClaimItem(24, "Methods: model", "Initialization of model parameters", "vendor"),
    ClaimItem(25, "Methods: training", "Details of training approach", "vendor"),
    ClaimItem(26, "Methods: training", "Method of selecting the final model", "vendor"),
    ClaimItem(27, "Methods: training", "Ensembling techniques", "vendor"),
    ClaimItem(28, "Methods: evaluation", "Metrics of model performance", "run"),
    ClaimItem(29, "Methods: evaluation", "Statistical measures of significance and uncertainty", "run"),
    ClaimItem(30, "Methods: evaluation", "Robustness or sensitivity analysis", "run"),
    ClaimItem(31, "Methods: evaluation", "Methods for explainability or interpretability", "vendor"),
    # Internal data is the developer's; the site's data is external to the vendor, which a run tests.
    ClaimItem(32, "Methods: evaluation", "Evaluation on internal data", "vendor"),
    ClaimItem(33, "Methods: evaluation", "Testing on external data", "run"),
    ClaimItem(34, "Methods: evaluation", "Clinical trial registration", "site"),
    ClaimItem(35, "Results: data", "Numbers of patients or examinations included and excluded", "run"),
    ClaimItem(36, "Results: data", "Demographic and clinical characteristics of cases in each partition", "run"),
    ClaimItem(37, "Results: model performance", "Performance metrics and measures of statistical uncertainty", "run"),
    ClaimItem(38, "Results: model performance", "Estimates of diagnostic performance and their precision", "run"),
    ClaimItem(39, "Results: model performance", "Failure analysis of incorrect results", "site"),
    ClaimItem(40, "Discussion", "Study limitations", "site"),
    ClaimItem(41, "Discussion", "Implications for practice, including intended use and/or clinical role", "site"),
    ClaimItem(
        42,
        "Other information",
        "Provide a reference to the full study protocol or to additional technical details",
        "site",
    ),
    ClaimItem(
        43, "Other information", "Statement about the availability of software, trained model, and/or data", "vendor"
    ),
    ClaimItem(44, "Other information", "Sources of funding and other support; role of funders", "site"),
)


@dataclass(frozen=True)
class Plots:
    roc: Markup | None
    calibration: Markup | None
    forest: Markup | None
    froc: Markup | None
    dice: Markup | None
    history: Markup | None


def _svg(fig: Any) -> Markup:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "text.parse_math": False, "svg.hashsalt": "lightbox"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})

    plt.close(fig)
    text = buf.getvalue()
    # The XML prolog and DOCTYPE are not allowed inside HTML; the <svg> element is.
    return Markup(text[text.index("<svg"):])


def _figure(title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Text stays text in the SVG (searchable, and a test can read the numbers), and labels that
    # come from users and DICOM headers are never parsed as mathtext.
    with plt.rc_context({"svg.fonttype": "none", "text.parse_math": False}):
        fig, ax = plt.subplots(figsize=(4.2, 3.4))
    ax.set_title(title, fontsize=10)
    return fig, ax


def roc_plot(run: RunRecord) -> Markup | None:
    if not run.roc:
        return None
    auc = (run.metrics or {}).get("auc")
    fig, ax = _figure("ROC" + (f", AUC {auc.value:.3f}" if auc else ""))
    fpr, tpr = zip(*run.roc, strict=True)
    ax.step(fpr, tpr, where="post", label="ROC")
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    m = run.metrics or {}
    if "sensitivity" in m and "specificity" in m:
        se, sp = m["sensitivity"], m["specificity"]
        x = 1 - sp.value
        xerr = [[x - (1 - sp.upper)], [(1 - sp.lower) - x]] if sp.lower is not None and sp.upper is not None else None
        yerr = [[se.value - se.lower], [se.upper - se.value]] if se.lower is not None and se.upper is not None else None
        ax.errorbar([x], [se.value], xerr=xerr, yerr=yerr, fmt="o", color="C3",
                    label=f"operating point: sens {se.value:.3f}, spec {sp.value:.3f}")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.legend(loc="lower right", fontsize=8)
    return _svg(fig)


def calibration_plot(run: RunRecord) -> Markup | None:
    shown = [b for b in run.reliability or [] if b.mean_predicted is not None and b.observed_rate is not None]
    if not run.reliability:
        return None
    fig, ax = _figure("Calibration (reliability bins)")
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    if shown:
        ax.plot([b.mean_predicted for b in shown], [b.observed_rate for b in shown], "o-", label="observed")
    for b in run.reliability:
        if b.suppressed:
            ax.axvspan(b.lower, b.upper, color="grey", alpha=0.2)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed rate")
    return _svg(fig)


def forest_plot(run: RunRecord, metric: str | None) -> Markup | None:
    if not run.subgroups or metric is None:
        return None
    rows: list[tuple[str, float | None, float | None, float | None]] = []
    for dim, groups in sorted(run.subgroups.items()):
        for group, result in sorted(groups.items()):
            m = result.metrics.get(metric)
            rows.append((f"{dim}: {group}", m.value if m else None, m.lower if m else None, m.upper if m else None))
    fig, ax = _figure(f"Subgroups: {metric}")
    fig.set_size_inches(4.8, 0.4 * len(rows) + 1.2)
    for i, (_label, v, lo, hi) in enumerate(rows):
        if v is None:
            ax.text(0.5, i, "suppressed", ha="center", va="center", fontsize=8, color="grey")
            continue
        ax.plot([lo if lo is not None else v, hi if hi is not None else v], [i, i], color="C0")
        ax.plot([v], [i], "s", color="C0")
    overall = (run.metrics or {}).get(metric)
    if overall is not None:
        ax.axvline(overall.value, ls=":", color="grey")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # top to bottom, with room for the "suppressed" notes
    return _svg(fig)


def froc_plot(run: RunRecord) -> Markup | None:
    if not run.froc:
        return None
    fig, ax = _figure("FROC (released points)")
    fp, sens = zip(*run.froc, strict=True)
    ax.plot(fp, sens, "o-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("sensitivity")
    return _svg(fig)


def dice_plot(run: RunRecord) -> Markup | None:
    if not run.dice_histogram:
        return None
    fig, ax = _figure("Per-case Dice (banded counts)")
    for b in run.dice_histogram:
        if b.suppressed:
            ax.bar(b.lower, 1, width=b.upper - b.lower, align="edge", color="grey", alpha=0.3, hatch="//")
        else:
            ax.bar(b.lower, b.count or 0, width=b.upper - b.lower, align="edge", color="C0", edgecolor="white")
    ax.set_xlim(0, 1)
    ax.set_xlabel("Dice")
    ax.set_ylabel("cases (upper band)")
    return _svg(fig)


def history_plot(points: list[tuple[int, float, float | None, float | None]], metric: str | None) -> Markup | None:
    if len(points) < 1 or metric is None:
        return None
    fig, ax = _figure(f"History: {metric}")
    xs = [p[0] for p in points]
    ax.plot(xs, [p[1] for p in points], "o-")
    lo = [p[2] if p[2] is not None else p[1] for p in points]
    hi = [p[3] if p[3] is not None else p[1] for p in points]
    ax.fill_between(xs, lo, hi, alpha=0.2)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("run")
    return _svg(fig)


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("lightbox", "templates"), autoescape=select_autoescape(["html", "j2"], default=True)
    )


def render_html(
    validation: Validation, algorithm: Algorithm | None, dataset: Dataset | None, trail: list[AuditRecord]
) -> str:
    """The report of one Validation as a self-contained HTML page. ``trail``: its AuditRecords, any order."""
    from lightbox.report import MAIN_METRICS, drift_lines

    mine = [r for r in trail if r.spec.validation.uid == validation.metadata.get("uid") and r.spec.run is not None]
    trail = sorted(mine, key=lambda r: r.spec.run.number)  # type: ignore[union-attr]
    runs = [
        r for r in (validation.status.runs if validation.status else None) or [] if r.phase in ("Succeeded", "Failed")
    ]
    latest = runs[-1] if runs else (trail[-1].spec.run if trail else None)
    names = [*validation.spec.metrics, *MAIN_METRICS]
    main_metric = next((n for n in names if latest and latest.metrics and n in latest.metrics), None)
    history: list[dict[str, Any]] = []
    points: list[tuple[int, float, float | None, float | None]] = []
    for record in trail:
        run, algo = record.spec.run, record.spec.algorithm
        # Only RunFinished records have a run, and the API server admits them only with an algorithm.
        assert run is not None and algo is not None
        m = (run.metrics or {}).get(main_metric) if main_metric else None
        history.append({"run": run, "value": m, "version": algo.version})
        if m is not None:
            points.append((run.number, m.value, m.lower, m.upper))
    plots = Plots(
        roc=roc_plot(latest) if latest else None,
        calibration=calibration_plot(latest) if latest else None,
        forest=forest_plot(latest, main_metric) if latest else None,
        froc=froc_plot(latest) if latest else None,
        dice=dice_plot(latest) if latest else None,
        history=history_plot(points, main_metric),
    )
    template = _environment().get_template("report.html.j2")
    return template.render(
        validation=validation,
        name=validation.metadata.get("name"),
        namespace=validation.metadata.get("namespace"),
        algorithm=algorithm,
        last_recorded=trail[-1].spec.algorithm if trail else None,
        dataset=dataset,
        latest=latest,
        history=history,
        main_metric=main_metric,
        plots=plots,
        drift=drift_lines(trail),
        claim=CLAIM_ITEMS,
        claim_version=CLAIM_VERSION,
        claim_citation=CLAIM_CITATION,
        claim_source=CLAIM_SOURCE,
    )
