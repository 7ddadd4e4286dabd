"""``lightbox report``: a Validation as quality staff and clinicians read it (Markdown).

    lightbox report VALIDATION [-n NAMESPACE] [--context C] [--kubeconfig FILE] [-o markdown|html]
                    [--html FILE] [--output-file FILE]

Device, data, protocol, the latest run (estimates with intervals, criteria, subgroups)
and every run in the audit trail, which outlives the Validation's own history. It holds
aggregates only, as everything that leaves a sandbox run does. ``render`` is pure; the
command around it only reads the objects.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightbox.api import API_GROUP, API_VERSION, Algorithm, AuditRecord, Dataset, Validation
from lightbox.api.validation import RunRecord
from lightbox.operator.audit import DEFAULT_AUDIT_NAMESPACE, LABEL_CHAIN
from lightbox.operator.builders import label_value
from lightbox.text import Markdown, code, markdown, terminal

# The metric a history row shows when the protocol names none first.
MAIN_METRICS = ("auc", "dice", "frocSensitivity", "sensitivity")


# Every value placed in the report is escaped by ``markdown`` unless it is a
# ``Markdown`` built here from escaped parts and our own formatting: names,
# versions, labels and cohort groups come from users, vendors and DICOM headers.
def _cell(value: object) -> str:
    if value is None or value == "":
        return "—"
    return markdown(value) if not isinstance(value, (int, float)) else str(value)


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _interval(lower: float | None, upper: float | None) -> Markdown:
    return Markdown(f"[{lower:.3f}, {upper:.3f}]" if lower is not None and upper is not None else "—")


def _number(value: float | None, spec: str) -> Markdown | None:
    return None if value is None else Markdown(format(value, spec))


def _short_hash(content_hash: str | None) -> Markdown | None:
    if not content_hash:
        return None
    shown = code(content_hash[:19])
    return Markdown(shown[:-1] + "…`" if shown.startswith("`") else shown + "…")


def _main_metric(validation: Validation, run: RunRecord) -> str | None:
    names = [*validation.spec.metrics, *MAIN_METRICS]
    return next((name for name in names if run.metrics and name in run.metrics), None)


def _device(validation: Validation, algorithm: Algorithm | None, trail: list[AuditRecord]) -> list[str]:
    lines = ["## Device", ""]
    if algorithm is not None:
        spec, reg = algorithm.spec, algorithm.spec.regulatory
        rows = [
            ("Vendor", spec.vendor), ("Product", spec.product), ("Version", spec.version), ("Image", code(spec.image)),
            ("Task", f"{spec.task}, {spec.modality} {spec.body_part or ''}".strip()),
            ("CE class", reg.ce_class if reg else None), ("UDI-DI", reg.udi if reg else None),
        ]
        lines += _table(["", ""], rows)
        if reg and reg.intended_use:
            lines += ["", f"Intended use: {markdown(reg.intended_use)}"]
    elif trail:
        last = trail[-1].spec.algorithm
        # render() keeps only RunFinished records, which the API server admits only with an algorithm.
        assert last is not None
        lines.append(
            f"Algorithm {markdown(last.name)} no longer exists; as last recorded: "
            f"{markdown(last.vendor)} {markdown(last.product)} {markdown(last.version)}."
        )
    else:
        lines.append(f"Algorithm {markdown(validation.spec.algorithm_ref.name)} does not exist.")
    return lines


def _data(validation: Validation, dataset: Dataset | None) -> list[str]:
    lines = ["## Data", ""]
    if dataset is None:
        return lines + [f"Dataset {markdown(validation.spec.dataset_ref.name)} does not exist."]
    status, spec = dataset.status, dataset.spec
    rows = [
        ("Dataset", dataset.metadata.get("name")),
        ("Revision", spec.revision),
        ("Site", spec.site),
        (
            "De-identification",
            f"PS3.15 {spec.deidentification.profile} profile"
            + (f" + {', '.join(spec.deidentification.options)}" if spec.deidentification.options else ""),
        ),
        (
            "Verified",
            f"{status.phase} at {status.verified_at:%Y-%m-%d %H:%M} UTC"
            if status and status.verified_at
            else (status.phase if status else None),
        ),
        ("Content hash", code(status.content_hash) if status and status.content_hash else None),
        ("Cases", status.case_count if status else None),
    ]
    lines += _table(["", ""], rows)
    if status and status.cohort:
        lines += ["", "Cohort:", ""]
        lines += _table(["", "groups"], (
            (dimension, Markdown(", ".join(f"{markdown(group)} {count}" for group, count in sorted(groups.items()))))
            for dimension, groups in sorted(status.cohort.items())
        ))
    return lines


def _protocol(validation: Validation) -> list[str]:
    spec = validation.spec
    lines = [
        "## Protocol",
        "",
        f"Metrics: {markdown(', '.join(spec.metrics)) or 'the task defaults'}; "
        f"{spec.confidence_level:.0%} intervals; bootstrap {spec.bootstrap.resamples} resamples at "
        f"{spec.bootstrap.level} level, "
        f"seed {spec.bootstrap.seed}; subgroups {markdown(', '.join(spec.subgroups)) or 'none'}.",
        f"Runs: {'on the schedule ' + code(spec.schedule) if spec.schedule else 'once'}.",
    ]
    if spec.acceptance:
        lines += [
            "",
            "Acceptance criteria (all must hold for Passed; Inconclusive when the interval straddles a threshold):",
            "",
        ]
        lines += _table(
            ["metric", "compared", "must be"],
            (
                (
                    c.metric,
                    "point estimate" if c.bound == "point" else f"{c.bound} bound",
                    Markdown(f"{markdown(c.comparison)} {c.threshold:g}"),
                )
                for c in spec.acceptance
            ),
        )
    return lines


def _latest(validation: Validation, run: RunRecord) -> list[str]:
    level = f"{validation.spec.confidence_level:.0%}"
    when = f", finished {run.finished_at:%Y-%m-%d %H:%M} UTC" if run.finished_at else ""
    lines = ["## Latest run", "", f"Run {run.number} ({markdown(run.name)}): **{markdown(run.phase)}**{when}."]
    if run.phase != "Succeeded":
        return lines + [f"Reason: {markdown(run.reason or '')}: {markdown(run.message or '')}".rstrip(": ")]
    lines += [
        f"Cases {run.cases}, scored {run.scored}. Verdict: **{markdown(run.verdict or 'none (no criteria)')}**.",
        "",
    ]
    lines += _table(
        ["metric", "estimate", f"{level} interval", "method"],
        (
            (name, _number(m.value, ".3f"), _interval(m.lower, m.upper), m.method)
            for name, m in sorted((run.metrics or {}).items())
        ),
    )
    if run.criteria:
        lines += [""]
        lines += _table(["criterion", "observed", "outcome"], (
            (markdown(f"{c.metric} ({c.bound}) {c.comparison} {c.threshold:g}"), _number(c.observed, ".3f"), c.outcome)
            for c in run.criteria
        ))
    if run.subgroups:
        lines += ["", "Subgroups (groups below the policy's minimum size are suppressed, with one more where needed "
                  "so that their size cannot be worked out from the total):", ""]
        rows: list[tuple[object, ...]] = []
        for dimension, groups in sorted(run.subgroups.items()):
            for group, result in sorted(groups.items()):
                if result.suppressed:
                    rows.append((dimension, group, "suppressed", "", ""))
                    continue
                for name, m in sorted(result.metrics.items()):
                    rows.append(
                        (dimension, group, result.n, name, Markdown(f"{m.value:.3f} {_interval(m.lower, m.upper)}"))
                    )
        lines += _table(["dimension", "group", "n", "metric", "estimate"], rows)
    return lines


def _history(validation: Validation, trail: list[AuditRecord]) -> list[str]:
    lines = ["## History (audit trail)", ""]
    if not trail:
        return lines + ["No run has finished yet."]
    rows = []
    for record in trail:
        run, algorithm = record.spec.run, record.spec.algorithm
        # render() keeps only records with a run: RunFinished, which also carry the algorithm.
        assert run is not None and algorithm is not None
        metric = _main_metric(validation, run)
        value = run.metrics[metric] if metric and run.metrics else None
        shown = (
            Markdown(f"{markdown(metric)} {value.value:.3f} {_interval(value.lower, value.upper)}") if value else None
        )
        rows.append((
            run.number, f"{run.finished_at:%Y-%m-%d %H:%M}" if run.finished_at else None, run.phase,
            run.reason if run.phase != "Succeeded" else None, run.verdict, shown,
            _short_hash(run.dataset_hash),
            algorithm.version,
        ))
    return lines + _table(
        ["run", "finished (UTC)", "phase", "reason", "verdict", "main metric", "data", "version"], rows
    )


def render(
    validation: Validation, algorithm: Algorithm | None, dataset: Dataset | None, trail: list[AuditRecord]
) -> str:
    """The report of one Validation. ``trail``: its AuditRecords, any order."""
    # Retention-cut records (no run) are chain bookkeeping, not history.
    mine = [r for r in trail if r.spec.validation.uid == validation.metadata.get("uid") and r.spec.run is not None]
    trail = sorted(mine, key=lambda r: r.spec.run.number)  # type: ignore[union-attr]
    name, namespace = validation.metadata.get("name"), validation.metadata.get("namespace")
    lines = [
        f"# Validation {markdown(name)}",
        "",
        f"Namespace {markdown(namespace)}. Aggregate results only; no case-level data leaves the sandbox.",
        "",
    ]
    lines += _device(validation, algorithm, trail) + [""]
    lines += _data(validation, dataset) + [""]
    lines += _protocol(validation) + [""]
    runs = [
        r for r in (validation.status.runs if validation.status else None) or [] if r.phase in ("Succeeded", "Failed")
    ]
    latest = runs[-1] if runs else (trail[-1].spec.run if trail else None)
    lines += (_latest(validation, latest) if latest else ["## Latest run", "", "No run has finished yet."]) + [""]
    lines += _history(validation, trail)
    lines += _drift(trail)
    return "\n".join(lines) + "\n"


def drift_lines(trail: list[AuditRecord]) -> list[str]:
    """One plain-text line per run judged against its baseline (operator/drift.py), newest last;
    not escaped (the HTML page escapes them itself)."""
    lines = []
    for record in trail:
        d, run = record.spec.drift, record.spec.run
        if d is None or run is None:
            continue
        found = [
            f"Degraded: {x.metric} {x.now:.3f} [{x.lower:.3f}, {x.upper:.3f}] vs {x.baseline:.3f}" for x in d.degraded
        ]
        found += [f"InputShift: {x.dimension} PSI {x.psi:.3f} (p {x.p_value:.2g})" for x in d.input_shift]
        lines.append(f"run {run.number} vs baseline run {d.baseline_run}: {'; '.join(found) if found else 'no drift'}")
    return lines


def _drift(trail: list[AuditRecord]) -> list[str]:
    """One line per run judged against its baseline (operator/drift.py), newest last."""
    judged = [r for r in trail if r.spec.drift is not None]
    if not judged:
        return []
    lines = ["", "## Drift against the baseline", ""]
    for record in judged:
        d = record.spec.drift
        run = record.spec.run
        assert d is not None and run is not None
        found = [
            f"Degraded: {markdown(x.metric)} {x.now:.3f} [{x.lower:.3f}, {x.upper:.3f}] vs {x.baseline:.3f}"
            for x in d.degraded
        ]
        found += [f"InputShift: {markdown(x.dimension)} PSI {x.psi:.3f} (p {x.p_value:.2g})" for x in d.input_shift]
        lines.append(
            f"- run {run.number} vs baseline run {d.baseline_run}: {'; '.join(found) if found else 'no drift'}"
        )
    return lines


def load(
    api_client: Any, namespace: str, name: str, audit_namespace: str = DEFAULT_AUDIT_NAMESPACE
) -> tuple[Validation, Algorithm | None, Dataset | None, list[AuditRecord]] | None:
    """Read the Validation, its Algorithm, Dataset and audit trail; None without the Validation."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(api_client)

    def read(plural: str, name: str) -> dict | None:
        try:
            return api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    raw = read("validations", name)
    if raw is None:
        return None
    validation = Validation.model_validate(raw)
    algorithm_raw = read("algorithms", validation.spec.algorithm_ref.name)
    dataset_raw = read("datasets", validation.spec.dataset_ref.name)
    # The trail is in the audit namespace, one chain per Validation uid (operator/audit.py).
    selector = f"{LABEL_CHAIN}={label_value(validation.metadata['uid'])}"
    items = api.list_namespaced_custom_object(
        API_GROUP, API_VERSION, audit_namespace, "auditrecords", label_selector=selector
    )["items"]
    items = [item for item in items if item["spec"].get("event", "RunFinished") == "RunFinished"]
    return (
        validation,
        Algorithm.model_validate(algorithm_raw) if algorithm_raw else None,
        Dataset.model_validate(dataset_raw) if dataset_raw else None,
        [AuditRecord.model_validate(item) for item in items],
    )


def report(
    api_client: Any, namespace: str, name: str, audit_namespace: str = DEFAULT_AUDIT_NAMESPACE, fmt: str = "markdown"
) -> str | None:
    """The report as Markdown or HTML; None without the Validation."""
    loaded = load(api_client, namespace, name, audit_namespace)
    if loaded is None:
        return None
    if fmt == "html":
        from lightbox.report_html import render_html

        return render_html(*loaded)
    return render(*loaded)


FORMATS = ("markdown", "html")


def output_choice(
    output: str | None, html: Path | None, output_file: Path | None
) -> tuple[str, Path | None, str | None]:
    """(format, file or None for standard output, a note for standard error). ``-o`` is kubectl's
    output format now; ``-o report.md`` (a file, as before) still works, with a note."""
    if html is not None:
        return "html", html, None
    if output is None or output in FORMATS:
        return output or "markdown", output_file, None
    path = Path(output)
    fmt = "html" if path.suffix.lower() in (".html", ".htm") else "markdown"
    return (
        fmt,
        path,
        f"-o FILE is deprecated: -o takes a format ({', '.join(FORMATS)}); use --output-file {output} or --html FILE",
    )


def main(argv: list[str]) -> int:
    from lightbox.kubectl_plugin import add_kube_arguments, api_client, resolve

    parser = argparse.ArgumentParser(prog="lightbox report", description=__doc__.split("\n\n")[0])
    parser.add_argument("validation", help="the Validation's name")
    add_kube_arguments(parser)
    parser.add_argument(
        "--audit-namespace", default=DEFAULT_AUDIT_NAMESPACE, help="where the audit trail is (default %(default)s)"
    )
    parser.add_argument("-o", "--output", help=f"format: {', '.join(FORMATS)} (default markdown)")
    parser.add_argument(
        "--html", type=Path, metavar="FILE", help="write the HTML report (plots inline, opens offline) here"
    )
    parser.add_argument(
        "--output-file", type=Path, metavar="FILE", help="write the report here instead of standard output"
    )
    args = parser.parse_args(argv)
    fmt, path, note = output_choice(args.output, args.html, args.output_file)
    if note:
        print(f"lightbox report: {note}", file=sys.stderr)
    try:
        target = resolve(args)
    except ValueError as exc:
        print(f"lightbox report: {exc}", file=sys.stderr)
        return 2
    text = report(api_client(target), target.namespace, args.validation, args.audit_namespace, fmt)
    if text is None:
        print(
            f"lightbox report: Validation {terminal(args.validation)} not found in namespace "
            f"{terminal(target.namespace)}",
            file=sys.stderr,
        )
        return 1
    if path:
        path.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
