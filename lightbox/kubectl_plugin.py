"""``kubectl lightbox``: Lightbox's objects the way kubectl users read them.

    kubectl lightbox status [-A] [-o table|yaml|json]
    kubectl lightbox runs VALIDATION [-o table|yaml|json]
    kubectl lightbox report VALIDATION [--html FILE] [--output-file FILE]
    kubectl lightbox logs RUN --step stage|score

kubectl's conventions: ``-n`` defaults to the namespace of the kubeconfig context, ``--context``
and ``--kubeconfig`` choose them. ``logs`` shows the trusted steps only: the vendor's container
sees the studies, so its log is a channel out of the sandbox (docs/covert-channel.md).
The renderers (rows, table) are pure; ``main`` only reads objects.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightbox.text import terminal

FORMATS = ("table", "yaml", "json")
TRUSTED_STEPS = ("stage", "score")
VENDOR_REFUSAL = (
    "the vendor step's log is written by the vendor's container, which sees the studies: it could carry "
    "case data out of the sandbox (docs/covert-channel.md), so only the trusted steps stage and score are shown"
)


@dataclass(frozen=True)
class Target:
    """Where a command reads: the kubeconfig, context and namespace as kubectl would pick them."""

    kubeconfig: str | None
    context: str | None
    namespace: str
    all_namespaces: bool = False


def add_kube_arguments(parser: argparse.ArgumentParser, all_namespaces: bool = False) -> None:
    parser.add_argument("-n", "--namespace", help="default: the namespace of the kubeconfig context, else default")
    parser.add_argument("--context", help="the kubeconfig context to use (default: the current one)")
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config")
    if all_namespaces:
        parser.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")


def context_namespace(
    contexts: Sequence[Mapping[str, Any]], current: Mapping[str, Any] | None, wanted: str | None
) -> str:
    """The namespace kubectl would use: that of the named (else the current) context, else default."""
    chosen = current if wanted is None else next((c for c in contexts if c.get("name") == wanted), None)
    if wanted is not None and chosen is None:
        raise ValueError(f"--context: no context named {wanted!r} in the kubeconfig")
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def resolve(args: argparse.Namespace) -> Target:
    from kubernetes import config as kube_config

    namespace = args.namespace
    if namespace is None:
        try:
            contexts, current = kube_config.list_kube_config_contexts(args.kubeconfig)
        except kube_config.ConfigException:
            contexts, current = [], None
        namespace = context_namespace(contexts, current, args.context)
    return Target(args.kubeconfig, args.context, namespace, bool(getattr(args, "all_namespaces", False)))


def api_client(target: Target) -> Any:
    from kubernetes import config as kube_config

    return kube_config.new_client_from_config(target.kubeconfig, context=target.context)


# --- pure renderers ------------------------------------------------------------------------


def _main_metric(status: Mapping[str, Any]) -> str | None:
    return status.get("summary")


def status_rows(validations: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per Validation: its latest run, verdict and next tick."""
    rows = []
    for v in validations:
        meta, spec, status = v.get("metadata", {}), v.get("spec", {}), v.get("status") or {}
        runs = status.get("runs") or []
        latest = runs[-1] if runs else {}
        rows.append({
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "phase": status.get("phase"),
            "latestRun": latest.get("name"),
            "latestRunPhase": latest.get("phase"),
            "verdict": status.get("verdict"),
            "metric": _main_metric(status),
            "schedule": spec.get("schedule"),
            "nextRunTime": status.get("nextRunTime"),
        })
    return sorted(rows, key=lambda r: (r["namespace"] or "", r["name"] or ""))


def runs_rows(validation: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for run in (validation.get("status") or {}).get("runs") or []:
        metrics = run.get("metrics") or {}
        rows.append({
            "number": run.get("number"),
            "name": run.get("name"),
            "phase": run.get("phase"),
            "reason": run.get("reason"),
            "verdict": run.get("verdict"),
            "cases": run.get("cases"),
            "scored": run.get("scored"),
            "metrics": {k: m.get("value") for k, m in metrics.items()},
            "finishedAt": run.get("finishedAt"),
        })
    return rows


STATUS_COLUMNS = (
    ("NAMESPACE", "namespace"),
    ("NAME", "name"),
    ("PHASE", "phase"),
    ("LATEST RUN", "latestRun"),
    ("RUN PHASE", "latestRunPhase"),
    ("VERDICT", "verdict"),
    ("METRIC", "metric"),
    ("NEXT RUN", "nextRunTime"),
)
RUNS_COLUMNS = (("#", "number"), ("NAME", "name"), ("PHASE", "phase"), ("REASON", "reason"), ("VERDICT", "verdict"),
                ("SCORED", "scored"), ("METRICS", "metrics"), ("FINISHED", "finishedAt"))


def _cell(value: Any) -> str:
    if value is None or value == "" or value == {}:
        return "<none>"
    if isinstance(value, dict):
        return ",".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(value.items()))
    # names, reasons and group labels come from users: no terminal control sequences
    return terminal(str(value))


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """kubectl's plain table: upper-case headers, columns padded by three spaces."""
    cells = [[h for h, _ in columns]] + [[_cell(r.get(key)) for _, key in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells) + "\n"


def render(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"items": rows}, indent=2, default=str) + "\n"
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump({"items": rows}, sort_keys=False)
    return table(rows, columns)


# --- commands ------------------------------------------------------------------------------


def _list_validations(client: Any, target: Target) -> list[dict[str, Any]]:
    from kubernetes import client as k8s

    from lightbox.api import API_GROUP, API_VERSION

    api = k8s.CustomObjectsApi(client)
    if target.all_namespaces:
        return api.list_cluster_custom_object(API_GROUP, API_VERSION, "validations")["items"]
    return api.list_namespaced_custom_object(API_GROUP, API_VERSION, target.namespace, "validations")["items"]


def _get_validation(client: Any, target: Target, name: str) -> dict[str, Any] | None:
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    from lightbox.api import API_GROUP, API_VERSION

    try:
        return k8s.CustomObjectsApi(client).get_namespaced_custom_object(
            API_GROUP, API_VERSION, target.namespace, "validations", name
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _logs(client: Any, target: Target, run: str, step: str) -> str | None:
    from kubernetes import client as k8s

    from lightbox.api import run as layout
    from lightbox.operator.builders import label_value

    pods = (
        k8s.CoreV1Api(client)
        .list_namespaced_pod(target.namespace, label_selector=f"{layout.LABEL_RUN}={label_value(run)}")
        .items
    )
    pods = [p for p in pods if p.metadata.labels.get(layout.LABEL_RUN) == label_value(run)]
    if not pods:
        return None
    container = {"stage": layout.STAGE_CONTAINER, "score": layout.SCORE_CONTAINER}[step]
    return k8s.CoreV1Api(client).read_namespaced_pod_log(pods[-1].metadata.name, target.namespace, container=container)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubectl lightbox", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)
    status = sub.add_parser("status", help="Validations with their latest run, verdict and next tick")
    add_kube_arguments(status, all_namespaces=True)
    status.add_argument("-o", "--output", choices=FORMATS, default="table")
    runs = sub.add_parser("runs", help="a Validation's runs")
    runs.add_argument("validation")
    add_kube_arguments(runs)
    runs.add_argument("-o", "--output", choices=FORMATS, default="table")
    report = sub.add_parser("report", help="a Validation's report (Markdown, or HTML with --html FILE)")
    report.add_argument("validation")
    add_kube_arguments(report)
    report.add_argument("--html", type=Path, metavar="FILE", help="write the HTML report here")
    report.add_argument(
        "--output-file", type=Path, metavar="FILE", help="write the Markdown here instead of standard output"
    )
    report.add_argument("--audit-namespace", default=None)
    logs = sub.add_parser("logs", help="a run's trusted step's log (stage or score; never the vendor's)")
    logs.add_argument("run")
    add_kube_arguments(logs)
    logs.add_argument("--step", required=True, help="stage or score")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.verb == "logs" and args.step not in TRUSTED_STEPS:
        reason = VENDOR_REFUSAL if args.step == "vendor" else f"allowed: {', '.join(TRUSTED_STEPS)}"
        print(f"kubectl lightbox logs: --step {terminal(args.step)} refused: {reason}", file=sys.stderr)
        return 2
    if args.verb == "report":
        from lightbox import report

        forwarded = [args.validation, "-n", resolve(args).namespace]
        forwarded += ["--kubeconfig", args.kubeconfig] if args.kubeconfig else []
        forwarded += ["--context", args.context] if args.context else []
        forwarded += ["--html", str(args.html)] if args.html else []
        forwarded += ["--output-file", str(args.output_file)] if args.output_file else []
        forwarded += ["--audit-namespace", args.audit_namespace] if args.audit_namespace else []
        return report.main(forwarded)
    try:
        target = resolve(args)
    except ValueError as exc:
        print(f"kubectl lightbox: {exc}", file=sys.stderr)
        return 2
    client = api_client(target)
    if args.verb == "status":
        sys.stdout.write(render(status_rows(_list_validations(client, target)), STATUS_COLUMNS, args.output))
        return 0
    if args.verb == "runs":
        validation = _get_validation(client, target, args.validation)
        if validation is None:
            print(
                f"kubectl lightbox: Validation {terminal(args.validation)} not found in namespace "
                f"{terminal(target.namespace)}",
                file=sys.stderr,
            )
            return 1
        sys.stdout.write(render(runs_rows(validation), RUNS_COLUMNS, args.output))
        return 0
    text = _logs(client, target, args.run, args.step)
    if text is None:
        print(
            f"kubectl lightbox: no pod for run {terminal(args.run)} in namespace {terminal(target.namespace)}",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
