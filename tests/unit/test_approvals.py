"""Counting approvals (operator/approvals.py) and where the count blocks: hand-made cases.

Every expected count below is a hand count of the approvals listed in the test.
"""

from __future__ import annotations

import factories
import pytest
from pydantic import ValidationError

from lightbox import auditchain
from lightbox.api import AlgorithmApproval
from lightbox.api.policy import ApprovalRequirement
from lightbox.api.validation import RunRecord
from lightbox.operator import admission, approvals, audit

DIGEST = factories.DIGEST
OTHER = "sha256:" + "cd" * 32
BOTH = ApprovalRequirement(required=2, distinct_groups=["radiology-qa", "it-security"])
TWO = ApprovalRequirement(required=2)


def submitted(submitter: str | None = "carol", **spec):
    return factories.algorithm(**({"submittedBy": submitter} if submitter else {}), **spec)


def approval(approver: str, *groups: str, name: str | None = None, digest: str = DIGEST, version: str = "1.2.0",
             algorithm: str = "chest", created: str = "2026-11-30T10:00:00Z") -> AlgorithmApproval:
    return AlgorithmApproval.model_validate({
        "metadata": {"name": name or f"by-{approver}", "namespace": "region", "creationTimestamp": created},
        "spec": {"algorithm": algorithm, "imageDigest": digest, "version": version, "approver": approver, "groups": list(groups)},
    })


def approvers(tally: approvals.Tally) -> list[str]:
    return [a.spec.approver for a in tally.counted]


def test_no_requirement_needs_nothing_and_lists_nothing():
    tally = approvals.tally(submitted(None), [], ApprovalRequirement())
    assert tally.satisfied and tally.counted == []


def test_two_people_from_the_two_groups_satisfy_it():
    tally = approvals.tally(submitted(), [approval("alice", "radiology-qa"), approval("bob", "it-security")], BOTH)
    assert approvers(tally) == ["alice", "bob"]
    assert tally.satisfied and tally.missing_groups == []


def test_the_submitters_own_approval_does_not_count():
    tally = approvals.tally(submitted("carol"), [approval("carol", "radiology-qa"), approval("bob", "it-security")], BOTH)
    assert approvers(tally) == ["bob"]
    assert not tally.satisfied
    assert tally.missing_groups == ["radiology-qa"]
    assert tally.message("chest", "region") == (
        "1 of 2 approvals; needs one from group radiology-qa (not counted: carol's own submission); "
        "SandboxPolicy region requires approvals of Algorithm chest's current image digest and version"
    )


def test_a_second_approval_by_the_same_person_does_not_count_and_the_first_is_kept():
    later = approval("alice", "radiology-qa", name="again", created="2026-11-30T11:00:00Z")
    first = approval("alice", "radiology-qa", name="first", created="2026-11-30T09:00:00Z")
    tally = approvals.tally(submitted(), [later, first], TWO)
    assert [a.metadata["name"] for a in tally.counted] == ["first"]
    assert tally.ignored == ["a second approval by alice"]
    assert not tally.satisfied


def test_an_approval_of_another_digest_or_version_does_not_count():
    tally = approvals.tally(
        submitted(),
        [approval("alice", "radiology-qa", digest=OTHER), approval("bob", "it-security", version="1.1.0")],
        BOTH,
    )
    assert tally.counted == []
    assert tally.ignored == ["alice's approval of another image digest", "bob's approval of version 1.1.0"]
    assert tally.missing_groups == ["radiology-qa", "it-security"]


def test_a_new_digest_withdraws_every_approval_of_the_old_one():
    given = [approval("alice", "radiology-qa"), approval("bob", "it-security")]
    assert approvals.tally(submitted(), given, BOTH).satisfied
    rebuilt = submitted(image=f"registry.vendor.example/radiology/chest-xray:1.2.1@{OTHER}")
    assert approvals.tally(rebuilt, given, BOTH).counted == []
    bumped = submitted(version="1.2.1")
    assert approvals.tally(bumped, given, BOTH).counted == []


def test_an_unpinned_image_cannot_be_approved():
    unpinned = submitted(image="registry.vendor.example/radiology/chest-xray:1.2.0")
    assert approvals.tally(unpinned, [approval("alice", "radiology-qa"), approval("bob", "it-security")], BOTH).counted == []


def test_approvals_of_another_algorithm_are_not_looked_at():
    tally = approvals.tally(submitted(), [approval("alice", "radiology-qa", algorithm="other")], TWO)
    assert tally.counted == [] and tally.ignored == []


def test_two_approvers_of_one_group_leave_the_other_group_missing():
    tally = approvals.tally(submitted(), [approval("alice", "radiology-qa"), approval("dave", "radiology-qa")], BOTH)
    assert len(tally.counted) == 2
    assert tally.missing_groups == ["it-security"] and not tally.satisfied


def test_one_person_in_both_groups_cannot_fill_both():
    tally = approvals.tally(submitted(), [approval("erin", "radiology-qa", "it-security")], ApprovalRequirement(required=1, distinct_groups=["radiology-qa", "it-security"]))
    assert len(tally.missing_groups) == 1 and not tally.satisfied


def test_groups_are_matched_to_people_not_greedily():
    # Hand-solved: erin must take it-security for frank to fill radiology-qa... and vice versa; one assignment works.
    people = [approval("erin", "radiology-qa", "it-security"), approval("frank", "radiology-qa")]
    assert approvals.unmatched_groups(["it-security", "radiology-qa"], [a.spec.groups for a in people]) == []
    assert approvals.unmatched_groups(["radiology-qa", "it-security"], [a.spec.groups for a in people]) == []
    assert approvals.unmatched_groups(["a", "b", "c"], [["a", "b"], ["a", "b"]]) == ["c"]


def test_without_a_submitter_nothing_is_approved_and_the_message_says_to_set_it():
    tally = approvals.tally(submitted(None), [approval("alice", "radiology-qa"), approval("bob", "it-security")], BOTH)
    assert not tally.satisfied
    assert "has no spec.submittedBy" in tally.message("chest", "region")


def test_an_unapproved_algorithm_blocks_its_validation_naming_what_is_missing():
    pol = factories.policy(name="region", approvals={"required": 2, "distinctGroups": ["radiology-qa", "it-security"]})
    result = admission.admit(factories.validation(), submitted(), factories.dataset(), [pol], [approval("alice", "radiology-qa")])
    assert not result.admitted
    (problem,) = result.problems
    assert problem.reason == "NotApproved"
    assert problem.message.startswith("1 of 2 approvals; needs one from group it-security;")
    admitted = admission.admit(
        factories.validation(), submitted(), factories.dataset(), [pol],
        [approval("alice", "radiology-qa"), approval("bob", "it-security")],
    )
    assert admitted.admitted


def test_the_default_policy_asks_for_no_approval():
    assert admission.admit(factories.validation(), factories.algorithm(), factories.dataset(), [factories.policy()]).admitted


def test_the_audit_record_lists_the_counted_approvals():
    v = factories.validation()
    v.metadata |= {"uid": "11111111-0000-4000-8000-000000000001"}
    record = RunRecord(name="chest-v1-r1", number=1, phase="Succeeded", finished_at="2026-11-30T13:00:00Z")
    counted = [approval("alice", "radiology-qa"), approval("bob", "it-security", created="2026-11-30T12:00:00Z")]
    body = audit.audit_record(v, record, submitted(), factories.dataset(), "region", "op", approvals=counted)
    listed = body["spec"]["algorithm"]["approvals"]
    assert [(a["approver"], a["groups"], a["approvedAt"]) for a in listed] == [
        ("alice", ["radiology-qa"], "2026-11-30T10:00:00Z"),
        ("bob", ["it-security"], "2026-11-30T12:00:00Z"),
    ]
    # The approvals are inside the hashed spec: the chain verifies, and dropping one is found.
    assert auditchain.verify([body]) == []
    body["spec"]["algorithm"]["approvals"].pop()
    assert auditchain.verify([body]) != []


@pytest.mark.parametrize(
    ("field", "value"),
    [("imageDigest", "sha256:short"), ("version", ""), ("algorithm", "Not_A_Name")],
)
def test_a_malformed_approval_is_refused_naming_the_field(field, value):
    body = {"algorithm": "chest", "imageDigest": DIGEST, "version": "1", "approver": "alice", field: value}
    with pytest.raises(ValidationError) as caught:
        AlgorithmApproval.model_validate({"metadata": {"name": "x"}, "spec": body})
    assert field in str(caught.value)


def test_an_approval_event_requeues_the_algorithm_it_names_and_the_namespaces_validations():
    import asyncio

    from lightbox.operator import handlers
    from lightbox.operator.dependents import Dependents
    from lightbox.operator.keys import AlgorithmKey, ValidationKey
    from lightbox.operator.runtime import Runtime

    async def queued_after(event: dict) -> set:
        runtime = Runtime(config=None, kube=None, exporter=None)  # type: ignore[arg-type]
        runtime.validations["region"] = {"chest-v1"}
        dependents = Dependents()
        dependents.update("region", "chest-v1", {"algorithmRef": {"name": "chest"}})
        await handlers.approval_event(event=event, namespace="region", memo={"runtime": runtime, "dependents": dependents})
        keys = set()
        while len(runtime.queue):
            keys.add(await runtime.queue.get())
        return keys

    made = {"type": "ADDED", "object": {"spec": {"algorithm": "chest"}}}
    assert asyncio.run(queued_after(made)) == {AlgorithmKey("region", "chest"), ValidationKey("region", "chest-v1")}
    gone = {"type": "DELETED", "object": {"spec": {"algorithm": "chest"}}}
    assert AlgorithmKey("region", "chest") in asyncio.run(queued_after(gone))
