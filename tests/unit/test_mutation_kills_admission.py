"""Admission refusals word for word, and image references taken apart (mutmut survivors).

A refusal ends up verbatim in a condition a platform engineer reads, so its whole text is
part of the behaviour: each message below is written out by hand, naming the field, the
value and what the policy allows.
"""

from __future__ import annotations

import pytest
from factories import algorithm, dataset, policy, validation

from lightbox.operator.admission import (
    admit,
    check_algorithm,
    check_dataset,
    image_repository,
    registry_allowed,
    select_policy,
)


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("reg.example/team/app:1.0@sha256:" + "a" * 64, "reg.example/team/app"),
        ("reg.example/team/app@sha256:" + "a" * 64, "reg.example/team/app"),
        ("reg.example/team/app:1.0", "reg.example/team/app"),
        ("reg.example:5000/team/app:1.0", "reg.example:5000/team/app"),  # a port is not a tag
        ("reg.example:5000/app", "reg.example:5000/app"),
        ("reg.example/app:1.0:odd", "reg.example/app"),  # only the first ":" of the last segment
        ("reg.example/app@sha256:x@y", "reg.example/app"),  # only the first "@"
        ("app:1.0", "app:1.0"),  # no registry: nothing to split, and no registry allows it
        ("reg.example/a:b/app", "reg.example/a:b/app"),  # only the last segment carries a tag
    ],
)
def test_image_repository(image, repository):
    assert image_repository(image) == repository


@pytest.mark.parametrize(
    ("image", "allowed", "ok"),
    [
        ("reg.example/vendor/app:1", ["reg.example/vendor/"], True),  # a trailing slash on the prefix
        ("reg.example/vendor/app:1", ["reg.example/vendor//"], True),
        ("reg.example/vendor/app:1", ["reg.example/vendor"], True),
        ("reg.example/vendorx/app:1", ["reg.example/vendor/"], False),
        ("reg.example/vendor/app:1", ["/reg.example/vendor"], False),
        ("reg.example/vendor", ["reg.example/vendor"], True),  # the repository itself
        ("reg.example/vendor/app:1", ["other.example", "reg.example"], True),
        ("reg.example/vendor/app:1", [], False),
        ("reg.example/vendorX/app:1", ["reg.example/vendorX"], True),  # only "/" is trimmed off
    ],
)
def test_registry_allowed(image, allowed, ok):
    assert registry_allowed(image, allowed) is ok


def test_no_policy_message():
    problem = select_policy([policy(namespaces=["other"])], "region")
    assert (problem.reason, problem.message) == (
        "NoSandboxPolicy",
        "no SandboxPolicy governs namespace 'region'; a cluster administrator must create one "
        "(spec.namespaces empty or listing this namespace) before anything can run here",
    )


def test_ambiguous_policy_message_names_them_sorted():
    problem = select_policy([policy("zeta"), policy("alpha", namespaces=["region"])], "region")
    assert (problem.reason, problem.message) == (
        "AmbiguousPolicy",
        "namespace 'region' is governed by 2 SandboxPolicies (alpha, zeta); "
        "exactly one may apply: narrow their spec.namespaces",
    )


def test_a_policy_without_a_name_is_shown_as_a_question_mark():
    nameless = policy()
    nameless.metadata.pop("name")
    problem = select_policy([nameless, policy("beta")], "region")
    assert "SandboxPolicies (?, beta)" in problem.message
    problems = check_algorithm(algorithm(resources={"gpus": 9}), nameless)
    assert "SandboxPolicy ? allows at most 2 per run" in problems[0].message


def test_algorithm_refusals_word_for_word():
    rules = policy(
        "strict",
        allowedRegistries=["reg.example", "other.example/team"],
        maxGpusPerRun=1,
        maxGpusInUse=2,
        maxRunSeconds=600,
        maxCpu="2",
        maxMemory="4Gi",
        maxEphemeralStorage="10Gi",
    )
    algo = algorithm(
        image="registry.vendor.example/radiology/chest-xray:latest",
        resources={"gpus": 3, "cpu": "3", "memory": "5Gi", "ephemeralStorage": "11Gi"},
        timeoutSeconds=601,
    )
    assert [(p.reason, p.message) for p in check_algorithm(algo, rules)] == [
        (
            "ImageNotPinned",
            "spec.image 'registry.vendor.example/radiology/chest-xray:latest' must be pinned by digest (@sha256:<64 "
            "hex>)",
        ),
        (
            "RegistryNotAllowed",
            "spec.image repository 'registry.vendor.example/radiology/chest-xray' is not under an allowed registry of "
            "SandboxPolicy strict: reg.example, other.example/team",
        ),
        ("TooManyGPUs", "spec.resources.gpus is 3; SandboxPolicy strict allows at most 1 per run"),
        (
            "TooManyGPUs",
            "spec.resources.gpus is 3; SandboxPolicy strict lets a namespace use at most 2 at once (maxGpusInUse), "
            "so the run could never start",
        ),
        ("TimeoutTooLong", "spec.timeoutSeconds is 601; SandboxPolicy strict allows at most 600"),
        ("ResourcesTooLarge", "spec.resources.cpu is 3; SandboxPolicy strict allows at most 2"),
        ("ResourcesTooLarge", "spec.resources.memory is 5Gi; SandboxPolicy strict allows at most 4Gi"),
        ("ResourcesTooLarge", "spec.resources.ephemeralStorage is 11Gi; SandboxPolicy strict allows at most 10Gi"),
    ]


def test_an_unpinned_image_is_allowed_when_the_policy_does_not_require_digests():
    algo = algorithm(image="registry.vendor.example/radiology/chest-xray:latest")
    assert check_algorithm(algo, policy(requireDigest=False)) == []


def test_unverified_dataset_message_word_for_word():
    ds = dataset(
        "chest-2025",
        verified=False,
        phase="Rejected",
        violations=[
            {"keyword": f"Attr{i}", "tag": "(0010,0010)", "occurrences": i + 1, "files": i + 1} for i in range(6)
        ],
    )
    (problem,) = check_dataset(ds)
    assert (problem.reason, problem.message) == (
        "DatasetNotVerified",
        "Dataset chest-2025 is not verified de-identified (phase Rejected); identifying attributes found: "
        "Attr0 in 1 files, Attr1 in 2 files, Attr2 in 3 files, Attr3 in 4 files, Attr4 in 5 files; "
        "runs start once its verification passes",
    )


def test_a_dataset_without_status_is_pending():
    ds = dataset("fresh", verified=False)
    ds.status = None
    (problem,) = check_dataset(ds)
    assert problem.message == (
        "Dataset fresh is not verified de-identified (phase Pending); runs start once its verification passes"
    )


def test_a_verified_dataset_without_a_hash_keeps_its_phase_in_the_message():
    (problem,) = check_dataset(dataset("nohash", content_hash=None))
    assert problem.message == (
        "Dataset nohash is not verified de-identified (phase Verified); runs start once its verification passes"
    )


def test_missing_references_word_for_word():
    result = admit(validation(), None, None, [policy()])
    assert [(p.reason, p.message) for p in result.problems] == [
        ("AlgorithmNotFound", "spec.algorithmRef.name 'chest': no such Algorithm in namespace 'region'"),
        ("DatasetNotFound", "spec.datasetRef.name 'chest-2025': no such Dataset in namespace 'region'"),
    ]
    assert result.policy is not None and result.policy.metadata["name"] == "default"


def test_overlapping_truth_and_studies_word_for_word():
    (problem,) = check_dataset(dataset("mixed", studies="chest", truth="chest/truth"))
    assert (problem.reason, problem.message) == (
        "GroundTruthOverlapsStudies",
        "Dataset mixed: spec.groundTruth (claim imaging, sub-path 'chest/truth') overlaps spec.studies "
        "(claim imaging, sub-path 'chest'): the truth would be staged with the vendor's input; use another claim, "
        "or two sub-paths neither of which contains the other",
    )


def test_objects_without_a_name_or_namespace_are_named_plainly():
    nameless = dataset(verified=False)
    nameless.metadata.pop("name")
    assert check_dataset(nameless)[0].message.startswith("Dataset ? is not verified")
    val = validation()
    val.metadata.pop("namespace")
    result = admit(val, None, dataset(), [policy(namespaces=["region"])])
    assert [p.message for p in result.problems] == [
        "spec.algorithmRef.name 'chest': no such Algorithm in namespace ''",
        "no SandboxPolicy governs namespace ''; a cluster administrator must create one "
        "(spec.namespaces empty or listing this namespace) before anything can run here",
    ]
