"""Drift against a baseline: an unchanged algorithm on unchanged data is never flagged over 20
bootstrap seeds, a worse one always is; an unchanged case mix is not a shift, a moved one is."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lightbox.api.results import MetricValue
from lightbox.operator import drift
from lightbox.sandbox.metrics.classification import auc, auc_bootstrap_interval

SEEDS = range(20)


def dataset(seed: int = 7, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    return y, rng.normal(size=n)


def algorithm(y: np.ndarray, noise: np.ndarray, separation: float, run_seed: int) -> np.ndarray:
    # Run-to-run jitter (nondeterministic GPU kernels): the same algorithm never scores exactly alike.
    jitter = np.random.default_rng(1000 + run_seed).normal(scale=0.05, size=y.size)
    return 1 / (1 + np.exp(-(noise + separation * y + jitter)))


def run_auc(y: np.ndarray, s: np.ndarray, seed: int) -> MetricValue:
    interval = auc_bootstrap_interval(y, s, resamples=500, seed=seed)
    return MetricValue(value=auc(y, s), lower=interval.lower, upper=interval.upper, method="bootstrap")


def test_an_unchanged_algorithm_on_unchanged_data_is_never_degraded_over_20_seeds() -> None:
    y, noise = dataset()
    baseline = run_auc(y, algorithm(y, noise, 1.5, 0), seed=0)
    for seed in SEEDS:
        now = run_auc(y, algorithm(y, noise, 1.5, seed + 1), seed=seed + 1)
        assert drift.degraded("auc", baseline, now) is None, (seed, now)


def test_a_worse_algorithm_is_degraded_for_every_seed() -> None:
    y, noise = dataset()
    baseline = run_auc(y, algorithm(y, noise, 1.5, 0), seed=0)  # AUC about 0.85
    for seed in SEEDS:
        now = run_auc(y, algorithm(y, noise, 0.6, seed + 1), seed=seed + 1)  # about 0.66
        found = drift.degraded("auc", baseline, now)
        assert found is not None and found.upper < baseline.value - drift.DEFAULT_TOLERANCE
        assert "worse than the baseline" in found.message()


@pytest.mark.parametrize(
    ("metric", "now", "flagged"),
    [
        ("auc", MetricValue(value=0.80, lower=0.75, upper=0.879), True),   # 0.879 < 0.90 - 0.02
        ("auc", MetricValue(value=0.80, lower=0.75, upper=0.881), False),  # reaches into the tolerance
        ("auc", MetricValue(value=0.50), False),                           # no interval: no claim
        ("brier", MetricValue(value=0.30, lower=0.921, upper=0.99), True),  # lower is better: above 0.90 + 0.02
        ("brier", MetricValue(value=0.30, lower=0.919, upper=0.99), False),
    ],
)
def test_the_whole_interval_must_lie_beyond_the_tolerance_on_the_bad_side(
    metric: str, now: MetricValue, flagged: bool
) -> None:
    baseline = MetricValue(value=0.90, lower=0.85, upper=0.95)
    assert (drift.degraded(metric, baseline, now) is not None) is flagged


def test_psi_of_a_hand_computed_shift() -> None:
    # (0.5, 0.5) -> (0.9, 0.1): 0.4 ln(1.8) + 0.4 ln(5) = 0.8789 (large counts: the floor is negligible).
    assert drift.psi({"F": 50000, "M": 50000}, {"F": 90000, "M": 10000}) == pytest.approx(
        0.4 * math.log(1.8) + 0.4 * math.log(5), abs=1e-4
    )
    assert drift.psi({"F": 10, "M": 10}, {"F": 10, "M": 10}) == 0.0


def test_an_unchanged_mix_is_no_shift_over_20_seeds_and_a_moved_one_is() -> None:
    mix = {"sex": {"F": 0.5, "M": 0.5}, "manufacturer": {"GE": 0.4, "Siemens": 0.35, "Philips": 0.25}}

    def draw(proportions: dict[str, dict[str, float]], n: int, seed: int) -> dict[str, dict[str, int]]:
        rng = np.random.default_rng(seed)
        return {
            d: dict(zip(p, rng.multinomial(n, list(p.values())).tolist(), strict=True)) for d, p in proportions.items()
        }

    baseline = draw(mix, 600, 0)
    for seed in SEEDS:
        assert drift.input_shifts(baseline, draw(mix, 600, seed + 1)) == []
    moved = {**mix, "manufacturer": {"GE": 0.1, "Siemens": 0.2, "Philips": 0.7}}
    for seed in SEEDS:
        (shift,) = drift.input_shifts(baseline, draw(moved, 600, seed + 1))
        assert shift.dimension == "manufacturer" and shift.psi > 0.25 and shift.p_value < 0.01


def test_a_group_new_in_this_run_counts_as_a_shift_not_an_error() -> None:
    (shift,) = drift.input_shifts({"modality": {"CT": 500}}, {"modality": {"CT": 250, "MR": 250}})
    assert shift.dimension == "modality" and math.isfinite(shift.psi)


def _record(sequence: int, number: int, verdict: str, auc: float, lower: float, upper: float) -> dict:
    return {"spec": {"event": "RunFinished", "chain": {"id": "c", "sequence": sequence},
                     "run": {"name": f"v-r{number}", "number": number, "phase": "Succeeded", "verdict": verdict,
                             "metrics": {"auc": {"value": auc, "lower": lower, "upper": upper}}}}}


def test_the_baseline_is_the_first_passing_run_unless_one_is_pinned() -> None:
    from lightbox.api.drift import DriftSettings
    from lightbox.api.validation import RunRecord

    chain = [
        _record(1, 1, "Failed", 0.6, 0.5, 0.7),
        _record(2, 2, "Passed", 0.9, 0.85, 0.95),
        _record(3, 3, "Passed", 0.8, 0.75, 0.85),
    ]
    now = RunRecord(
        name="v-r4", number=4, phase="Succeeded", metrics={"auc": MetricValue(value=0.81, lower=0.76, upper=0.86)}
    )
    first_passing = drift.assess(chain, now, None)
    assert first_passing.baseline_run == 2 and [d.metric for d in first_passing.degraded] == [
        "auc"
    ]  # 0.86 < 0.90 - 0.02
    pinned = drift.assess(chain, now, None, DriftSettings(baseline_run=3))
    assert pinned.baseline_run == 3 and pinned.degraded == []
    tolerant = drift.assess(chain, now, None, DriftSettings(tolerance=0.05))
    assert tolerant.degraded == []  # 0.86 >= 0.90 - 0.05
    assert drift.assess(chain, now, None, DriftSettings(baseline_run=9)) is None  # no such run: no claim
