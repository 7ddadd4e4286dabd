"""Evidence pooled across regions: signed exports, pooled AUC, sensitivity, specificity, I².

    lightbox evidence keygen -o region           (writes region.key and region.pub)
    lightbox evidence export VALIDATION -n NS --key region.key --region NAME [--run N] [-o FILE]
    lightbox federate FILE... --trust PUB... [--plot forest.png]

docs/federation.md is the format and the arithmetic. An export holds one run's sufficient
statistics (lightbox/api/evidence.py), never a case; it is signed with the region's ed25519 key
over the RFC 8785 serialisation of its payload. ``federate`` refuses a file that is unsigned,
altered, or signed by a key not given with ``--trust``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError
from scipy.stats import norm

from lightbox.api.evidence import BINS, Evidence
from lightbox.text import terminal

FORMAT = "lightbox-evidence/v1"


class EvidenceError(ValueError):
    """A file federate refuses, with the reason."""


# --- signing -------------------------------------------------------------------------------


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def sign(payload: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    public = key.public_key()
    signature = key.sign(rfc8785.dumps(dict(payload)))
    return {
        "format": FORMAT,
        "payload": dict(payload),
        "signature": {
            "algorithm": "ed25519",
            "keyId": key_id(public),
            "value": base64.b64encode(signature).decode(),
        },
    }


def verify_signed(document: Any, trusted: Mapping[str, Ed25519PublicKey]) -> dict[str, Any]:
    """The payload of a signed export, or EvidenceError saying why it is refused."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise EvidenceError(f"not a {FORMAT} document")
    signature = document.get("signature")
    if not isinstance(signature, dict) or not signature.get("value"):
        raise EvidenceError("unsigned: no signature")
    if signature.get("algorithm") != "ed25519":
        raise EvidenceError(f"signature algorithm {str(signature.get('algorithm'))[:32]!r} is not ed25519")
    public = trusted.get(str(signature.get("keyId")))
    if public is None:
        raise EvidenceError(f"signed by key {str(signature.get('keyId'))[:80]}, which is not among the trusted keys")
    payload = document.get("payload")
    if not isinstance(payload, dict):
        raise EvidenceError("no payload object")
    try:
        public.verify(base64.b64decode(str(signature["value"]), validate=True), rfc8785.dumps(payload))
    except (InvalidSignature, ValueError):
        raise EvidenceError("the signature does not match the payload: altered, or signed by another key") from None
    return payload


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise EvidenceError(f"{path}: not an ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise EvidenceError(f"{path}: not an ed25519 public key")
    return key


# --- pooling -------------------------------------------------------------------------------


def _checked(cells: Sequence[Sequence[int]] | None) -> list[tuple[int, int, int]]:
    out = []
    for cell in cells or ():
        start, end, count = (int(x) for x in cell)
        if not (0 <= start < end <= BINS) or count < 0:
            raise EvidenceError(f"cell {[start, end, count]} is not within bins 0..{BINS} with a count >= 0")
        out.append((start, end, count))
    return out


def exact_bins(cells: Sequence[Sequence[int]] | None) -> np.ndarray:
    """The counts of a class's single-bin cells (the bins a site published unmerged)."""
    out = np.zeros(BINS)
    for start, end, count in _checked(cells):
        if end - start == 1:
            out[start] += count
    return out


def spread(cells: Sequence[Sequence[int]] | None, shape: np.ndarray | None = None) -> np.ndarray:
    """A class's cells back on the fixed bins. A merged cell's count is shared out like ``shape``
    (the class's unmerged bins, pooled over all sites) within its span, or evenly where ``shape``
    has nothing there: small cells were merged where a site's data were thin, and the other
    sites usually show how that stretch of scores is filled."""
    out = np.zeros(BINS)
    for start, end, count in _checked(cells):
        weights = shape[start:end] if shape is not None else np.zeros(end - start)
        if weights.sum() <= 0:
            weights = np.ones(end - start)
        out[start:end] += count * weights / weights.sum()
    return out


@dataclass(frozen=True)
class Auc:
    value: float
    variance: float
    positives: float
    negatives: float

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        z = norm.ppf(0.5 + level / 2)
        half = z * math.sqrt(max(self.variance, 0.0))
        return max(0.0, self.value - half), min(1.0, self.value + half)


def binned_auc(pos: np.ndarray, neg: np.ndarray) -> Auc:
    """AUC of binned scores (a positive and a negative in one bin count half) with DeLong's
    variance from the binned structural components (docs/federation.md)."""
    p_total, n_total = float(pos.sum()), float(neg.sum())
    if p_total < 2 or n_total < 2:
        raise EvidenceError("an AUC needs at least two cases of each class")
    neg_below = np.cumsum(neg) - neg
    pos_above = p_total - np.cumsum(pos)
    v10 = (neg_below + 0.5 * neg) / n_total  # per positive in bin b: share of negatives it outranks
    v01 = (pos_above + 0.5 * pos) / p_total  # per negative in bin b: share of positives above it
    auc = float((pos * v10).sum() / p_total)
    s10 = float((pos * (v10 - auc) ** 2).sum() / (p_total - 1))
    s01 = float((neg * (v01 - auc) ** 2).sum() / (n_total - 1))
    return Auc(auc, s10 / p_total + s01 / n_total, p_total, n_total)


def wilson(successes: int, total: int, level: float = 0.95) -> tuple[float, float, float]:
    z = norm.ppf(0.5 + level / 2)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def heterogeneity(values: Sequence[float], variances: Sequence[float]) -> tuple[float, float]:
    """Cochran's Q and I² = max(0, (Q - (k - 1)) / Q) of per-site estimates (Higgins & Thompson 2002)."""
    v = np.asarray(values, dtype=float)
    w = 1 / np.asarray(variances, dtype=float)
    mean = float((w * v).sum() / w.sum())
    q = float((w * (v - mean) ** 2).sum())
    i2 = max(0.0, (q - (len(v) - 1)) / q) if q > 0 else 0.0
    return q, i2


@dataclass(frozen=True)
class Site:
    name: str
    evidence: Evidence
    auc: Auc | None


@dataclass(frozen=True)
class Pooled:
    sites: list[Site]
    auc: Auc
    sensitivity: tuple[float, float, float] | None
    specificity: tuple[float, float, float] | None
    sensitivity_sites: list[str]
    specificity_sites: list[str]
    q: float | None
    i2: float | None


def pool(sites: Sequence[tuple[str, Evidence]]) -> Pooled:
    if not sites:
        raise EvidenceError("nothing to pool")
    thresholds = {e.threshold for _, e in sites}
    if len(thresholds) > 1:
        raise EvidenceError(
            f"the sites used different operating thresholds {sorted(thresholds)}: sensitivity and specificity do not "
            "pool"
        )
    usable = [(n, e) for n, e in sites if e.positives is not None and e.negatives is not None]
    pos_shape = sum((exact_bins(e.positives) for _, e in usable), np.zeros(BINS))
    neg_shape = sum((exact_bins(e.negatives) for _, e in usable), np.zeros(BINS))
    pos_total, neg_total = np.zeros(BINS), np.zeros(BINS)
    per_site: list[Site] = []
    for name, ev in sites:
        if ev.positives is None or ev.negatives is None:
            per_site.append(Site(name, ev, None))  # a suppressed class: too small to contribute
            continue
        pos, neg = spread(ev.positives, pos_shape), spread(ev.negatives, neg_shape)
        pos_total += pos
        neg_total += neg
        per_site.append(Site(name, ev, binned_auc(pos, neg)))
    pooled_auc = binned_auc(pos_total, neg_total)
    sens_sites = [s.name for s in per_site if s.evidence.confusion.tp is not None]
    spec_sites = [s.name for s in per_site if s.evidence.confusion.tn is not None]
    tp = sum(s.evidence.confusion.tp or 0 for s in per_site)
    fn = sum(s.evidence.confusion.fn or 0 for s in per_site)
    tn = sum(s.evidence.confusion.tn or 0 for s in per_site)
    fp = sum(s.evidence.confusion.fp or 0 for s in per_site)
    with_auc = [s.auc for s in per_site if s.auc is not None and s.auc.variance > 0]
    q, i2 = (
        heterogeneity([a.value for a in with_auc], [a.variance for a in with_auc])
        if len(with_auc) >= 2
        else (None, None)
    )
    return Pooled(
        sites=per_site,
        auc=pooled_auc,
        sensitivity=wilson(tp, tp + fn) if tp + fn else None,
        specificity=wilson(tn, tn + fp) if tn + fp else None,
        sensitivity_sites=sens_sites,
        specificity_sites=spec_sites,
        q=q,
        i2=i2,
    )


# --- presentation --------------------------------------------------------------------------


def forest_text(pooled: Pooled, width: int = 50) -> list[str]:
    """A forest plot in text: each site's AUC interval and point, then the pooled one."""
    rows = [(s.name, s.auc) for s in pooled.sites if s.auc is not None] + [("pooled", pooled.auc)]
    lows = [a.interval()[0] for _, a in rows]
    lo = max(0.0, math.floor(min(lows) * 20) / 20)
    hi = 1.0
    name_width = max(len(n) for n, _ in rows)

    def col(x: float) -> int:
        return min(width - 1, max(0, round((x - lo) / (hi - lo) * (width - 1))))

    out = [f"{'':{name_width}}  {lo:<.2f}{'':{width - 8}}{hi:.2f}"]
    for name, auc in rows:
        low, high = auc.interval()
        line = [" "] * width
        for i in range(col(low), col(high) + 1):
            line[i] = "-"
        line[col(auc.value)] = "#" if name == "pooled" else "o"
        out.append(f"{name:{name_width}}  {''.join(line)}  {auc.value:.3f} [{low:.3f}, {high:.3f}]")
    return out


def forest_png(pooled: Pooled, path: Path) -> bool:
    """The forest plot as a PNG with matplotlib, if installed; False otherwise."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [(s.name, s.auc) for s in pooled.sites if s.auc is not None] + [("pooled", pooled.auc)]
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(rows) + 1))
    for i, (name, auc) in enumerate(reversed(rows)):
        low, high = auc.interval()
        ax.plot([low, high], [i, i], color="black")
        ax.plot([auc.value], [i], "D" if name == "pooled" else "s", color="black")
    ax.set_yticks(range(len(rows)), [n for n, _ in reversed(rows)])
    ax.set_xlabel("AUC (95% interval)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def render(pooled: Pooled) -> str:
    lines = ["site  positives  negatives  AUC [95% CI]  sensitivity  specificity"]
    for s in pooled.sites:
        c = s.evidence.confusion
        auc = f"{s.auc.value:.3f} [{s.auc.interval()[0]:.3f}, {s.auc.interval()[1]:.3f}]" if s.auc else "suppressed"
        sens = f"{c.tp / (c.tp + c.fn):.3f}" if c.tp is not None and c.fn is not None and c.tp + c.fn else "suppressed"
        spec = f"{c.tn / (c.tn + c.fp):.3f}" if c.tn is not None and c.fp is not None and c.tn + c.fp else "suppressed"
        n_pos = f"{s.auc.positives:.0f}" if s.auc else "-"
        n_neg = f"{s.auc.negatives:.0f}" if s.auc else "-"
        lines.append(f"{terminal(s.name)}  {n_pos}  {n_neg}  {auc}  {sens}  {spec}")
    low, high = pooled.auc.interval()
    lines.append(
        f"pooled AUC {pooled.auc.value:.4f} [{low:.4f}, {high:.4f}] (binned DeLong, {pooled.auc.positives:.0f} "
        f"positives, {pooled.auc.negatives:.0f} negatives)"
    )
    for what, value, names in (
        ("sensitivity", pooled.sensitivity, pooled.sensitivity_sites),
        ("specificity", pooled.specificity, pooled.specificity_sites),
    ):
        if value is None:
            lines.append(f"pooled {what}: no site published its counts")
        else:
            lines.append(
                f"pooled {what} {value[0]:.4f} [{value[1]:.4f}, {value[2]:.4f}] (Wilson; sites "
                f"{', '.join(map(terminal, names))})"
            )
    if pooled.i2 is None:
        lines.append("heterogeneity: needs two sites with an AUC")
    else:
        lines.append(
            f"heterogeneity: Q = {pooled.q:.2f} on {sum(1 for s in pooled.sites if s.auc) - 1} df, I² = "
            f"{100 * pooled.i2:.0f}%"
        )
    return "\n".join(lines + ["", "forest plot (o site, # pooled):", *forest_text(pooled)]) + "\n"


def read_signed(path: Path, trusted: Mapping[str, Ed25519PublicKey]) -> tuple[str, Evidence]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvidenceError(f"cannot read: {exc}") from None
    payload = verify_signed(document, trusted)
    try:
        evidence = Evidence.model_validate(payload.get("evidence"))
    except ValidationError as exc:
        raise EvidenceError(f"payload.evidence: {exc.errors(include_input=False)[0]['msg']}") from None
    region = str(payload.get("region") or path.stem)[:64]
    return region, evidence


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lightbox federate", description="pool signed evidence exports of several regions"
    )
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--trust", nargs="+", type=Path, required=True, help="PEM ed25519 public keys of the regions")
    parser.add_argument("--plot", type=Path, help="write the forest plot as PNG (needs matplotlib)")
    args = parser.parse_args(argv)
    try:
        trusted = {key_id(k): k for k in (load_public_key(p) for p in args.trust)}
    except (OSError, ValueError) as exc:
        print(f"lightbox federate: --trust: {terminal(str(exc))}", file=sys.stderr)
        return 2
    sites: list[tuple[str, Evidence]] = []
    refused = 0
    for path in args.files:
        try:
            sites.append(read_signed(path, trusted))
        except EvidenceError as exc:
            print(f"lightbox federate: refused {terminal(str(path))}: {terminal(str(exc))}", file=sys.stderr)
            refused += 1
    if refused:
        return 1
    try:
        pooled = pool(sites)
    except EvidenceError as exc:
        print(f"lightbox federate: {terminal(str(exc))}", file=sys.stderr)
        return 1
    sys.stdout.write(render(pooled))
    if args.plot and not forest_png(pooled, args.plot):
        print("lightbox federate: matplotlib is not installed; the forest plot is the text one above", file=sys.stderr)
    return 0


# --- export (the `lightbox evidence` command) ----------------------------------------------


def payload_from_record(record: Mapping[str, Any], region: str, now: datetime) -> dict[str, Any]:
    """What a region publishes of one run: who ran what on which data, and the statistics."""
    spec = record["spec"]
    evidence = spec.get("evidence")
    if not evidence:
        raise EvidenceError(
            f"audit record {record['metadata']['name']} holds no evidence (not a classification run, or written before "
            "evidence existed)"
        )
    run, algorithm, dataset = spec.get("run") or {}, spec.get("algorithm") or {}, spec.get("dataset") or {}
    return {
        "region": region,
        "exportedAt": now.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "auditRecord": {"name": record["metadata"]["name"], "hash": spec.get("hash")},
        "run": {k: run.get(k) for k in ("name", "number", "finishedAt", "verdict") if run.get(k) is not None},
        "algorithm": {
            k: algorithm.get(k) for k in ("vendor", "product", "version", "image") if algorithm.get(k) is not None
        },
        "dataset": {k: dataset.get(k) for k in ("contentHash", "caseCount") if dataset.get(k) is not None},
        "evidence": evidence,
    }


def evidence_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lightbox evidence", description="a region's signed evidence: keygen, export")
    sub = parser.add_subparsers(dest="action", required=True)
    keygen = sub.add_parser(
        "keygen", help="write PREFIX.key (PEM, keep it secret) and PREFIX.pub (give it to the other regions)"
    )
    keygen.add_argument("-o", "--output", type=Path, required=True, help="PREFIX")
    export = sub.add_parser("export", help="sign one run's evidence from the audit trail")
    export.add_argument("validation")
    export.add_argument("-n", "--namespace", required=True, help="the Validation's namespace")
    export.add_argument("--run", type=int, help="run number (default: the newest with evidence)")
    export.add_argument("--key", type=Path, required=True)
    export.add_argument("--region", required=True)
    export.add_argument("-o", "--output", type=Path)
    export.add_argument("--kubeconfig")
    export.add_argument("--audit-namespace", default="lightbox-audit")
    args = parser.parse_args(argv)
    if args.action == "keygen":
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key_path = args.output.with_name(args.output.name + ".key")
        if key_path.exists():
            print(
                f"lightbox evidence: {terminal(str(key_path))} exists; a region's key is not overwritten",
                file=sys.stderr,
            )
            return 2
        key_path.touch(mode=0o600)
        key_path.write_bytes(private)
        args.output.with_name(args.output.name + ".pub").write_bytes(public)
        print(f"wrote {key_path} and {args.output.name}.pub (key id {key_id(key.public_key())})")
        return 0
    from kubernetes import client
    from kubernetes import config as kube_config

    api = client.CustomObjectsApi(kube_config.new_client_from_config(args.kubeconfig))
    selector = f"lightbox.dev/validation-namespace={args.namespace},lightbox.dev/validation={args.validation}"
    items = api.list_namespaced_custom_object(
        "lightbox.dev", "v1alpha1", args.audit_namespace, "auditrecords", label_selector=selector
    )["items"]
    runs = [
        i
        for i in items
        if i["spec"].get("evidence") and (args.run is None or (i["spec"].get("run") or {}).get("number") == args.run)
    ]
    if not runs:
        print(
            f"lightbox evidence: no run of {terminal(args.namespace)}/{terminal(args.validation)} with evidence in the "
            "audit trail",
            file=sys.stderr,
        )
        return 1
    record = max(runs, key=lambda i: (i["spec"]["recordedAt"], i["spec"]["chain"]["sequence"]))
    document = sign(payload_from_record(record, args.region, datetime.now(UTC)), load_private_key(args.key))
    text = json.dumps(document, indent=1, sort_keys=True) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
