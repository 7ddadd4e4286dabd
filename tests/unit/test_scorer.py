"""The score step: reports that fit the termination message, partial and malformed
predictions, unreadable ground truth, and nothing vendor-written in the output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lightbox.api.results import TERMINATION_MESSAGE_LIMIT, ScoreReport
from lightbox.api.run import EXIT_GROUND_TRUTH_UNREADABLE, EXIT_MALFORMED_PREDICTIONS, EXIT_OK, StagerConfig
from lightbox.api.validation import RunRecord
from lightbox.sandbox import scorer
from lightbox.sandbox.deidgate import minimal_verify_tree
from lightbox.sandbox.metrics import classification as cls
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
              deid_options=self.sample.deid_options), verifier=minimal_verify_tree)
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


def test_reference_classification_report_fits_and_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch)
    run.predict()
    code, text = run.score()
    assert code == EXIT_OK
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    report = ScoreReport.model_validate_json(text)
    assert report.cases == report.scored == 40
    assert set(report.metrics) >= {"auc", "aucBootstrap", "sensitivity", "specificity", "ppv", "npv", "youdenThreshold", "brier", "ece"}
    auc = report.metrics["auc"]
    # The sample has patients with more than one study: their cases are clustered.
    assert auc.method == "obuchowski" and auc.lower <= auc.value <= auc.upper
    assert report.metrics["aucBootstrap"].method == "bootstrap"
    assert report.metrics["sensitivity"].method == "wilson"
    assert len(report.roc) >= 5 and report.roc[0] == (0.0, 0.0) and report.roc[-1] == (1.0, 1.0)
    assert set(report.subgroups) == set(ALL_SUBGROUPS)
    for groups in report.subgroups.values():
        for result in groups.values():
            assert (result.n == 0 and result.suppressed and not result.metrics) or (result.n >= 10 and not result.suppressed)
    # the operator copies these fields into a Validation's status
    RunRecord(name="r-1", number=1, phase="Succeeded", cases=report.cases, scored=report.scored, failures=report.failures,
              metrics=report.metrics, subgroups=report.subgroups)
    full = json.loads((run.work / "results.json").read_text())
    assert len(full["perCase"]) == 40 and len(full["roc"]["fpr"]) >= len(report.roc)
    truth = np.array([v["truth"] for v in full["perCase"].values()], bool)
    score = np.array([v["score"] for v in full["perCase"].values()])
    assert report.metrics["auc"].value == pytest.approx(round(cls.auc(truth, score), 4))


def test_reference_segmentation_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch, task="segmentation", n=20)
    run.predict()
    code, text = run.score()
    assert code == EXIT_OK
    report = ScoreReport.model_validate_json(text)
    assert report.scored == 20
    assert report.metrics["dice"].value > 0.8 and report.metrics["dice"].method == "bootstrap"
    assert report.metrics["hd95"].value >= 0 and "iou" in report.metrics


def test_detection_scores_perfect_and_empty_findings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch, task="detection", n=20)
    truth = json.loads((run.sample.truth_dir / "findings.json").read_text())
    cases = json.loads((run.work / "cases.json").read_text())["cases"]
    perfect = {
        cid: {"findings": [{"location": {"x": l["x"], "y": l["y"], "slice": l["slice"]}, "score": 0.9} for l in truth[c["source"]]["lesions"]]}
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
    assert (report.failures.missing, report.failures.unreadable, report.failures.nan) == (3, 2, 1)
    assert report.scored == 34 and report.cases == 40


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "was not written"),
        ('{"cases": {', "not valid JSON (line 1"),
        ("[1, 2]", "must be an object"),
        ('{"task": "segmentation", "cases": {}}', "another task"),
        ('{"contractVersion": "v9", "cases": {}}', "contract version"),
        ("symlink", "symbolic link"),
    ],
)
def test_malformed_predictions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None, fragment: str) -> None:
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


def test_dicom_seg_masks_score_exactly_as_the_same_masks_in_npz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
    assert code == EXIT_OK and report.failures.unreadable == 3 and report.scored == 1


def test_case_level_resampling_takes_cases_as_independent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch)
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
    run = Run(tmp_path, monkeypatch, n=12)
    run.predict()
    doc = run.predictions()
    labels = json.loads((run.sample.truth_dir / "labels.json").read_text())
    cases = json.loads((run.work / "cases.json").read_text())["cases"]
    doc["cases"] = {cid: v for cid, v in doc["cases"].items() if labels[cases[cid]["source"]]["label"] == "normal"}
    run.write(doc)
    code, text = run.score()
    report = ScoreReport.model_validate_json(text)
    assert code == EXIT_OK and "auc" not in report.metrics and "specificity" in report.metrics
    assert report.roc == [] and report.failures.missing > 0


def test_oversized_or_foreign_mask_files_are_unreadable_without_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Run(tmp_path, monkeypatch, task="segmentation", n=3)
    run.predict()
    doc = run.predictions()
    ids = sorted(doc["cases"])
    np.savez_compressed(run.output / "masks" / "bomb.npz", mask=np.zeros((64, 1024, 1024), np.uint8))  # 64 MiB, ~64 KiB on disk
    np.save(run.output / "masks" / "plain.npy", np.zeros((3, 4, 4)))
    np.savez(run.output / "masks" / "objects.npz", mask=np.array([object()] * 3))
    doc["cases"][ids[0]]["mask"] = "masks/bomb.npz"
    doc["cases"][ids[1]]["mask"] = "masks/plain.npy"
    doc["cases"][ids[2]]["mask"] = "masks/objects.npz"
    run.write(doc)
    code, text = run.score()
    assert code == EXIT_OK and ScoreReport.model_validate_json(text).failures.unreadable == 3
