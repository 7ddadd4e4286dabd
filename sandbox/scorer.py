"""``lightbox score``: the trusted step that turns predictions and ground truth into numbers.

Reads ScorerConfig (env LIGHTBOX_SCORER_CONFIG), LIGHTBOX_OUTPUT_DIR/predictions.json,
LIGHTBOX_TRUTH_DIR and LIGHTBOX_WORK_DIR/cases.json. Writes a ScoreReport to the termination
log (<= 4096 bytes; the ROC curve is down-sampled to fit) and the full result, with per-case
values, to LIGHTBOX_WORK_DIR/results.json.

Only numbers cross from the vendor's output into the report: case ids are looked up, never
copied, and no vendor string (label names aside, which come from the config) is echoed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from lightbox.api.results import TERMINATION_MESSAGE_LIMIT, FailureSummary, MetricValue, ScoreReport, SubgroupResult
from lightbox.api.run import (
    CASES_FILE,
    EXIT_GROUND_TRUTH_UNREADABLE,
    EXIT_MALFORMED_PREDICTIONS,
    EXIT_OK,
    OUTPUT_DIR_ENV,
    PREDICTIONS_FILE,
    RESULTS_FILE,
    SCORER_CONFIG_ENV,
    TRUTH_DIR_ENV,
    WORK_DIR_ENV,
    ScorerConfig,
)
from lightbox.sandbox import evidence, packaging, release, safeio
from lightbox.sandbox.contract import MAX_PREDICTIONS_BYTES
from lightbox.sandbox.metrics import classification as cls
from lightbox.sandbox.metrics import detection as det
from lightbox.sandbox.metrics import segmentation as seg
from lightbox.sandbox.metrics._stats import Unavailable, bootstrap_interval, bootstrap_mean_interval, resample_weights
from lightbox.sandbox.packaging_mha import mha_file_limit, read_mha
from lightbox.sandbox.segfile import read_seg, seg_limits
from lightbox.sandbox.steps import directory, fail, read_json_env, write_termination

EXIT_CONFIG_INVALID = 2
DEFAULT_POSITIVE_LABEL = "abnormal"
DEFAULT_METRICS = {
    "classification": ["auc", "sensitivity", "specificity", "ppv", "npv", "youdenThreshold", "brier", "ece"],
    "segmentation": ["dice", "iou", "hd95"],
    "detection": ["frocSensitivity"],
}
SUBGROUP_METRICS = {
    "classification": ["auc", "sensitivity", "specificity"],
    "segmentation": ["dice", "hd95"],
    "detection": ["frocSensitivity"],
}


class ScoreError(Exception):
    def __init__(self, reason: str, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.reason, self.message, self.exit_code = reason, message, exit_code


def _truth_error(message: str) -> ScoreError:
    return ScoreError("GroundTruthUnreadable", message, EXIT_GROUND_TRUTH_UNREADABLE)


def _predictions_error(message: str) -> ScoreError:
    return ScoreError("MalformedPredictions", message, EXIT_MALFORMED_PREDICTIONS)


@dataclass
class Failures:
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    nan: list[str] = field(default_factory=list)

    def summary(self) -> FailureSummary:
        return FailureSummary(missing=len(self.missing), unreadable=len(self.unreadable), nan=len(self.nan))


# --- inputs ------------------------------------------------------------------------------


def load_cases(work: Path) -> dict[str, dict[str, Any]]:
    try:
        doc = json.loads((work / CASES_FILE).read_text())
        cases = doc["cases"]
        if not isinstance(cases, dict) or not all(isinstance(v, dict) and "source" in v for v in cases.values()):
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _truth_error(f"{CASES_FILE} from the stage step is missing or malformed") from exc
    return cases


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise _truth_error(f"{what} is missing from the ground truth") from exc
    except ValueError as exc:
        raise _truth_error(f"{what} is not valid JSON ({type(exc).__name__})") from exc


def load_predictions(output: Path, task: str) -> dict[str, Any]:
    """The 'cases' object of predictions.json, read without following links and bounded
    before parsing. Every message names the broken rule only: no text, and no number the vendor
    chose (a size, a line number), reaches the run's status."""
    try:
        doc = safeio.parse_json(
            safeio.read_beneath(output, PREDICTIONS_FILE, PREDICTIONS_FILE, MAX_PREDICTIONS_BYTES), PREDICTIONS_FILE
        )
    except (safeio.HostileOutput, safeio.Unreadable) as exc:
        raise _predictions_error(exc.rule) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), dict):
        raise _predictions_error(f"{PREDICTIONS_FILE} must be an object with a 'cases' object")
    if doc.get("task", task) != task:
        raise _predictions_error(f"{PREDICTIONS_FILE} is for another task than {task}")
    if doc.get("contractVersion", "v1") != "v1":
        raise _predictions_error(f"{PREDICTIONS_FILE} declares an unsupported contract version")
    return doc["cases"]


def collected_predictions(cfg: ScorerConfig, output: Path, cases: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """Another packaging's per-case outputs as predictions.json's 'cases' (sandbox/packaging.py)."""
    try:
        return packaging.collect(cfg.packaging, cfg.task, output, cases, _positive_label(cfg)).cases
    except safeio.HostileOutput as exc:
        raise _predictions_error(exc.rule) from exc


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


# --- classification ------------------------------------------------------------------------


def _positive_label(cfg: ScorerConfig) -> str:
    if cfg.positive_label:
        return cfg.positive_label
    if DEFAULT_POSITIVE_LABEL in cfg.labels or not cfg.labels:
        return DEFAULT_POSITIVE_LABEL
    return cfg.labels[-1] if len(cfg.labels) == 2 else cfg.labels[0]


def _truth_is_positive(entry: Any, positive: str) -> bool:
    label = entry.get("label") if isinstance(entry, dict) else entry
    if isinstance(label, bool):
        return label
    if isinstance(label, (int, float)):
        return label == 1
    if isinstance(label, str):
        return label == positive
    raise ValueError


@dataclass
class Scored:
    ids: list[str]
    values: dict[str, np.ndarray]  # per-case arrays aligned with ids
    per_case: dict[str, dict[str, float]]


def score_classification_inputs(
    cases: Mapping[str, dict[str, Any]], truth_dir: Path, preds: Mapping[str, Any], positive: str, failures: Failures
) -> Scored:
    labels = _read_json(truth_dir / "labels.json", "labels.json")
    if not isinstance(labels, dict):
        raise _truth_error("labels.json must map case to label")
    ids: list[str] = []
    ys: list[bool] = []
    ss: list[float] = []
    per_case: dict[str, dict[str, float]] = {}
    for case_id, info in cases.items():
        if info["source"] not in labels:
            raise _truth_error(
                f"labels.json has no entry for {sum(c['source'] not in labels for c in cases.values())} staged cases"
            )
        try:
            y = _truth_is_positive(labels[info["source"]], positive)
        except ValueError as exc:
            raise _truth_error("labels.json has entries without a usable label") from exc
        entry = preds.get(case_id)
        if entry is None:
            failures.missing.append(case_id)
            continue
        scores = entry.get("scores") if isinstance(entry, dict) else None
        value = _number(scores.get(positive)) if isinstance(scores, dict) else None
        if value is None:
            failures.unreadable.append(case_id)
            continue
        if not math.isfinite(value) or not 0 <= value <= 1:
            failures.nan.append(case_id)
            continue
        ids.append(case_id)
        ys.append(y)
        ss.append(value)
        per_case[case_id] = {"truth": float(y), "score": value}
    return Scored(ids, {"y": np.asarray(ys, bool), "score": np.asarray(ss, float)}, per_case)


def _mv(
    value: float,
    lower: float | None = None,
    upper: float | None = None,
    method: str | None = None,
    unavailable: Unavailable | None = None,
) -> MetricValue | None:
    if value is None or not math.isfinite(value):
        return None
    lo = lower if lower is not None and math.isfinite(lower) else None
    hi = upper if upper is not None and math.isfinite(upper) else None
    return MetricValue(
        value=value, lower=lo, upper=hi, method=method if lo is not None else None,
        interval_unavailable=unavailable if lo is None or hi is None else None,
    )


def _clusters(cfg: ScorerConfig, ids: list[str], cases: Mapping[str, dict[str, Any]]) -> list[str] | None:
    return [str(cases[c].get("patientId", c)) for c in ids] if cfg.bootstrap.level == "patient" else None


def _rankable(wanted: list[str], y: np.ndarray) -> list[str]:
    """AUC needs both classes; the threshold metrics do not."""
    return wanted if y.any() and (~y).any() else [m for m in wanted if m not in ("auc", "youdenThreshold")]


def classification_metrics(
    cfg: ScorerConfig,
    y: np.ndarray,
    s: np.ndarray,
    clusters: list[str] | None,
    wanted: list[str],
    extras: dict[str, Any] | None,
) -> dict[str, MetricValue]:
    level = cfg.confidence_level
    out: dict[str, MetricValue | None] = {}
    if "auc" in wanted:
        # Several cases of one patient are not independent: then Obuchowski's clustered variance.
        clustered = clusters is not None and len(set(clusters)) < len(clusters)
        area, iv = cls.delong_interval(y, s, level, clusters=clusters if clustered else None)
        out["auc"] = _mv(area, iv.lower, iv.upper, "obuchowski" if clustered else "delong", iv.unavailable)
        if extras is not None:
            biv = cls.auc_bootstrap_interval(
                y,
                s,
                resamples=cfg.bootstrap.resamples,
                seed=cfg.bootstrap.seed,
                clusters=clusters,
                confidence_level=level,
            )
            out["aucBootstrap"] = _mv(area, biv.lower, biv.upper, "bootstrap", biv.unavailable)
    thr = cls.threshold_metrics(y, s, cfg.operating_threshold, level)
    for name in ("sensitivity", "specificity", "ppv", "npv"):
        if name in wanted:
            p: cls.Proportion = getattr(thr, name)
            out[name] = _mv(p.value, p.lower, p.upper, "wilson", p.unavailable)
    if "youdenThreshold" in wanted:
        out["youdenThreshold"] = _mv(cls.youden_threshold(y, s))
    if "brier" in wanted:
        per_case = (s - y) ** 2
        brier_iv = (
            bootstrap_mean_interval(
                per_case,
                resamples=cfg.bootstrap.resamples,
                seed=cfg.bootstrap.seed,
                clusters=clusters,
                confidence_level=level,
            )
            if extras is not None
            else None
        )
        out["brier"] = (
            _mv(cls.brier(y, s), brier_iv.lower, brier_iv.upper, "bootstrap", brier_iv.unavailable)
            if brier_iv
            else _mv(cls.brier(y, s))
        )
    if "ece" in wanted or extras is not None:
        cal = cls.calibration(y, s)
        if "ece" in wanted:
            out["ece"] = _mv(cal.ece)
        if extras is not None:
            extras["reliability"] = [asdict(b) for b in cal.bins]
    if extras is not None and y.any() and (~y).any():
        fpr, tpr, thresholds = cls.roc_curve(y, s)
        extras["roc"] = {
            "fpr": fpr.tolist(),
            "tpr": tpr.tolist(),
            "thresholds": [t if math.isfinite(t) else None for t in thresholds.tolist()],
        }
        extras["confusion"] = {"threshold": thr.threshold, "tp": thr.tp, "fp": thr.fp, "tn": thr.tn, "fn": thr.fn}
    return {k: v for k, v in out.items() if v is not None}


# --- segmentation --------------------------------------------------------------------------


def _load_truth_mask(path: Path) -> np.ndarray:
    """A ground-truth mask (trusted, written by the region): the 'mask' array or the only one."""
    with np.load(path, allow_pickle=False) as npz:
        names = list(npz.files)
        name = "mask" if "mask" in names else (names[0] if len(names) == 1 else None)
        if name is None:
            raise ValueError("no 'mask' array")
        return np.asarray(npz[name])


MASK_FILE = "a mask file named in predictions.json"


def load_vendor_mask(
    output: Path, relative: Any, truth_shape: tuple[int, ...], slice_uids: list[str], *, reshape: bool = True
) -> np.ndarray:
    """One case's predicted mask, shaped like the truth. Raises safeio.HostileOutput (the run
    is refused) or safeio.Unreadable (this case failed); nothing is read beyond what a mask of
    this image needs."""
    elements = math.prod(truth_shape)
    if isinstance(relative, str) and relative.lower().endswith(".dcm"):
        shape3 = tuple(truth_shape) if len(truth_shape) == 3 else (1, *truth_shape[-2:])
        data = safeio.read_beneath(output, relative, MASK_FILE, seg_limits(shape3).file_bytes)  # type: ignore[arg-type]
        pred = read_seg(data, slice_uids, shape3)  # type: ignore[arg-type]
    elif isinstance(relative, str) and relative.lower().endswith(".mha"):
        shape3 = tuple(truth_shape) if len(truth_shape) == 3 else (1, *truth_shape[-2:])
        data = safeio.read_beneath(output, relative, MASK_FILE, mha_file_limit(shape3))  # type: ignore[arg-type]
        pred = read_mha(data, shape3)  # type: ignore[arg-type]
    else:
        data = safeio.read_beneath(output, relative, MASK_FILE, safeio.npz_file_limit(elements))
        pred = safeio.load_npz_array(data, MASK_FILE, tuple(truth_shape))
    if pred.shape != tuple(truth_shape):
        if not reshape or pred.squeeze().shape != tuple(d for d in truth_shape if d != 1):
            raise safeio.Unreadable(
                f"shape {pred.shape} != (slices, rows, columns) {tuple(truth_shape)}",
                f"{MASK_FILE} does not have the shape of the case's image",
            )
        pred = pred.reshape(truth_shape)
    return pred


def score_segmentation_inputs(
    cases: Mapping[str, dict[str, Any]], truth_dir: Path, output: Path, preds: Mapping[str, Any], failures: Failures
) -> Scored:
    ids: list[str] = []
    dice: list[float] = []
    iou: list[float] = []
    hd: list[float] = []
    per_case: dict[str, dict[str, float]] = {}
    for case_id, info in cases.items():
        truth_path = truth_dir / "masks" / f"{info['source']}.npz"
        try:
            truth = _load_truth_mask(truth_path).astype(bool)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise _truth_error("a ground-truth mask is missing or unreadable") from exc
        entry = preds.get(case_id)
        if entry is None:
            failures.missing.append(case_id)
            continue
        try:
            pred = load_vendor_mask(
                output,
                entry.get("mask") if isinstance(entry, dict) else None,
                truth.shape,
                info.get("sopInstanceUids") or [],
            )
        except safeio.HostileOutput as exc:
            raise _predictions_error(exc.rule) from exc
        except Exception:  # noqa: BLE001 - whatever else a vendor file does wrong, it is one unreadable case
            failures.unreadable.append(case_id)
            continue
        if not np.isfinite(pred).all():
            failures.nan.append(case_id)
            continue
        pred = pred != 0
        spacing = info.get("spacing") or [1.0, 1.0, 1.0]
        r = seg.score_masks(pred, truth, spacing)
        ids.append(case_id)
        dice.append(r.dice)
        iou.append(r.iou)
        hd.append(r.hd95)
        per_case[case_id] = {"dice": r.dice, "iou": r.iou, "hd95": r.hd95}
    return Scored(ids, {"dice": np.asarray(dice), "iou": np.asarray(iou), "hd95": np.asarray(hd)}, per_case)


def segmentation_metrics(
    cfg: ScorerConfig,
    values: Mapping[str, np.ndarray],
    clusters: list[str] | None,
    wanted: list[str],
    extras: dict[str, Any] | None,
) -> dict[str, MetricValue]:
    out: dict[str, MetricValue | None] = {}
    for name in ("dice", "iou", "hd95"):
        if name not in wanted:
            continue
        v = values[name]
        finite = v[np.isfinite(v)]
        if finite.size == 0:
            continue
        iv = bootstrap_mean_interval(
            v,
            resamples=cfg.bootstrap.resamples,
            seed=cfg.bootstrap.seed,
            clusters=clusters,
            confidence_level=cfg.confidence_level,
        )
        out[name] = _mv(float(finite.mean()), iv.lower, iv.upper, "bootstrap", iv.unavailable)
        if extras is not None and name == "hd95":
            extras["hd95Undefined"] = int((~np.isfinite(v)).sum())
    return {k: val for k, val in out.items() if val is not None}


# --- detection -----------------------------------------------------------------------------


def score_detection_inputs(
    cases: Mapping[str, dict[str, Any]], truth_dir: Path, preds: Mapping[str, Any], failures: Failures
) -> tuple[Scored, dict[str, list[det.Finding]], dict[str, list[det.Lesion]]]:
    truth = _read_json(truth_dir / "findings.json", "findings.json")
    if not isinstance(truth, dict):
        raise _truth_error("findings.json must map case to lesions")
    lesions: dict[str, list[det.Lesion]] = {}
    findings: dict[str, list[det.Finding]] = {}
    for case_id, info in cases.items():
        try:
            raw = truth[info["source"]]["lesions"]
            case_lesions = [
                det.Lesion(float(les["x"]), float(les["y"]), int(les.get("slice", 0)), float(les["radius"]))
                for les in raw
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise _truth_error("findings.json lacks lesions for some staged cases") from exc
        entry = preds.get(case_id)
        if entry is None:
            failures.missing.append(case_id)
            continue
        try:
            parsed: list[det.Finding] = []
            for f in entry["findings"]:
                loc = f["location"]
                x, y, score = _number(loc["x"]), _number(loc["y"]), _number(f["score"])
                sl = loc.get("slice", 0)
                if x is None or y is None or score is None or isinstance(sl, bool) or not isinstance(sl, int):
                    raise ValueError
                if not all(map(math.isfinite, (x, y, score))) or not 0 <= score <= 1:
                    raise ArithmeticError
                parsed.append(det.Finding(x, y, sl, score))
        except ArithmeticError:
            failures.nan.append(case_id)
            continue
        except (KeyError, TypeError, ValueError, AttributeError):
            failures.unreadable.append(case_id)
            continue
        lesions[case_id] = case_lesions
        findings[case_id] = parsed
    ids = list(lesions)
    per_case = {c: {"lesions": float(len(lesions[c])), "findings": float(len(findings[c]))} for c in ids}
    return Scored(ids, {}, per_case), findings, lesions


def detection_metrics(
    cfg: ScorerConfig, findings: Mapping[str, list[det.Finding]], lesions: Mapping[str, list[det.Lesion]],
    clusters: list[str] | None, wanted: list[str], extras: dict[str, Any] | None,
) -> dict[str, MetricValue]:
    if "frocSensitivity" not in wanted or not lesions:
        return {}
    targets = list(cfg.froc_false_positives)
    cf = det.match_by_case(findings, lesions)
    n = len(lesions)
    point = det.weighted_sensitivity_at(cf, np.ones((1, n)), targets)[0]
    if not np.isfinite(point).all():
        return {}
    out: dict[str, MetricValue | None] = {}
    rng = np.random.default_rng(cfg.bootstrap.seed)
    if clusters is None:
        cluster_index, n_clusters = np.arange(n), n
    else:
        _, cluster_index = np.unique(np.asarray(clusters), return_inverse=True)
        n_clusters = int(cluster_index.max()) + 1
    boots = []
    for start in range(0, cfg.bootstrap.resamples, 256):
        b = min(256, cfg.bootstrap.resamples - start)
        boots.append(det.weighted_sensitivity_at(cf, resample_weights(rng, cluster_index, n_clusters, b), targets))
    boot = np.vstack(boots)
    # resamples that drew no lesion at all have no sensitivity; leave them out
    usable = np.isfinite(boot).all(axis=1)
    too_few = det.froc_interval_unavailable(cf.lesions_per_case, clusters)
    iv = bootstrap_interval(boot[usable].mean(axis=1), cfg.confidence_level, too_few)
    out["frocSensitivity"] = _mv(float(point.mean()), iv.lower, iv.upper, "bootstrap", iv.unavailable)
    if extras is not None:
        for j, t in enumerate(targets):
            piv = bootstrap_interval(boot[:, j], cfg.confidence_level, too_few)
            out[f"frocSensitivity@{t:g}"] = _mv(float(point[j]), piv.lower, piv.upper, "bootstrap", piv.unavailable)
        fp, sens = det.froc(det.match(findings, lesions))
        extras["froc"] = {"fpPerImage": fp.tolist(), "sensitivity": sens.tolist()}
    return {k: v for k, v in out.items() if v is not None}


# --- assembly ------------------------------------------------------------------------------


def _round_metrics(metrics: dict[str, MetricValue]) -> dict[str, MetricValue]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 4)

    return {
        k: v.model_copy(update={"value": round(v.value, 4), "lower": r(v.lower), "upper": r(v.upper)})
        for k, v in metrics.items()
    }


def _message_size(report: ScoreReport) -> int:
    return len(report.model_dump_json(by_alias=True, exclude_none=True).encode())


def released_curves(
    report: ScoreReport, extras: Mapping[str, Any], dice: Sequence[float] | None, min_cell: int
) -> dict[str, Any]:
    """The reliability bins, FROC points and Dice histogram as they may leave the sandbox
    (sandbox/release.py), or none when the report's metrics were withheld (too few scored)."""
    if not report.metrics:
        return {}
    curves: dict[str, Any] = {}
    if extras.get("reliability"):
        curves["reliability"] = release.reliability_released(extras["reliability"], min_cell)
    if extras.get("froc"):
        curves["froc"] = release.froc_released(extras["froc"]["fpPerImage"], extras["froc"]["sensitivity"])
    if dice is not None and len(dice):
        curves["dice_histogram"] = release.dice_histogram(dice, min_cell)
    return curves


def fit_report(
    report: ScoreReport, roc: Mapping[str, list[float]] | None, curves: Mapping[str, Any] | None = None
) -> ScoreReport:
    """Shrink the report until its JSON fits the termination message: a coarser ROC grid first
    (points at fixed false-positive rates, so their number says nothing the vendor chose), then
    the other curves; with subgroup metrics beyond the first dropped, the same again; then the
    subgroups themselves."""
    grids: list[float | None] = [*release.ROC_FPR_GRIDS, None] if roc and report.metrics else [None]
    slim_groups = {
        dim: {
            g: SubgroupResult(n=r.n, suppressed=r.suppressed, metrics=dict(list(r.metrics.items())[:1]))
            for g, r in groups.items()
        }
        for dim, groups in report.subgroups.items()
    }
    for groups in (report.subgroups, slim_groups):
        for extra in ([dict(curves)] if curves else []) + [{}]:
            for step in grids:
                update = {
                    "roc": release.roc_on_grid(roc["fpr"], roc["tpr"], step) if roc and step else [],
                    "subgroups": groups,
                    **extra,
                }
                trial = report.model_copy(update=update)
                if _message_size(trial) <= TERMINATION_MESSAGE_LIMIT:
                    return trial
    return report.model_copy(update={"roc": [], "subgroups": {}})


def subgroup_results(
    cfg: ScorerConfig,
    ids: list[str],
    cases: Mapping[str, dict[str, Any]],
    compute: Callable[[np.ndarray], dict[str, MetricValue]],
) -> dict[str, dict[str, SubgroupResult]]:
    """Per dimension and group: ``n`` is the group's size in the dataset (all staged cases), not
    how many the vendor let be scored, so neither n nor suppression is the vendor's to choose
    (docs/covert-channel.md); metrics are over the group's scored cases (``ids``), and only
    when those are at least the minimum cell too."""
    def group_of(case: str) -> str:
        # group names are header values (e.g. Manufacturer); bound them so they cannot crowd out numbers
        return str(cases[case].get(dim, "unknown"))[:64] or "unknown"

    out: dict[str, dict[str, SubgroupResult]] = {}
    for dim in cfg.subgroups:
        sizes: dict[str, int] = {}
        for c in cases:
            sizes[group_of(c)] = sizes.get(group_of(c), 0) + 1
        groups = np.asarray([group_of(c) for c in ids])
        out[dim] = {}
        for g in sorted(sizes):
            mask = groups == g
            n = sizes[g]
            if n < cfg.min_subgroup_size:
                out[dim][g] = SubgroupResult(n=0, suppressed=True)
            elif int(mask.sum()) < cfg.min_subgroup_size:
                out[dim][g] = SubgroupResult(n=n)
            else:
                out[dim][g] = SubgroupResult(n=n, metrics=_round_metrics(compute(mask)))
        out[dim] = suppress_complement(out[dim])
    return out


def suppress_complement(groups: Mapping[str, SubgroupResult]) -> dict[str, SubgroupResult]:
    """Secondary suppression: a dimension's groups add up to the reported total, so a lone
    suppressed group's size would follow by subtraction. Suppress the smallest other group too."""
    hidden = [g for g, r in groups.items() if r.suppressed]
    shown = sorted((r.n, g) for g, r in groups.items() if not r.suppressed)
    if len(hidden) != 1 or not shown:
        return dict(groups)
    _, smallest = shown[0]
    return {g: SubgroupResult(n=0, suppressed=True) if g == smallest else r for g, r in groups.items()}


def score(cfg: ScorerConfig, output: Path, truth_dir: Path, work: Path) -> tuple[ScoreReport, dict[str, Any]]:
    cases = load_cases(work)
    if not truth_dir.is_dir():
        raise _truth_error("the ground-truth directory is missing")
    preds = (
        load_predictions(output, cfg.task)
        if not packaging.runs_per_case(cfg.packaging)
        else collected_predictions(cfg, output, cases)
    )
    failures = Failures()
    wanted: list[str] = list(cfg.metrics) or DEFAULT_METRICS[cfg.task]
    sub_wanted: list[str] = [m for m in SUBGROUP_METRICS[cfg.task] if m in wanted] or wanted[:1]
    extras: dict[str, Any] = {}
    sub_cfg = cfg.model_copy(
        update={"bootstrap": cfg.bootstrap.model_copy(update={"resamples": min(cfg.bootstrap.resamples, 1000)})}
    )
    if cfg.task == "classification":
        positive = _positive_label(cfg)
        scored = score_classification_inputs(cases, truth_dir, preds, positive, failures)
        y, s = scored.values["y"], scored.values["score"]
        clusters = _clusters(cfg, scored.ids, cases)
        metrics = classification_metrics(cfg, y, s, clusters, _rankable(wanted, y), extras)

        def per_group(mask: np.ndarray) -> dict[str, MetricValue]:
            return classification_metrics(sub_cfg, y[mask], s[mask], None, _rankable(sub_wanted, y[mask]), None)
    elif cfg.task == "segmentation":
        scored = score_segmentation_inputs(cases, truth_dir, output, preds, failures)
        clusters = _clusters(cfg, scored.ids, cases)
        metrics = segmentation_metrics(cfg, scored.values, clusters, wanted, extras)

        def per_group(mask: np.ndarray) -> dict[str, MetricValue]:
            return segmentation_metrics(sub_cfg, {k: v[mask] for k, v in scored.values.items()}, None, sub_wanted, None)
    else:
        scored, findings, lesions = score_detection_inputs(cases, truth_dir, preds, failures)
        clusters = _clusters(cfg, scored.ids, cases)
        metrics = detection_metrics(cfg, findings, lesions, clusters, wanted, extras)

        def per_group(mask: np.ndarray) -> dict[str, MetricValue]:
            chosen = [c for c, m in zip(scored.ids, mask, strict=True) if m]
            return detection_metrics(sub_cfg, findings, {c: lesions[c] for c in chosen}, None, sub_wanted, None)

    subgroups = subgroup_results(cfg, scored.ids, cases, per_group)
    # The histograms follow the vendor's scores: they leave only where the region chose to pool evidence.
    pooled = cfg.task == "classification" and cfg.pooled_evidence
    stats = evidence.sufficient_statistics(y, s, cfg.operating_threshold, cfg.min_subgroup_size) if pooled else None
    report = ScoreReport(
        task=cfg.task,
        cases=len(cases),
        scored=len(scored.ids),
        failures=failures.summary(),
        confidence_level=cfg.confidence_level,
        metrics=_round_metrics(metrics),
        subgroups=subgroups,
        evidence=stats,
    )
    released = release.release(report, cfg.min_subgroup_size)
    dice = scored.values["dice"].tolist() if cfg.task == "segmentation" else None
    fitted = fit_report(released, extras.get("roc"), released_curves(released, extras, dice, cfg.min_subgroup_size))
    full = {
        "report": json.loads(report.model_dump_json(by_alias=True, exclude_none=True)),
        "perCase": scored.per_case,
        "failures": {"missing": failures.missing, "unreadable": failures.unreadable, "nan": failures.nan},
        "unexpectedPredictions": sum(1 for k in preds if k not in cases),
        "bootstrap": cfg.bootstrap.model_dump(by_alias=True),
        **extras,
    }
    return fitted, full


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lightbox score", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    started = time.monotonic()
    try:
        cfg = ScorerConfig.model_validate(read_json_env(SCORER_CONFIG_ENV))
    except (ValueError, ValidationError) as exc:
        detail = (
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False))
            if isinstance(exc, ValidationError)
            else str(exc)
        )
        return fail("ConfigInvalid", f"{SCORER_CONFIG_ENV}: {detail}", EXIT_CONFIG_INVALID)
    work = directory(WORK_DIR_ENV)
    try:
        report, full = score(cfg, directory(OUTPUT_DIR_ENV), directory(TRUTH_DIR_ENV), work)
    except ScoreError as exc:
        print(f"lightbox score: {exc.reason}: {exc.message}", file=sys.stderr)
        return fail(exc.reason, exc.message, exc.exit_code)
    full["scoringSeconds"] = round(time.monotonic() - started, 3)
    try:
        (work / RESULTS_FILE).write_text(json.dumps(_finite(full), indent=1, allow_nan=False, default=_json_default))
    except (OSError, ValueError) as exc:
        print(f"lightbox score: could not write {RESULTS_FILE}: {exc}", file=sys.stderr)
    write_termination(report.to_termination_message())
    print(f"lightbox score: scored {report.scored}/{report.cases} cases")
    return EXIT_OK


def _finite(value: Any) -> Any:
    """NaN/inf -> null, so results.json is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    sys.exit(main())
