"""``lightbox audit``: export, verify and prune the hash-chained audit trail (docs/audit.md).

    lightbox audit export (-n NS | -A) [--format jsonl|csv] [-f FILE]
    lightbox audit verify FILE | --cluster [-n NS | -A]
    lightbox audit prune [--retention-days N] [--dry-run] [-n NS]

Exit status: 0 when every chain verifies, 1 when verify names a record, 2 for bad usage
or a file that cannot be read.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rfc8785

from lightbox import auditchain
from lightbox.text import terminal

API_GROUP, API_VERSION, PLURAL = "lightbox.dev", "v1alpha1", "auditrecords"
DEFAULT_AUDIT_NAMESPACE = "lightbox-audit"
LABEL_VALIDATION_NAMESPACE = "lightbox.dev/validation-namespace"
# CSV columns for people; the last one, spec, is the record itself (RFC 8785 JSON) so a CSV
# export verifies like a JSON Lines one.
CSV_COLUMNS = (
    "name", "chain", "sequence", "event", "recordedAt", "validationNamespace", "validation", "run", "phase",
    "verdict", "algorithmVersion", "datasetHash", "previousHash", "hash", "spec",
)


class ExportError(ValueError):
    """An export file that cannot be read as one (says which line and why)."""


def exported(record: Mapping[str, Any]) -> dict[str, Any]:
    """What an export keeps of a record: identity and the whole spec (metadata is not hashed)."""
    meta = record.get("metadata") or {}
    keep = {k: meta[k] for k in ("name", "namespace", "labels", "creationTimestamp") if k in meta}
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "AuditRecord", "metadata": keep, "spec": record["spec"]}


def to_jsonl(records: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(exported(r), sort_keys=True, ensure_ascii=False) + "\n" for r in records)


def _row(record: Mapping[str, Any]) -> dict[str, Any]:
    spec = record["spec"]
    chain, run = spec.get("chain") or {}, spec.get("run") or {}
    return {
        "name": (record.get("metadata") or {}).get("name", ""),
        "chain": chain.get("id", ""),
        "sequence": chain.get("sequence", ""),
        "event": spec.get("event", ""),
        "recordedAt": spec.get("recordedAt", ""),
        "validationNamespace": (spec.get("validation") or {}).get("namespace", ""),
        "validation": (spec.get("validation") or {}).get("name", ""),
        "run": run.get("name", ""),
        "phase": run.get("phase", ""),
        "verdict": run.get("verdict", ""),
        "algorithmVersion": (spec.get("algorithm") or {}).get("version", ""),
        "datasetHash": (spec.get("dataset") or {}).get("contentHash", ""),
        "previousHash": chain.get("previousHash", ""),
        "hash": spec.get("hash", ""),
        "spec": rfc8785.dumps(dict(spec)).decode(),
    }


def to_csv(records: Iterable[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(_row(record))
    return out.getvalue()


def read_export(text: str) -> list[dict[str, Any]]:
    """Records of a JSON Lines or CSV export, in file order. Only ``spec`` (and the name) count:
    the other CSV columns are for reading and are not trusted."""
    if text.startswith("name,") or text.startswith('"name"'):
        records = []
        for number, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
            try:
                spec = json.loads(row.get("spec") or "")
            except json.JSONDecodeError as exc:
                raise ExportError(f"CSV line {number}: column spec is not JSON ({exc.msg})") from None
            records.append({"metadata": {"name": row.get("name") or None}, "spec": spec})
        return records
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ExportError(f"line {number}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise ExportError(f"line {number}: a record must be a JSON object")
        records.append(item)
    return records


def _api(kubeconfig: str | None) -> Any:
    from kubernetes import client
    from kubernetes import config as kube_config

    return client.CustomObjectsApi(kube_config.new_client_from_config(kubeconfig))


def cluster_records(api: Any, audit_namespace: str, namespace: str | None) -> list[Mapping[str, Any]]:
    """Records in the audit namespace (of Validations in ``namespace`` if given), in chain order."""
    selector = f"{LABEL_VALIDATION_NAMESPACE}={namespace}" if namespace else None
    items = api.list_namespaced_custom_object(API_GROUP, API_VERSION, audit_namespace, PLURAL, label_selector=selector)[
        "items"
    ]
    return list(auditchain.by_sequence(items))


def _report(findings: list[auditchain.Finding], records: int, source: str) -> int:
    if not findings:
        print(f"audit verify: {records} records verified ({source}); every chain intact")
        return 0
    first = findings[0]
    print(f"audit verify: FAILED ({source}): first: {terminal(first.describe())}", file=sys.stderr)
    for finding in findings[1:]:
        print(f"  also: {terminal(finding.describe())}", file=sys.stderr)
    return 1


def _prune(
    api: Any, audit_namespace: str, retention_days: int, dry_run: bool, now: datetime, namespace: str | None = None
) -> int:
    from lightbox.operator import audit as audit_mod

    records = cluster_records(api, audit_namespace, namespace)
    chains: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        chains.setdefault(str(record["spec"]["chain"]["id"]), []).append(record)
    status = 0
    for chain_id, items in chains.items():
        broken = auditchain.verify(items, min_retention_days=1)
        if broken:
            # Removing records of a broken chain would erase the evidence of what broke it.
            print(f"audit prune: chain {chain_id} left alone: {terminal(broken[0].describe())}", file=sys.stderr)
            status = 1
            continue
        plan = auditchain.plan_prune(items, now, retention_days)
        if plan.cut is not None:
            body = audit_mod.retention_cut(items, plan.cut, now, "lightbox-audit-prune")
            print(
                f"{'would append' if dry_run else 'append'} {body['metadata']['name']}: first kept "
                f"#{plan.cut['firstKept']}"
            )
            if not dry_run:
                api.create_namespaced_custom_object(API_GROUP, API_VERSION, audit_namespace, PLURAL, body)
        for name in plan.delete:  # oldest first
            print(f"{'would delete' if dry_run else 'delete'} {name}")
            if not dry_run:
                api.delete_namespaced_custom_object(API_GROUP, API_VERSION, audit_namespace, PLURAL, name)
    return status


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightbox audit", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)

    def cluster_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config")
        q.add_argument(
            "--audit-namespace", default=DEFAULT_AUDIT_NAMESPACE, help="where the records are (default %(default)s)"
        )

    export = sub.add_parser("export", help="write the records as JSON Lines or CSV")
    scope = export.add_mutually_exclusive_group(required=True)
    scope.add_argument("-n", "--namespace", help="records of the Validations of this namespace")
    scope.add_argument("-A", "--all-namespaces", action="store_true")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("-f", "--file", type=Path, help="default: standard output")
    cluster_args(export)

    verify = sub.add_parser(
        "verify", help="recompute the chains and name the first record altered, removed or reordered"
    )
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", type=Path, help="an export file (JSON Lines or CSV)")
    source.add_argument("--cluster", action="store_true", help="the records in the cluster")
    verify.add_argument("-n", "--namespace", help="with --cluster: only the Validations of this namespace")
    verify.add_argument(
        "--min-retention-days", type=int, default=auditchain.DEFAULT_RETENTION_DAYS,
        help="a retention cut that kept records for less is a finding (default %(default)s)",
    )
    cluster_args(verify)

    prune = sub.add_parser("prune", help="remove expired records oldest-first, after a RetentionCut record")
    prune.add_argument("--retention-days", type=int, default=auditchain.DEFAULT_RETENTION_DAYS)
    prune.add_argument("--dry-run", action="store_true")
    prune.add_argument("-n", "--namespace", help="only the chains of the Validations of this namespace")
    cluster_args(prune)
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    records: Sequence[Mapping[str, Any]]
    if args.action == "verify" and args.file is not None:
        try:
            records = read_export(args.file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ExportError) as exc:
            print(f"audit verify: {terminal(str(args.file))}: {terminal(str(exc))}", file=sys.stderr)
            return 2
        return _report(auditchain.verify(records, args.min_retention_days), len(records), str(args.file))
    if args.action == "prune" and args.retention_days < auditchain.DEFAULT_RETENTION_DAYS:
        print(
            f"audit prune: --retention-days {args.retention_days} is below the minimum of "
            f"{auditchain.DEFAULT_RETENTION_DAYS} (six months, EU AI Act art. 19 and 26)",
            file=sys.stderr,
        )
        return 2
    api = _api(args.kubeconfig)
    if args.action == "prune":
        return _prune(api, args.audit_namespace, args.retention_days, args.dry_run, datetime.now(UTC), args.namespace)
    namespace = None if getattr(args, "all_namespaces", False) else args.namespace
    records = cluster_records(api, args.audit_namespace, namespace)
    if args.action == "verify":
        return _report(
            auditchain.verify(records, args.min_retention_days), len(records), f"namespace {args.audit_namespace}"
        )
    text = to_csv(records) if args.format == "csv" else to_jsonl(records)
    if args.file:
        args.file.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
