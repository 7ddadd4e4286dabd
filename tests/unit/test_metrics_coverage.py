"""Do the 95% intervals cover the true AUC about 95% of the time?

1000 simulated binormal studies (200 positives, 200 negatives, true AUC 0.75 =
Phi(d / sqrt 2)). With 1000 studies the observed coverage of a correct 95% interval lies in
[0.93, 0.97] with probability > 0.99, so this fails for intervals that are systematically
too narrow or too wide (e.g. a variance off by a factor of 1.5). Fewer bootstrap resamples
(500) than a real run keep it to a few seconds; the percentile is then slightly noisier.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from lightbox.sandbox.metrics import classification as cls
from lightbox.sandbox.metrics._stats import percentile_interval

STUDIES, PER_CLASS, TRUE_AUC, RESAMPLES = 1000, 200, 0.75, 500


def _coverage() -> tuple[float, float]:
    d = math.sqrt(2) * NormalDist().inv_cdf(TRUE_AUC)
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(PER_CLASS, bool), np.zeros(PER_CLASS, bool)]
    delong_hits = boot_hits = 0
    for study in range(STUDIES):
        s = np.r_[rng.normal(d, 1, PER_CLASS), rng.normal(0, 1, PER_CLASS)]
        _, (lo, hi) = cls.delong_interval(y, s, 0.95)
        delong_hits += lo <= TRUE_AUC <= hi
        blo, bhi = percentile_interval(cls.bootstrap_auc(y, s, resamples=RESAMPLES, seed=study), 0.95)
        boot_hits += blo <= TRUE_AUC <= bhi
    return delong_hits / STUDIES, boot_hits / STUDIES


def _clustered_coverage() -> tuple[float, float]:
    """Patients with 4 cases each, all of one class, sharing a patient effect (u ~ N(0, 1))
    besides the case's own noise: cases are not independent. Marginally each class is normal
    with variance 2, so the true AUC is Phi(d / 2)."""
    patients, per = 100, 4
    d = 2 * NormalDist().inv_cdf(TRUE_AUC)
    rng = np.random.default_rng(1)
    y = np.repeat(np.r_[np.ones(patients, bool), np.zeros(patients, bool)], per)
    clusters = np.repeat(np.arange(2 * patients), per)
    plain = clustered = 0
    for _ in range(STUDIES):
        s = d * y + np.repeat(rng.normal(0, 1, 2 * patients), per) + rng.normal(0, 1, y.size)
        _, (lo, hi) = cls.delong_interval(y, s, 0.95)
        plain += lo <= TRUE_AUC <= hi
        _, (lo, hi) = cls.delong_interval(y, s, 0.95, clusters=clusters)
        clustered += lo <= TRUE_AUC <= hi
    return plain / STUDIES, clustered / STUDIES


def test_clustered_interval_covers_where_plain_delong_is_too_narrow() -> None:
    plain, clustered = _clustered_coverage()
    assert 0.93 <= clustered <= 0.97, f"clustered coverage {clustered:.3f}"
    assert plain < 0.90, f"plain DeLong coverage {plain:.3f}: the data are not clustered enough to tell"


def test_delong_and_bootstrap_intervals_cover_the_true_auc() -> None:
    delong, boot = _coverage()
    assert 0.93 <= delong <= 0.97, f"DeLong coverage {delong:.3f}"
    assert 0.93 <= boot <= 0.97, f"bootstrap coverage {boot:.3f}"
