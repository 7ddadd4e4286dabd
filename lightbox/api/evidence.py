"""Evidence: a run's sufficient statistics for pooling across regions (docs/federation.md).

Per class, counts of scores on fixed bins, coarsened so no published cell holds fewer than the
policy's minimum; confusion counts at the operating threshold, suppressed in pairs. Nothing here
names or orders a case. The scorer computes it (sandbox/evidence.py), the operator keeps it in
the run's AuditRecord, ``lightbox evidence export`` signs it, ``lightbox federate`` pools it.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

BINS: Final = 20  # fixed edges k/20: few enough that a run's histogram carries little beyond the scores' shape

# A cell: [first bin, bin after the last, cases]: bins [start, end) merged into one count.
Cell = tuple[int, int, int]


class Model(BaseModel):
    """As lightbox.api.results.Model (which imports this module, so it cannot be imported here)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Confusion(Model):
    """Counts at the operating threshold (score >= threshold is positive); a pair is null together
    when either of its cells is below the minimum (the class total would give the other away)."""

    tp: int | None = Field(default=None, ge=0)
    fn: int | None = Field(default=None, ge=0)
    fp: int | None = Field(default=None, ge=0)
    tn: int | None = Field(default=None, ge=0)


class Evidence(Model):
    """Sufficient statistics of one classification run; no individual case."""

    format: Literal["lightbox-evidence-stats/v1"] = "lightbox-evidence-stats/v1"
    bins: Literal[20] = Field(default=BINS, description="Fixed bins of width 1/bins over [0, 1]; the last includes 1.")
    min_cell: int = Field(ge=1, description="No published non-zero cell holds fewer cases.")
    threshold: float = Field(ge=0, le=1, description="The operating threshold of the confusion counts.")
    positives: list[Cell] | None = Field(
        default=None, max_length=BINS, description="Cells of the positive class; null: suppressed."
    )
    negatives: list[Cell] | None = Field(
        default=None, max_length=BINS, description="Cells of the negative class; null: suppressed."
    )
    confusion: Confusion = Field(default_factory=Confusion)
