"""The score step: reports that fit the termination message, partial and malformed
predictions, unreadable ground truth, and nothing vendor-written in the output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score, roc_curve

from lightbox.api.results import TERMINATION_MESSAGE_LIMIT, ScoreReport
from lightbox.api.run import EXIT_GROUND_TRUTH_UNREADABLE, EXIT_MALFORMED_PREDICTIONS, EXIT_OK, StagerConfig
from lightbox.api.validation import RunRecord
from lightbox.sandbox import scorer
from lightbox.sandbox.deidgate import verify_tree
from lightbox.sandbox.reference import classifier, segmenter
from lightbox.sandbox.sampledata import SampleDataset, make_sample_dataset
from lightbox.sandbox.stager import stage

ALL_SUBGROUPS = ["sex", "ageBand", "manufacturer", "site"]


class Run:
    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch, task: str = "classification", n: int = 40) -> None:
        self.sample: SampleDataset = make_sample_dataset(tmp / "data", n_cases=n, seed=3, task=task)  # type: ignore[arg-type]
        self.input, self.output, self.work, self.term = tmp / "input", tmp / "output", tmp / "work", tmp / "term"
        self.output.mkdir()
        stage(self.sample.studies_dir, self.input, self.work, StagerConfig(task=task, labels=self.sample.labels,
              deid_options=self.sample.deid_options), verifier=verify_tree)
        self.task = task
        self.mp = monkeypatch
        for key, value in {
            "LIGHTBOX_INPUT_DIR": self.input, "LIGHTBOX_OUTPUT_DIR": self.output, "LIGHTBOX_WORK_DIR": self.work,
            "LIGHTBOX_TRUTH_DIR": self.sample.truth_dir, "LIGHTBOX_TERMINATION_LOG": self.term,
        }.items():
            monkeypatch.setenv(key, str(value))
        self.configure()

    def configure(self, **extra: object) -> None:
        cfg = {"task": self.task, "labels": self.sample.labels, "positiveLabel": "abnormal", "subgroups": ALL_SUBGROUPS,
               "minSubgroupSize": 10, "bootstrap": {"resamples": 2000, "seed": 0, "level": "patient"}, **extra}
        self.mp.setenv("LIGHTBOX_SCORER_CONFIG", json.dumps(cfg))

    def predict(self) -> None:
        (classifier if self.task == "classification" else segmenter).main([])

    def predictions(self) -> dict:
        return json.loads((self.output / "predictions.json").read_text())

    def write(self, doc: object) -> None:
        (self.output / "predictions.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))

    def score(self) -> tuple[int, str]:
        code = scorer.main([])
        return code, self.term.read_text()


def _truth_and_scores(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """Labels from the ground truth and scores from the vendor's predictions, joined through
    the stage step's cases.json: what the scorer read, not what it wrote."""
    labels = json.loads((run.sample.truth_dir / "labels.json").read_text())
    cases = json.loads((run.work / "cases.json").read_text())["cases"]
    preds = run.predictions()["cases"]
    ids = sorted(cases)
    y = np.array([labels[cases[c]["source"]]["label"] == "abnormal" for c in ids])
    s = np.array([preds[c]["scores"]["abnormal"] for c in ids])
    return y, s


def test_reference_classification_report_fits_and_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch, n=80)
    run.configure(subgroups=["sex", "site"])  # all four leave no room for the ROC curve at 80 cases
    run.predict()
    code, text = run.score()
    assert code == EXIT_OK
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    report = ScoreReport.model_validate_json(text)
    assert report.cases == report.scored == 80
    assert set(report.metrics) >= {
        "auc",
        "aucBootstrap",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "youdenThreshold",
        "brier",
        "ece",
    }
    auc = report.metrics["auc"]
    # The sample has patients with more than one study: their cases are clustered.
    assert auc.method == "obuchowski" and auc.lower <= auc.value <= auc.upper
    assert report.metrics["aucBootstrap"].method == "bootstrap"
    assert report.metrics["sensitivity"].method == "wilson"
    assert set(report.subgroups) == {"sex", "site"}
    for groups in report.subgroups.values():
        for result in groups.values():
            assert (result.n == 0 and result.suppressed and not result.metrics) or (
                result.n >= 10 and not result.suppressed
            )
    # the operator copies these fields into a Validation's status
    RunRecord(
        name="r-1",
        number=1,
        phase="Succeeded",
        cases=report.cases,
        scored=report.scored,
        failures=report.failures,
        metrics=report.metrics,
        subgroups=report.subgroups,
    )
    full = json.loads((run.work / "results.json").read_text())
    assert len(full["perCase"]) == 80
    y, s = _truth_and_scores(run)
    assert report.metrics["auc"].value == pytest.approx(roc_auc_score(y, s), abs=5e-5)
    # the ROC curve at fixed false-positive rates, each the step function's height there
    fpr, tpr, _ = roc_curve(y, s)
    grid = [round(0.1 * i, 2) for i in range(11)]
    assert [p[0] for p in report.roc] == grid
    assert [p[1] for p in report.roc] == pytest.approx([tpr[fpr <= g + 1e-12].max() for g in grid], abs=0.005)
    called = s >= 0.5
    assert report.metrics["sensitivity"].value == pytest.approx((called & y).sum() / y.sum(), abs=5e-5)
    assert report.metrics["specificity"].value == pytest.approx((~called & ~y).sum() / (~y).sum(), abs=5e-5)


def _hd95_scipy(a: np.ndarray, b: np.ndarray, spacing: list[float]) -> float:
    """HD95 from scipy's exact Euclidean distance transform: surface voxels (foreground with a
    background 6-neighbour, outside counting as background), the larger directed 95th percentile."""
    def surface(m: np.ndarray) -> np.ndarray:
        return m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(3, 1), border_value=0)

    sa, sb = surface(a), surface(b)
    to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)[sa]
    to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)[sb]
    return max(float(np.percentile(to_b, 95)), float(np.percentile(to_a, 95)))


def test_reference_segmentation_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch, task="segmentation", n=20)
    run.predict()
    code, text = run.score()
    assert code == EXIT_OK
    report = ScoreReport.model_validate_json(text)
    assert report.scored == 20
    cases = json.loads((run.work / "cases.json").read_text())["cases"]
    preds = run.predictions()["cases"]
    dice, hd = [], []
    for cid, info in cases.items():
        truth = np.load(run.sample.truth_dir / "masks" / f"{info['source']}.npz")["mask"] != 0
        pred = np.load(run.output / preds[cid]["mask"])["mask"] != 0
        dice.append(2 * (truth & pred).sum() / (truth.sum() + pred.sum()) if truth.any() or pred.any() else 1.0)
        if truth.any() and pred.any():
            hd.append(_hd95_scipy(pred, truth, info["spacing"]))
        elif not truth.any() and not pred.any():
            hd.append(0.0)  # both empty: perfect agreement; one empty: undefined, left out of the mean
    assert report.metrics["dice"].value == pytest.approx(np.mean(dice), abs=5e-5)
    assert report.metrics["dice"].method == "bootstrap" and "iou" in report.metrics
    assert report.metrics["hd95"].value == pytest.approx(np.mean(hd), abs=5e-5)


def _single_voxel_cases(run: Run, offsets: list[tuple[int, int, int]]) -> dict[str, float]:
    """Truth: one voxel per case; prediction: one voxel ``offset`` (slice, row, column) away.
    Returns the case ids in order of ``offsets``."""
    cases = json.loads((run.work / "cases.json").read_text())["cases"]
    ids = sorted(cases)
    doc = {"task": "segmentation", "cases": {}}
    (run.output / "masks").mkdir(exist_ok=True)
    for cid, offset in zip(ids, offsets, strict=False):  # the first len(offsets) cases
        shape = tuple(cases[cid]["shape"])
        truth, pred = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
        truth[0, 10, 10] = 1
        pred[offset[0], 10 + offset[1], 10 + offset[2]] = 1
        np.savez_compressed(run.sample.truth_dir / "masks" / f"{cases[cid]['source']}.npz", mask=truth)
        np.savez_compressed(run.output / "masks" / f"{cid}.npz", mask=pred)
        doc["cases"][cid] = {"mask": f"masks/{cid}.npz"}
    run.write(doc)
    return ids


def test_hd95_is_in_millimetres_along_slice_row_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_stager import with_spacing

    sample = make_sample_dataset(tmp_path / "raw", n_cases=3, seed=3, task="segmentation")
    with_spacing(sample.studies_dir, 2.5, (0.5, 0.8))  # slice gap 2.5 mm, rows 0.5 mm apart, columns 0.8 mm
    monkeypatch.setattr("tests.unit.test_scorer.make_sample_dataset", lambda *a, **k: sample)
    run = Run(tmp_path, monkeypatch, task="segmentation", n=3)
    run.configure(minSubgroupSize=1)
    # 2 slices, 3 rows, 4 columns away: 5.0, 1.5 and 3.2 mm; (row, column, slice) order would give 1.0, 2.4, 10.0
    ids = _single_voxel_cases(run, [(2, 0, 0), (0, 3, 0), (0, 0, 4)])
    code, text = run.score()
    assert code == EXIT_OK, text
    per_case = json.loads((run.work / "results.json").read_text())["perCase"]
    assert [per_case[c]["hd95"] for c in ids] == pytest.approx([5.0, 1.5, 3.2])
    assert ScoreReport.model_validate_json(text).metrics["hd95"].value == pytest.approx((5.0 + 1.5 + 3.2) / 3, abs=5e-5)


def test_detection_scores_perfect_and_empty_findings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch, task="detection", n=20)
    truth = json.loads((run.sample.truth_dir / "findings.json").read_text())
    cases = json.loads((run.work / "cases.json").read_text())["cases"]
    perfect = {
        cid: {
            "findings": [
                {"location": {"x": les["x"], "y": les["y"], "slice": les["slice"]}, "score": 0.9}
                for les in truth[c["source"]]["lesions"]
            ]
        }
        for cid, c in cases.items()
    }
    run.write({"task": "detection", "cases": perfect})
    code, text = run.score()
    report = ScoreReport.model_validate_json(text)
    assert code == EXIT_OK and report.metrics["frocSensitivity"].value == 1.0
    run.write({"task": "detection", "cases": {cid: {"findings": []} for cid in cases}})
    code, text = run.score()
    assert ScoreReport.model_validate_json(text).metrics["frocSensitivity"].value == 0.0


def test_partial_and_bad_values_are_counted_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch)
    run.predict()
    doc = run.predictions()
    ids = sorted(doc["cases"])
    for cid in ids[:3]:
        del doc["cases"][cid]
    doc["cases"][ids[3]]["scores"]["abnormal"] = 1.7
    doc["cases"][ids[4]] = {"scores": {"abnormal": "high"}}
    doc["cases"][ids[5]] = "positive"
    doc["cases"]["someone-else"] = {"scores": {"abnormal": 0.5}}
    text = json.dumps(doc).replace("1.7", "NaN")
    run.write(text)
    code, message = run.score()
    report = ScoreReport.model_validate_json(message)
    assert code == EXIT_OK
    full = json.loads((run.work / "results.json").read_text())
    assert [len(full["failures"][k]) for k in ("missing", "unreadable", "nan")] == [3, 2, 1]
    # what leaves the sandbox: each count rounded up to the minimum cell (10), as is the scored count
    assert (report.failures.missing, report.failures.unreadable, report.failures.nan) == (10, 10, 10)
    assert report.scored == 30 and report.cases == 40 and full["report"]["scored"] == 34


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "was not written"),
        ('{"cases": {', "not valid JSON"),
        ("[1, 2]", "must be an object"),
        ('{"task": "segmentation", "cases": {}}', "another task"),
        ('{"contractVersion": "v9", "cases": {}}', "contract version"),
        ("symlink", "symbolic link"),
    ],
)
def test_malformed_predictions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None, fragment: str
) -> None:
    run = Run(tmp_path, monkeypatch, n=6)
    if content == "symlink":
        (run.output / "predictions.json").symlink_to(run.sample.truth_dir / "labels.json")
    elif content is not None:
        run.write(content)
    code, text = run.score()
    assert code == EXIT_MALFORMED_PREDICTIONS
    message = json.loads(text)
    assert message["reason"] == "MalformedPredictions" and fragment in message["message"]


def test_unreadable_ground_truth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch, n=6)
    run.predict()
    (run.sample.truth_dir / "labels.json").write_text("{not json")
    code, text = run.score()
    assert code == EXIT_GROUND_TRUTH_UNREADABLE
    assert json.loads(text)["reason"] == "GroundTruthUnreadable"
    (run.sample.truth_dir / "labels.json").unlink()
    assert run.score()[0] == EXIT_GROUND_TRUTH_UNREADABLE
    monkeypatch.setenv("LIGHTBOX_TRUTH_DIR", str(tmp_path / "nowhere"))
    assert run.score()[0] == EXIT_GROUND_TRUTH_UNREADABLE


def test_vendor_text_never_reaches_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch)
    run.predict()
    doc = run.predictions()
    secret = "EXFIL-DOE-JANE-19700101"
    doc["comment"] = secret
    doc["cases"][secret] = {"scores": {"abnormal": 0.5}}
    for case in doc["cases"].values():
        case["scores"][secret] = 0.1
        case["note"] = secret
    run.write(doc)
    code, text = run.score()
    assert code == EXIT_OK and secret not in text
    assert "case-0001" not in text
    run.write('{"cases": {"' + secret + '": ')
    code, text = run.score()
    assert code == EXIT_MALFORMED_PREDICTIONS and secret not in text


def test_dicom_seg_masks_score_exactly_as_the_same_masks_in_npz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = {}
    for fmt, argv in (("npz", []), ("seg", ["--dicom-seg"])):
        run = Run(tmp_path / fmt, monkeypatch, task="segmentation", n=8)
        segmenter.main(argv)
        assert all(c["mask"].endswith(".dcm" if argv else ".npz") for c in run.predictions()["cases"].values())
        code, text = run.score()
        assert code == EXIT_OK, text
        reports[fmt] = ScoreReport.model_validate_json(text)
    assert reports["seg"].scored == reports["npz"].scored == 8
    assert reports["seg"].metrics == reports["npz"].metrics


def test_segmentation_mask_outside_output_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch, task="segmentation", n=4)
    run.predict()
    doc = run.predictions()
    ids = sorted(doc["cases"])
    src = json.loads((run.work / "cases.json").read_text())["cases"][ids[0]]["source"]
    doc["cases"][ids[0]]["mask"] = f"../data/truth/masks/{src}.npz"
    np.savez(run.output / "masks" / "wrong.npz", mask=np.zeros((1, 2, 2), np.uint8))
    doc["cases"][ids[1]]["mask"] = "masks/wrong.npz"
    doc["cases"][ids[2]]["mask"] = "masks/absent.npz"
    run.write(doc)
    code, text = run.score()
    report = ScoreReport.model_validate_json(text)
    full = json.loads((run.work / "results.json").read_text())
    assert code == EXIT_OK and len(full["failures"]["unreadable"]) == 3 and full["report"]["scored"] == 1
    assert (
        report.failures.unreadable == 4 and report.scored == 0 and report.metrics == {}
    )  # banded, capped at the 4 cases


def test_case_level_resampling_takes_cases_as_independent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch, n=80)
    run.configure(bootstrap={"resamples": 200, "seed": 0, "level": "case"})
    run.predict()
    code, text = run.score()
    assert code == EXIT_OK and ScoreReport.model_validate_json(text).metrics["auc"].method == "delong"


def test_small_subgroups_are_suppressed_with_n_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch, n=12)
    run.configure(minSubgroupSize=100)
    run.predict()
    code, text = run.score()
    report = ScoreReport.model_validate_json(text)
    assert all(r.suppressed and r.n == 0 and not r.metrics for g in report.subgroups.values() for r in g.values())


@pytest.mark.parametrize("minimum", [1, 5, 10])
def test_a_group_of_exactly_the_minimum_is_reported_and_one_less_is_suppressed(minimum: int) -> None:
    from lightbox.api.run import ScorerConfig

    sizes = {"SITE-A": minimum, "SITE-B": minimum - 1, "SITE-C": minimum - 1}
    cases = {f"c{g}{i}": {"site": g} for g, n in sizes.items() for i in range(n)}
    cfg = ScorerConfig(task="classification", subgroups=["site"], min_subgroup_size=minimum)
    seen: list[int] = []
    out = scorer.subgroup_results(cfg, list(cases), cases, lambda mask: seen.append(int(mask.sum())) or {})["site"]
    assert out["SITE-A"].n == minimum and not out["SITE-A"].suppressed
    assert seen == [minimum]  # metrics computed for the reported group only
    for g in ("SITE-B", "SITE-C"):
        if sizes[g]:
            assert out[g].suppressed and out[g].n == 0


def _groups(**sizes: int) -> dict:
    from lightbox.api.results import SubgroupResult

    return {g: SubgroupResult(n=0, suppressed=True) if n < 10 else SubgroupResult(n=n) for g, n in sizes.items()}


def _hidden(groups: dict) -> set[str]:
    return {g for g, r in groups.items() if r.suppressed}


def test_a_lone_suppressed_group_takes_the_smallest_other_with_it() -> None:
    # M 60, F 37, O 3 out of 100: O alone suppressed would be 100 - 60 - 37.
    out = scorer.suppress_complement(_groups(M=60, F=37, O=3))
    assert _hidden(out) == {"O", "F"}
    assert out["M"].n == 60 and all(out[g].n == 0 and not out[g].metrics for g in ("O", "F"))


@pytest.mark.parametrize(
    ("sizes", "hidden"),
    [
        ({"M": 60, "F": 40}, set()),  # nothing to protect
        ({"A": 50, "B": 4, "C": 3}, {"B", "C"}),  # two hidden: only their sum follows
        ({"A": 97, "B": 3}, {"A", "B"}),  # the only other group goes too
        ({"B": 3}, {"B"}),
    ],
)
def test_secondary_suppression_only_where_subtraction_would_reveal(sizes: dict[str, int], hidden: set[str]) -> None:
    assert _hidden(scorer.suppress_complement(_groups(**sizes))) == hidden


def test_no_suppressed_group_size_follows_from_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch, n=40)
    run.configure(minSubgroupSize=10)
    run.predict()
    code, text = run.score()
    report = ScoreReport.model_validate_json(text)
    assert code == EXIT_OK
    for groups in report.subgroups.values():
        assert sum(r.suppressed for r in groups.values()) != 1 or len(groups) == 1, groups


def test_fit_report_shrinks_roc_until_it_fits() -> None:
    from lightbox.api.results import MetricValue, SubgroupResult

    metrics = {f"m{i}": MetricValue(value=0.5, lower=0.4, upper=0.6, method="bootstrap") for i in range(10)}
    groups = {f"group-{i}": SubgroupResult(n=20, metrics=metrics) for i in range(6)}
    report = ScoreReport(task="classification", cases=100, scored=100, metrics=metrics, subgroups={"site": groups})
    roc = {"fpr": list(np.linspace(0, 1, 500)), "tpr": list(np.linspace(0, 1, 500) ** 0.5)}
    fitted = scorer.fit_report(report, roc)
    assert len(fitted.to_termination_message().encode()) <= TERMINATION_MESSAGE_LIMIT


def test_results_json_is_strict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch, task="segmentation", n=6)
    run.configure(minSubgroupSize=1)
    run.predict()
    doc = run.predictions()
    first = sorted(doc["cases"])[0]
    shape = np.load(run.output / doc["cases"][first]["mask"])["mask"].shape
    np.savez(run.output / "masks" / "empty.npz", mask=np.zeros(shape, np.uint8))
    doc["cases"][first]["mask"] = "masks/empty.npz"
    run.write(doc)
    assert run.score()[0] == EXIT_OK
    text = (run.work / "results.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert not math.isnan(ScoreReport.model_validate_json(run.term.read_text()).metrics["dice"].value)


def test_single_class_scored_still_reports_what_it_can(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch, n=30)
    run.configure(minSubgroupSize=5)
    run.predict()
    doc = run.predictions()
    labels = json.loads((run.sample.truth_dir / "labels.json").read_text())
    cases = json.loads((run.work / "cases.json").read_text())["cases"]
    doc["cases"] = {cid: v for cid, v in doc["cases"].items() if labels[cases[cid]["source"]]["label"] == "normal"}
    run.write(doc)
    code, text = run.score()
    report = ScoreReport.model_validate_json(text)
    assert code == EXIT_OK and "auc" not in report.metrics and "specificity" in report.metrics
    dropped = sum(1 for v in cases.values() if labels[v["source"]]["label"] != "normal")  # counted from the truth
    # docs/covert-channel.md: failure counts are released rounded up to the doubling bands 0, m, 2m, 4m, ...
    # of the minimum cell m (5 here), capped at the number of cases.
    band = next(b for b in (0, 5, 10, 20, 40) if b >= dropped)
    assert 0 < dropped <= band < 30
    assert report.roc == [] and report.failures.missing == band and report.scored == 30 - band


def test_oversized_or_foreign_mask_files_are_unreadable_without_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run(tmp_path, monkeypatch, task="segmentation", n=3)
    run.predict()
    doc = run.predictions()
    ids = sorted(doc["cases"])
    np.save(run.output / "masks" / "plain.npy", np.zeros((3, 4, 4)))
    np.savez(run.output / "masks" / "objects.npz", mask=np.array([object()] * 3))
    np.savez(run.output / "masks" / "small.npz", mask=np.zeros((3, 4, 4), np.uint8))
    doc["cases"][ids[0]]["mask"] = "masks/small.npz"
    doc["cases"][ids[1]]["mask"] = "masks/plain.npy"
    doc["cases"][ids[2]]["mask"] = "masks/objects.npz"
    run.write(doc)
    code, text = run.score()
    assert code == EXIT_OK and len(json.loads((run.work / "results.json").read_text())["failures"]["unreadable"]) == 3
    # a file that would inflate past the image's size is not a mistake but an attack: the run is refused
    np.savez_compressed(
        run.output / "masks" / "bomb.npz", mask=np.zeros((64, 1024, 1024), np.uint8)
    )  # 64 MiB, ~64 KiB on disk
    doc["cases"][ids[0]]["mask"] = "masks/bomb.npz"
    run.write(doc)
    code, text = run.score()
    assert code == EXIT_MALFORMED_PREDICTIONS and "declares more bytes uncompressed" in json.loads(text)["message"]
