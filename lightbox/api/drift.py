"""How a scheduled Validation judges drift against its baseline (operator/drift.py, docs/drift.md)."""

from __future__ import annotations

from pydantic import Field

from lightbox.api.results import Model


class DriftSettings(Model):
    """Baseline and thresholds of the Degraded and InputShift conditions."""

    baseline_run: int | None = Field(
        default=None, ge=1, description="Run number of the baseline; default: the first run that passed."
    )
    tolerance: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Degraded when a metric's whole interval lies beyond the baseline's point by more.",
    )
    psi_threshold: float = Field(
        default=0.25,
        gt=0,
        le=10,
        description="InputShift when a cohort dimension's population stability index exceeds this...",
    )
    p_value: float = Field(
        default=0.01, gt=0, lt=1, description="...and the chi-square homogeneity test's p-value is below this."
    )
