"""Whether a Validation may run: pure checks of algorithm, dataset and policy.

Every refusal is a ``Problem`` with a CamelCase reason and a message that
names the field and what is allowed, because it ends up verbatim in a
condition that a platform engineer reads. Anything ambiguous is refused:
the sandbox is a security boundary.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from croniter import CroniterBadDateError, croniter

from lightbox.api import Algorithm, AlgorithmApproval, Dataset, SandboxPolicy, Validation, subpath
from lightbox.api.validation import CRON, CRON_HELP
from lightbox.operator import approvals as approvals_mod
from lightbox.operator.quantity import parse_quantity
from lightbox.sandbox.packaging import format_refusal

_DIGEST = re.compile(r"@sha256:[a-f0-9]{64}$")


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


@dataclass(frozen=True)
class Admission:
    policy: SandboxPolicy | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def admitted(self) -> bool:
        return not self.problems


def image_repository(image: str) -> str:
    """``registry/path/name`` of an image reference, without tag or digest."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if len(last) == 2 and ":" in last[1]:
        name = f"{last[0]}/{last[1].split(':', 1)[0]}"
    return name


def registry_allowed(image: str, allowed: list[str]) -> bool:
    """Prefix match on whole path segments: ``reg.example/ven`` does not allow ``reg.example/vendor/x``."""
    repository = image_repository(image)
    return any(repository == prefix or repository.startswith(prefix.rstrip("/") + "/") for prefix in allowed)


def select_policy(policies: list[SandboxPolicy], namespace: str) -> SandboxPolicy | Problem:
    governing = [p for p in policies if not p.spec.namespaces or namespace in p.spec.namespaces]
    if not governing:
        return Problem(
            "NoSandboxPolicy",
            f"no SandboxPolicy governs namespace {namespace!r}; a cluster administrator must create one "
            "(spec.namespaces empty or listing this namespace) before anything can run here",
        )
    if len(governing) > 1:
        names = ", ".join(sorted(p.metadata.get("name", "?") for p in governing))
        return Problem(
            "AmbiguousPolicy",
            f"namespace {namespace!r} is governed by {len(governing)} SandboxPolicies ({names}); "
            "exactly one may apply: narrow their spec.namespaces",
        )
    return governing[0]


def _exceeds(requested: str, limit: str) -> bool:
    return bool(parse_quantity(requested) > parse_quantity(limit))


def check_algorithm(
    algorithm: Algorithm, policy: SandboxPolicy, approvals: Sequence[AlgorithmApproval] = ()
) -> list[Problem]:
    spec, rules = algorithm.spec, policy.spec
    name = policy.metadata.get("name", "?")
    problems = []
    tally = approvals_mod.tally(algorithm, approvals, rules.approvals)
    if not tally.satisfied:
        problems.append(Problem("NotApproved", tally.message(algorithm.metadata.get("name", "?"), name)))
    if rules.require_digest and not _DIGEST.search(spec.image):
        problems.append(
            Problem("ImageNotPinned", f"spec.image {spec.image!r} must be pinned by digest (@sha256:<64 hex>)")
        )
    if not registry_allowed(spec.image, rules.allowed_registries):
        problems.append(
            Problem(
                "RegistryNotAllowed",
                f"spec.image repository {image_repository(spec.image)!r} is not under an allowed registry of "
                f"SandboxPolicy {name}: {', '.join(rules.allowed_registries)}",
            )
        )
    if spec.resources.gpus > rules.max_gpus_per_run:
        problems.append(
            Problem(
                "TooManyGPUs",
                f"spec.resources.gpus is {spec.resources.gpus}; SandboxPolicy {name} allows at most "
                f"{rules.max_gpus_per_run} per run",
            )
        )
    if spec.resources.gpus > rules.max_gpus_in_use:
        problems.append(
            Problem(
                "TooManyGPUs",
                f"spec.resources.gpus is {spec.resources.gpus}; SandboxPolicy {name} lets a namespace use at most "
                f"{rules.max_gpus_in_use} at once (maxGpusInUse), so the run could never start",
            )
        )
    if spec.timeout_seconds > rules.max_run_seconds:
        problems.append(
            Problem(
                "TimeoutTooLong",
                f"spec.timeoutSeconds is {spec.timeout_seconds}; SandboxPolicy {name} allows at most "
                f"{rules.max_run_seconds}",
            )
        )
    for field_name, requested, limit in (
        ("cpu", spec.resources.cpu, rules.max_cpu),
        ("memory", spec.resources.memory, rules.max_memory),
        ("ephemeralStorage", spec.resources.ephemeral_storage, rules.max_ephemeral_storage),
    ):
        if _exceeds(requested, limit):
            problems.append(
                Problem(
                    "ResourcesTooLarge",
                    f"spec.resources.{field_name} is {requested}; SandboxPolicy {name} allows at most {limit}",
                )
            )
    return problems


def check_dataset(dataset: Dataset) -> list[Problem]:
    status = dataset.status
    name = dataset.metadata.get("name", "?")
    spec = dataset.spec
    # The API server refuses this too; an object from before that rule must not run either.
    if subpath.overlap(spec.studies, spec.ground_truth):
        return [
            Problem(
                "GroundTruthOverlapsStudies",
                f"Dataset {name}: spec.groundTruth (claim {spec.ground_truth.claim_name}, sub-path "
                f"{spec.ground_truth.sub_path!r}) overlaps spec.studies (claim {spec.studies.claim_name}, sub-path "
                f"{spec.studies.sub_path!r}): the truth would be staged with the vendor's input; use another claim, "
                "or two sub-paths neither of which contains the other",
            )
        ]
    # A verified Dataset without a content hash cannot be checked for changes before a run.
    if status is None or not status.verified or not status.content_hash:
        phase = status.phase if status and status.phase else "Pending"
        detail = ""
        if status and status.violations:
            found = ", ".join(f"{v.keyword} in {v.files} files" for v in status.violations[:5])
            detail = f"; identifying attributes found: {found}"
        return [
            Problem(
                "DatasetNotVerified",
                f"Dataset {name} is not verified de-identified (phase {phase}){detail}; "
                "runs start once its verification passes",
            )
        ]
    return []


# Any start will do to ask whether a schedule ever fires (the calendar repeats); a fixed one keeps this pure.
_SCHEDULE_PROBE_START = datetime(2001, 1, 1, tzinfo=UTC)


def check_schedule(validation: Validation) -> list[Problem]:
    """The CRD's cron grammar, checked again, and a schedule that never fires (31 February).

    The grammar is the one the API server enforces (a subset of what croniter
    reads), so an object admitted before that rule cannot run on croniter's looser reading.
    """
    schedule = validation.spec.schedule
    if not schedule:
        return []
    if not re.fullmatch(CRON, schedule) or not croniter.is_valid(schedule):
        return [Problem("InvalidSchedule", f"spec.schedule {schedule!r} {CRON_HELP}")]
    try:
        croniter(schedule, _SCHEDULE_PROBE_START).get_next(datetime)
    except CroniterBadDateError:
        return [
            Problem(
                "InvalidSchedule",
                f"spec.schedule {schedule!r} never fires: its day-of-month does not occur in its months",
            )
        ]
    return []


def admit(
    validation: Validation,
    algorithm: Algorithm | None,
    dataset: Dataset | None,
    policies: list[SandboxPolicy],
    approvals: Sequence[AlgorithmApproval] = (),
) -> Admission:
    """All the reasons the validation may not run now; admitted when there are none."""
    namespace = validation.metadata.get("namespace", "")
    problems: list[Problem] = check_schedule(validation)
    if algorithm is None:
        problems.append(
            Problem(
                "AlgorithmNotFound",
                f"spec.algorithmRef.name {validation.spec.algorithm_ref.name!r}: "
                f"no such Algorithm in namespace {namespace!r}",
            )
        )
    if dataset is None:
        problems.append(
            Problem(
                "DatasetNotFound",
                f"spec.datasetRef.name {validation.spec.dataset_ref.name!r}: "
                f"no such Dataset in namespace {namespace!r}",
            )
        )
    selected = select_policy(policies, namespace)
    if isinstance(selected, Problem):
        return Admission(policy=None, problems=[*problems, selected])
    if algorithm is not None:
        problems += check_algorithm(algorithm, selected, approvals)
    if dataset is not None:
        problems += check_dataset(dataset)
    if algorithm is not None and dataset is not None:
        if (refusal := format_refusal(algorithm.spec.packaging, dataset.spec.format)) is not None:
            problems.append(Problem("PackagingDoesNotTakeFormat", refusal))
    return Admission(policy=selected, problems=problems)
