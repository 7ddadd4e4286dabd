"""Job and Pod status → the outcome of a run, with a specific reason.

Pure: reads only the dicts the API server returned. The reasons are the
vocabulary operators see in ``status.runs[].reason``, in Events and in the
``lightbox_runs_total{reason}`` metric, so a failure is never just "Failed".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from lightbox.api import run as layout
from lightbox.api.results import TERMINATION_MESSAGE_LIMIT, ScoreReport

IMAGE_PULL_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable"}
)
MESSAGE_LIMIT = 2048  # RunRecord.message

# Reasons, so callers and tests do not spell them twice.
SUCCEEDED = "Succeeded"
IMAGE_PULL_FAILED = "ImagePullFailed"
DEADLINE_EXCEEDED = "DeadlineExceeded"
OOM_KILLED = "OOMKilled"
VENDOR_EXIT_CODE = "VendorExitCode"
MALFORMED_PREDICTIONS = "MalformedPredictions"
PHI_FOUND = "PHIFound"
DATASET_UNREADABLE = "DatasetUnreadable"
DATASET_CHANGED = "DatasetChanged"
ISOLATION_NOT_ENFORCED = "IsolationNotEnforced"
GROUND_TRUTH_UNREADABLE = "GroundTruthUnreadable"
TERMINATION_MESSAGE_INVALID = "TerminationMessageInvalid"
DATASET_DELETED = "DatasetDeleted"
STAGE_FAILED = "StageFailed"
SCORER_FAILED = "ScorerFailed"
POD_LOST = "PodLost"
JOB_FAILED = "JobFailed"


@dataclass(frozen=True)
class Outcome:
    phase: Literal["Succeeded", "Failed"]
    reason: str
    message: str
    report: ScoreReport | None = None
    exit_code: int | None = None


def _clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _statuses(pod: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not pod:
        return {}
    status = pod.get("status") or {}
    out = {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for item in status.get(key) or []:
            out[item.get("name", "")] = item
    return out


def _terminated(status: dict[str, Any] | None) -> dict[str, Any] | None:
    if not status:
        return None
    state = status.get("state") or {}
    return state.get("terminated") or None


def _job_condition(job: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    conditions: list[dict[str, Any]] = ((job or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind and c.get("status") == "True"), None)


def job_finished(job: dict[str, Any] | None) -> bool:
    return bool(_job_condition(job, "Complete") or _job_condition(job, "Failed"))


def pod_finished(pod: dict[str, Any] | None) -> bool:
    return ((pod or {}).get("status") or {}).get("phase") in {"Succeeded", "Failed"}


def pod_event_matters(event_type: str | None, pod: dict[str, Any]) -> bool:
    """Only endings and pull failures change a run; every other pod update is noise
    that would cost a reconciliation (many per run)."""
    return event_type == "DELETED" or pod_finished(pod) or image_pull_failure(pod) is not None


def job_event_matters(event_type: str | None, job: dict[str, Any]) -> bool:
    """Endings, deletions, and a Kueue admission (the Job leaves suspension)."""
    if event_type == "DELETED" or job_finished(job) or (job.get("metadata") or {}).get("deletionTimestamp"):
        return True
    labels = (job.get("metadata") or {}).get("labels") or {}
    queued = "kueue.x-k8s.io/queue-name" in labels
    return queued and not (job.get("spec") or {}).get("suspend")


def _step_message(terminated: dict[str, Any], fallback: str) -> str:
    """A trusted step's termination JSON carries a message; fall back to a fixed text."""
    raw = terminated.get("message") or ""
    try:
        data = json.loads(raw)
    except (TypeError, ValueError, RecursionError):
        return fallback
    if isinstance(data, dict) and isinstance(data.get("message"), str) and data["message"]:
        return _clip(data["message"])
    return fallback


def image_pull_failure(pod: dict[str, Any] | None) -> Outcome | None:
    """Kubelets retry pulls forever; an image that cannot be pulled ends the run now."""
    for name, status in _statuses(pod).items():
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_PULL_REASONS:
            image = status.get("image") or "?"
            detail = waiting.get("message") or waiting["reason"]
            text = f"container {name}: image {image} could not be pulled: {detail}"
            return Outcome("Failed", IMAGE_PULL_FAILED, _clip(text))
    return None


def parse_report(message: str | None) -> ScoreReport | Outcome:
    """The scorer's termination message as a ScoreReport, or why it is not one."""
    if not message:
        return Outcome("Failed", TERMINATION_MESSAGE_INVALID, "the scorer wrote no termination message")
    size = len(message.encode())
    if size > TERMINATION_MESSAGE_LIMIT:
        return Outcome(
            "Failed",
            TERMINATION_MESSAGE_INVALID,
            f"the scorer's termination message is {size} bytes; at most {TERMINATION_MESSAGE_LIMIT} are allowed",
        )
    try:
        data = json.loads(message)
    except (ValueError, RecursionError) as exc:
        # RecursionError: deeply nested arrays fit in the 4 KiB message and exhaust the decoder's stack.
        text = f"the scorer's termination message is not JSON: {exc}"
        return Outcome("Failed", TERMINATION_MESSAGE_INVALID, _clip(text))
    try:
        return ScoreReport.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()[:5]
        )
        return Outcome(
            "Failed",
            TERMINATION_MESSAGE_INVALID,
            _clip(f"the scorer's termination message is not a ScoreReport: {problems}"),
        )


def _deadline(job: dict[str, Any] | None, pod: dict[str, Any] | None) -> Outcome | None:
    pod_status = (pod or {}).get("status") or {}
    cond = _job_condition(job, "Failed")
    if pod_status.get("reason") == "DeadlineExceeded" or (cond and cond.get("reason") == "DeadlineExceeded"):
        deadline = ((pod or {}).get("spec") or {}).get("activeDeadlineSeconds") or (
            ((job or {}).get("spec") or {}).get("activeDeadlineSeconds")
        )
        return Outcome("Failed", DEADLINE_EXCEEDED, f"the run did not finish within its deadline of {deadline} seconds")
    return None


def run_outcome(job: dict[str, Any] | None, pod: dict[str, Any] | None) -> Outcome | None:
    """How a run ended, or None while it is still going. The first step that failed names the reason."""
    pulled = image_pull_failure(pod)
    if pulled is not None:
        return pulled
    if not (pod_finished(pod) or job_finished(job)):
        return None
    deadline = _deadline(job, pod)
    if deadline is not None:
        return deadline
    statuses = _statuses(pod)
    stage = _stage_outcome(_terminated(statuses.get(layout.STAGE_CONTAINER)))
    if stage is not None:
        return stage
    vendor = _vendor_outcome(statuses)
    if vendor is not None:
        return vendor
    score = _terminated(statuses.get(layout.SCORE_CONTAINER))
    if score is not None:
        return _score_outcome(score)
    return _failed_without_result(job, pod)


# Exit codes of the trusted steps that name their own reason: (reason, message when the step wrote none).
_STAGE_EXITS: tuple[tuple[int, str, str], ...] = (
    (layout.EXIT_PHI_FOUND, PHI_FOUND, "staging found identifying data in the studies"),
    (layout.EXIT_DATASET_UNREADABLE, DATASET_UNREADABLE, "staging could not read the studies"),
    # The vendor never started: the stage step found the network (or GPUs) reachable in this pod.
    (
        layout.EXIT_ISOLATION_NOT_ENFORCED,
        ISOLATION_NOT_ENFORCED,
        "the network answered from inside the run pod; the vendor container was not started",
    ),
    (layout.EXIT_DATASET_CHANGED, DATASET_CHANGED, "the studies changed since the Dataset was verified"),
)
_SCORE_EXITS: tuple[tuple[int, str, str], ...] = (
    (
        layout.EXIT_MALFORMED_PREDICTIONS,
        MALFORMED_PREDICTIONS,
        "the vendor's predictions are missing, not JSON, or not to the contract",
    ),
    (layout.EXIT_GROUND_TRUTH_UNREADABLE, GROUND_TRUTH_UNREADABLE, "the ground truth could not be read"),
)


def _known_exit(
    terminated: dict[str, Any], code: Any, exits: tuple[tuple[int, str, str], ...]
) -> Outcome | None:
    for known, reason, fallback in exits:
        if code == known:
            return Outcome("Failed", reason, _step_message(terminated, fallback), exit_code=code)
    return None


def _stage_outcome(stage: dict[str, Any] | None) -> Outcome | None:
    if not stage or stage.get("exitCode", 0) == 0:
        return None
    code = stage.get("exitCode")
    if stage.get("reason") == "OOMKilled":
        return Outcome("Failed", OOM_KILLED, "the staging step ran out of memory", exit_code=code)
    known = _known_exit(stage, code, _STAGE_EXITS)
    if known is not None:
        return known
    return Outcome("Failed", STAGE_FAILED, f"the staging step exited with code {code}", exit_code=code)


def _vendor_outcome(statuses: dict[str, dict[str, Any]]) -> Outcome | None:
    """One vendor container, or one per case (vendor-0001, ...: sandbox/packaging.py): the first that failed."""
    prefix = f"{layout.VENDOR_CONTAINER}-"
    vendors = [_terminated(v) for k, v in statuses.items() if k == layout.VENDOR_CONTAINER or k.startswith(prefix)]
    vendor = next((v for v in vendors if v and v.get("exitCode", 0) != 0), None)
    if vendor is None:
        return None
    code = vendor.get("exitCode")
    if vendor.get("reason") == "OOMKilled":
        return Outcome("Failed", OOM_KILLED, "the vendor container exceeded its memory limit", exit_code=code)
    # The vendor's own termination message is untrusted text: not copied.
    return Outcome("Failed", VENDOR_EXIT_CODE, f"the vendor container exited with code {code}", exit_code=code)


def _score_outcome(score: dict[str, Any]) -> Outcome:
    code = score.get("exitCode", 0)
    if score.get("reason") == "OOMKilled":
        return Outcome("Failed", OOM_KILLED, "the scorer ran out of memory", exit_code=code)
    known = _known_exit(score, code, _SCORE_EXITS)
    if known is not None:
        return known
    if code != 0:
        return Outcome("Failed", SCORER_FAILED, f"the scorer exited with code {code}", exit_code=code)
    parsed = parse_report(score.get("message"))
    if isinstance(parsed, Outcome):
        return parsed
    return Outcome("Succeeded", SUCCEEDED, f"scored {parsed.scored} of {parsed.cases} cases", report=parsed)


def _failed_without_result(job: dict[str, Any] | None, pod: dict[str, Any] | None) -> Outcome:
    """Finished, and no step said why: the pod or the Job did."""
    if pod is None:
        if _job_condition(job, "Complete"):
            return Outcome("Failed", POD_LOST, "the Job completed but its pod, which held the results, is gone")
        cond = _job_condition(job, "Failed") or {}
        text = f"the Job failed ({cond.get('reason', 'unknown')}): {cond.get('message', '')}".rstrip(": ")
        return Outcome("Failed", JOB_FAILED, _clip(text))
    pod_status = pod.get("status") or {}
    reason = pod_status.get("reason") or "unknown"
    text = f"the pod failed ({reason}): {pod_status.get('message', '')}".rstrip(": ")
    return Outcome("Failed", JOB_FAILED, _clip(text))


# -- isolation probe ---------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    isolated: bool
    message: str


def probe_result(pod: dict[str, Any] | None) -> ProbeResult | None:
    """The probe pod's verdict; anything but a clean "nothing answered" counts as not isolated."""
    if pod is None:
        return None
    pulled = image_pull_failure(pod)
    if pulled is not None:
        return ProbeResult(False, f"probe could not start: {pulled.message}")
    if not pod_finished(pod):
        return None
    status = pod.get("status") or {}
    if status.get("reason") == "DeadlineExceeded":
        return ProbeResult(False, "probe did not finish within its deadline")
    term = _terminated(next(iter(_statuses(pod).values()), None))
    if term is None:
        return ProbeResult(False, f"probe pod {status.get('phase')} without a container result")
    try:
        data = json.loads(term.get("message") or "")
    except (ValueError, RecursionError):
        data = None
    if term.get("exitCode") == 0 and isinstance(data, dict) and data.get("isolated") is True:
        return ProbeResult(True, "nothing answered the probe")
    if isinstance(data, dict) and data.get("answered"):
        return ProbeResult(False, _clip("answered: " + ", ".join(map(str, data["answered"])), 1024))
    return ProbeResult(False, f"probe exited with code {term.get('exitCode')}")


# -- dataset verification ----------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    verified: bool
    phase: Literal["Verified", "Rejected", "Error"]
    reason: str
    message: str
    summary: dict[str, Any]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def verify_result(job: dict[str, Any] | None, pod: dict[str, Any] | None) -> VerifyResult | None:
    """The de-identification verifier's JSON summary, read defensively (it is data, not code)."""
    pulled = image_pull_failure(pod)
    if pulled is not None:
        return VerifyResult(False, "Error", IMAGE_PULL_FAILED, pulled.message, {})
    if not (pod_finished(pod) or job_finished(job)):
        return None
    deadline = _deadline(job, pod)
    if deadline is not None:
        text = "verification " + deadline.message.removeprefix("the run ")
        return VerifyResult(False, "Error", DEADLINE_EXCEEDED, text, {})
    term = _terminated(next(iter(_statuses(pod).values()), None)) if pod else None
    if term is None:
        return VerifyResult(False, "Error", POD_LOST, "the verification pod ended without a result", {})
    data = _verifier_report(term.get("message") or "")
    if data is None:
        code = term.get("exitCode")
        return VerifyResult(
            False, "Error", TERMINATION_MESSAGE_INVALID, f"the verifier (exit code {code}) wrote no JSON summary", {}
        )
    summary = _verify_summary(data)
    return _verify_verdict(data, term.get("exitCode"), summary)


def _verifier_report(message: str) -> dict[str, Any] | None:
    """The verifier's JSON object with a boolean ``verified``, or None when the message is anything else."""
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict) and "verified" not in data and isinstance(data.get("ok"), bool):
        # `lightbox deid verify --json` names them after its VerificationReport.
        data = {**data, "verified": data["ok"], "fileCount": data.get("files")}
    if not isinstance(data, dict) or not isinstance(data.get("verified"), bool):
        return None
    return data


def _verify_summary(data: dict[str, Any]) -> dict[str, Any]:
    """What the Dataset's status keeps of the report: each field checked for type and clipped."""
    summary: dict[str, Any] = {}
    content_hash = data.get("contentHash") or data.get("content_hash")
    if isinstance(content_hash, str) and len(content_hash) <= 80:
        summary["contentHash"] = content_hash
    for key, alt in (("caseCount", "case_count"), ("fileCount", "file_count"), ("errors", "errors")):
        value = _int(data.get(key, data.get(alt)))
        if value is not None:
            summary[key] = value
    cohort = data.get("cohort")
    if isinstance(cohort, dict):
        summary["cohort"] = {
            str(dim)[:64]: {str(k)[:64]: v for k, v in groups.items() if _int(v) is not None}
            for dim, groups in cohort.items()
            if isinstance(groups, dict)
        }
    summary["violations"] = _violations(data.get("violations"))
    return summary


def _violations(items: Any) -> list[dict[str, Any]]:
    violations = [
        {
            "keyword": str(item.get("keyword", "?"))[:128],
            "tag": str(item.get("tag", "?"))[:16],
            "occurrences": _int(item.get("occurrences")) or 0,
            "files": _int(item.get("files")) or 0,
        }
        for item in items or []
        if isinstance(item, dict)
    ]
    return violations[:200]


def _verify_verdict(data: dict[str, Any], code: Any, summary: dict[str, Any]) -> VerifyResult:
    violations = summary["violations"]
    if data["verified"] and code == 0 and not violations and "contentHash" in summary:
        cases = summary.get("caseCount", "?")
        return VerifyResult(True, "Verified", "Verified", f"{cases} cases verified de-identified", summary)
    if not data["verified"] and not violations and isinstance(data.get("message"), str):
        return VerifyResult(False, "Error", DATASET_UNREADABLE, _clip(data["message"]), summary)
    if not violations and isinstance(data.get("errors"), int) and data["errors"] > 0:
        return VerifyResult(
            False, "Error", DATASET_UNREADABLE, f"{data['errors']} files could not be read as DICOM", summary
        )
    if violations or not data["verified"]:
        found = ", ".join(f"{v['keyword']} in {v['files']} files" for v in violations[:5]) or "see violations"
        return VerifyResult(False, "Rejected", PHI_FOUND, _clip(f"identifying data found: {found}"), summary)
    return VerifyResult(
        False, "Error", "VerificationIncomplete", "the verifier reported success without a content hash", summary
    )
