"""What `kubectl describe dataset` shows of a verification: its start, and its end with counts.

A clean sample (CASES one-file cases) and a copy in which one file names its patient are verified
by the real verification step through the development runner; the Events are read back from the
API server as kubectl reads them.
"""

from __future__ import annotations

import json

from operator_harness import CASES, Operator, add_phi, apply, dataset, get, local_runner, wait_for


def _events(kubectl, ns: str, name: str) -> dict[str, str]:
    out = kubectl(
        "get", "events", "-n", ns, "-o", "json",
        "--field-selector", f"involvedObject.kind=Dataset,involvedObject.name={name}",
    )
    assert out.returncode == 0, out.stderr
    return {e["reason"]: e["message"] for e in json.loads(out.stdout)["items"]}


def test_verification_start_and_end_are_events_with_counts(
    api_client, kubeconfig, kubectl, namespace, claim, tmp_path
):
    ns = namespace
    add_phi(claim)  # "dirty": the sample with DOE^JANE as one file's PatientName
    files = sum(1 for _ in (claim / "chest" / "studies").rglob("*.dcm"))
    operator = Operator(kubeconfig, ns, tmp_path / "operator.log").start()
    try:
        with local_runner(api_client, claim, tmp_path / "runner"):
            apply(kubectl, ns, dataset("chest"), dataset("dirty", sub="dirty"))
            for name, phase in (("chest", "Verified"), ("dirty", "Rejected")):
                wait_for(
                    lambda name=name: get(api_client, "datasets", ns, name),
                    lambda d, phase=phase: ((d or {}).get("status") or {}).get("phase") == phase,
                    120, f"{name} {phase}", operator,
                )
            # The end Event is posted just after the status it follows: poll for it.
            clean = wait_for(lambda: _events(kubectl, ns, "chest"), lambda e: "Verified" in e, 30, "events", operator)
            dirty = wait_for(lambda: _events(kubectl, ns, "dirty"), lambda e: "PHIFound" in e, 30, "events", operator)
    finally:
        operator.stop()
    assert files == CASES  # the classification sample has one file per case
    assert clean["Verified"] == f"verified de-identified: {CASES} cases, {files} files checked; none refused"
    assert dirty["PHIFound"] == (
        f"rejected: identifying data found: {CASES} cases, {files} files checked; "
        "refused: PatientName (0010,0010) in 1 file"
    )
    for events, name in ((clean, "chest"), (dirty, "dirty")):
        started = events["VerificationStarted"]
        assert started.startswith(f"verification Job {name}-verify-") and f"at {name}/studies" in started, started
        assert "not known until it ends" in started
    assert "DOE" not in json.dumps([clean, dirty])
