"""How small may a study be before the scorer's 95% intervals stop meaning 95%?

    .venv/bin/python bench/small_samples.py [--studies 1000] [--resamples 500] [--sizes 2 3 5 ...]

Simulates studies with a known true value and counts how often each interval method covers
it, for a range of sizes. The minimum the scorer enforces (``MIN_CASES`` in
lightbox.sandbox.metrics._stats, see docs/statistics.md) is the smallest size from which
every method's coverage stays at or above 0.90 in every scenario here (a miss rate at most
twice the nominal 5%).

Scenarios:
* AUC, N positives and N negatives, binormal with equal variances, true AUC 0.7, 0.8, 0.9
  (Phi(d / sqrt 2)): DeLong and the stratified percentile bootstrap.
* Mean of per-case values over N cases, bootstrap percentile: Beta(8, 2) (Dice-like, skewed
  towards 1) and log-normal(1, 0.75) (HD95-like, long right tail).
* Wilson's interval for a proportion of N trials: exact coverage (binomial sums), mean and
  minimum over the true proportion.

Quantiles are taken directly (not through the scorer's interval functions), so the minimum
itself does not hide the small sizes. Prints a table; no assertions.
"""

from __future__ import annotations

import argparse
import math
from statistics import NormalDist

import numpy as np

from lightbox.sandbox.metrics import classification as cls
from lightbox.sandbox.metrics._stats import bootstrap_means, wilson_interval

SIZES = (2, 3, 5, 8, 10, 12, 15, 20, 30, 50)


def auc_coverage(n: int, true_auc: float, studies: int, resamples: int, seed: int) -> tuple[float, float]:
    d = math.sqrt(2) * NormalDist().inv_cdf(true_auc)
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    hits_delong = hits_boot = 0
    for study in range(studies):
        s = np.r_[rng.normal(d, 1, n), rng.normal(0, 1, n)]
        _, var = cls.delong(y, s)
        area = cls.auc(y, s)
        half = NormalDist().inv_cdf(0.975) * math.sqrt(max(var, 0.0))
        hits_delong += area - half <= true_auc <= area + half
        boot = cls.bootstrap_auc(y, s, resamples=resamples, seed=study)
        lo, hi = np.quantile(boot, [0.025, 0.975])
        hits_boot += lo <= true_auc <= hi
    return hits_delong / studies, hits_boot / studies


def mean_coverage(n: int, draw: str, studies: int, resamples: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    true_mean = 0.8 if draw == "beta" else math.exp(1 + 0.75**2 / 2)
    hits = 0
    for study in range(studies):
        v = rng.beta(8, 2, n) if draw == "beta" else rng.lognormal(1, 0.75, n)
        lo, hi = np.quantile(bootstrap_means(v, resamples=resamples, seed=study), [0.025, 0.975])
        hits += lo <= true_mean <= hi
    return hits / studies


def wilson_exact_coverage(n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact coverage of the Wilson interval over true p on a grid 0.01..0.99: (mean, minimum)."""
    bounds = [wilson_interval(k, n, level) for k in range(n + 1)]
    cover = []
    for p in np.linspace(0.01, 0.99, 99):
        cover.append(
            sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k, (lo, hi) in enumerate(bounds) if lo <= p <= hi)
        )
    return float(np.mean(cover)), float(np.min(cover))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=500)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--wilson-only", action="store_true", help="only the exact Wilson coverage (fast)")
    args = parser.parse_args()
    print("Wilson 95%, exact coverage over p in 0.01..0.99: N | mean | minimum")
    for n in (1, 2, 3, 5, 10, 15, 20, 30):
        mean, low = wilson_exact_coverage(n)
        print(f"{n} | {mean:.3f} | {low:.3f}")
    if args.wilson_only:
        return
    header = (
        ["N"] + [f"{m} AUC {a}" for a in (0.7, 0.8, 0.9) for m in ("DeLong", "boot")] + ["mean beta", "mean lognorm"]
    )
    print(" | ".join(header))
    for n in args.sizes:
        row: list[float] = []
        for a in (0.7, 0.8, 0.9):
            row += auc_coverage(n, a, args.studies, args.resamples, seed=n)
        row += [
            mean_coverage(n, "beta", args.studies, args.resamples, seed=n),
            mean_coverage(n, "lognorm", args.studies, args.resamples, seed=n),
        ]
        print(" | ".join([str(n)] + [f"{v:.3f}" for v in row]), flush=True)


if __name__ == "__main__":
    main()
