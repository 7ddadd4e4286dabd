"""Which AlgorithmApprovals count for an Algorithm as it stands now (pure).

An approval counts when it names this Algorithm, its current image digest and
version, and comes from someone other than the submitter; a person counts once,
however many approvals they write (their earliest). A policy's groups are each
met by a different counted person (a bipartite matching), so one person in two
groups cannot stand in for two reviewers. Who the approver is was checked by the
API server (charts/lightbox/templates/approvals.yaml); this module trusts
``spec.approver`` and ``spec.groups`` for that reason only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lightbox.api import Algorithm, AlgorithmApproval
from lightbox.api.policy import ApprovalRequirement


@dataclass(frozen=True)
class Tally:
    required: int
    counted: list[AlgorithmApproval] = field(default_factory=list)
    missing_groups: list[str] = field(default_factory=list)
    # Why approvals that name this Algorithm were not counted, for the condition's message.
    ignored: list[str] = field(default_factory=list)
    submitter_unknown: bool = False

    @property
    def satisfied(self) -> bool:
        return not self.submitter_unknown and len(self.counted) >= self.required and not self.missing_groups

    def message(self, algorithm: str, policy: str) -> str:
        if self.submitter_unknown:
            return (
                f"SandboxPolicy {policy} requires {self.required} approvals and Algorithm {algorithm} has no "
                "spec.submittedBy: recreate it with spec.submittedBy set to your user name so that your own "
                "approval can be told apart"
            )
        parts = [f"{len(self.counted)} of {self.required} approvals"]
        parts += [f"needs one from group {group}" for group in self.missing_groups]
        text = "; ".join(parts)
        if self.ignored:
            text += f" (not counted: {', '.join(self.ignored)})"
        return (
            f"{text}; SandboxPolicy {policy} requires approvals of Algorithm {algorithm}'s "
            "current image digest and version"
        )


def image_digest(image: str) -> str | None:
    """``sha256:<hex>`` of a digest-pinned reference, else None (nothing can approve an unpinned image)."""
    _, at, digest = image.rpartition("@")
    return digest if at and digest.startswith("sha256:") else None


def _created(approval: AlgorithmApproval) -> tuple[str, str]:
    return (str(approval.metadata.get("creationTimestamp") or ""), str(approval.metadata.get("name") or ""))


def unmatched_groups(groups: Sequence[str], members: Sequence[Sequence[str]]) -> list[str]:
    """Groups left without a distinct person when each person may fill at most one group."""
    if not groups:
        return []
    if not members:
        return list(groups)
    # Imported here: scipy.optimize is ~60 MiB resident, needed only where a policy asks for
    # approvals from distinct groups (docs/performance.md).
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    cost = np.array([[0 if group in person else 1 for person in members] for group in groups])
    rows, cols = linear_sum_assignment(cost)
    filled = {int(r) for r, c in zip(rows, cols, strict=True) if cost[r, c] == 0}
    return [group for index, group in enumerate(groups) if index not in filled]


def tally(algorithm: Algorithm, approvals: Sequence[AlgorithmApproval], requirement: ApprovalRequirement) -> Tally:
    if requirement.required == 0 and not requirement.distinct_groups:
        return Tally(required=0)
    name = algorithm.metadata.get("name")
    submitter = algorithm.spec.submitted_by
    digest = image_digest(algorithm.spec.image)
    counted: list[AlgorithmApproval] = []
    ignored: list[str] = []
    seen: set[str] = set()
    for approval in sorted((a for a in approvals if a.spec.algorithm == name), key=_created):
        spec = approval.spec
        if digest is None or spec.image_digest != digest:
            ignored.append(f"{spec.approver}'s approval of another image digest")
        elif spec.version != algorithm.spec.version:
            ignored.append(f"{spec.approver}'s approval of version {spec.version}")
        elif submitter is not None and spec.approver == submitter:
            ignored.append(f"{spec.approver}'s own submission")
        elif spec.approver in seen:
            ignored.append(f"a second approval by {spec.approver}")
        else:
            seen.add(spec.approver)
            counted.append(approval)
    missing = unmatched_groups(requirement.distinct_groups, [a.spec.groups for a in counted])
    return Tally(
        required=requirement.required,
        counted=counted,
        missing_groups=missing,
        ignored=ignored,
        submitter_unknown=submitter is None,
    )
