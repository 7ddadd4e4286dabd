import pytest
from factories import DIGEST, algorithm, dataset, policy, validation

from lightbox.operator.admission import (
    Problem,
    admit,
    check_algorithm,
    check_dataset,
    check_schedule,
    image_repository,
    registry_allowed,
    select_policy,
)


def reasons(admission):
    return [p.reason for p in admission.problems]


def test_everything_in_order_is_admitted():
    result = admit(validation(), algorithm(), dataset(), [policy()])
    assert result.admitted, result.problems
    assert result.policy.metadata["name"] == "default"


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        (f"reg.example/a/b@{DIGEST}", "reg.example/a/b"),
        (f"reg.example:5000/a/b:1.0@{DIGEST}", "reg.example:5000/a/b"),
        ("localhost:5000/x:tag", "localhost:5000/x"),
    ],
)
def test_image_repository_strips_tag_and_digest_but_not_port(image, repository):
    assert image_repository(image) == repository


def test_registry_prefix_matches_whole_segments_only():
    image = f"reg.example/vendor/x@{DIGEST}"
    assert registry_allowed(image, ["reg.example"])
    assert registry_allowed(image, ["reg.example/vendor"])
    assert not registry_allowed(image, ["reg.example/ven"])
    assert not registry_allowed(image, ["reg.example.evil.org"])


def test_registry_not_on_allow_list_is_refused_naming_the_field():
    result = admit(validation(), algorithm(image=f"evil.example/x@{DIGEST}"), dataset(), [policy()])
    assert reasons(result) == ["RegistryNotAllowed"]
    assert "spec.image" in result.problems[0].message and "registry.vendor.example" in result.problems[0].message


def test_unpinned_image_is_refused_even_if_the_schema_was_bypassed():
    algo = algorithm()
    algo.spec.image = "registry.vendor.example/radiology/chest-xray:latest"
    assert "ImageNotPinned" in [p.reason for p in check_algorithm(algo, policy())]


# Every limit of the policy, written out here rather than read from the model's defaults.
LIMITS = {
    "maxGpusPerRun": 2, "maxGpusInUse": 3, "maxRunSeconds": 7200,
    "maxCpu": "8", "maxMemory": "64Gi", "maxEphemeralStorage": "50Gi",
}

# (what is requested, exactly at the limit, just above it, reason, field named in the message)
BOUNDARIES = [
    ({"resources": {"gpus": 2}}, {"resources": {"gpus": 3}}, "TooManyGPUs", "spec.resources.gpus"),
    ({"timeoutSeconds": 7200}, {"timeoutSeconds": 7201}, "TimeoutTooLong", "spec.timeoutSeconds"),
    ({"resources": {"cpu": "8"}}, {"resources": {"cpu": "8001m"}}, "ResourcesTooLarge", "spec.resources.cpu"),
    ({"resources": {"cpu": "8000m"}}, {"resources": {"cpu": "9"}}, "ResourcesTooLarge", "spec.resources.cpu"),
    (
        {"resources": {"memory": "64Gi"}},
        {"resources": {"memory": "65537Mi"}},
        "ResourcesTooLarge",
        "spec.resources.memory",
    ),
    # 64Gi is 68719476736 bytes; one byte more is over.
    (
        {"resources": {"memory": "68719476736"}},
        {"resources": {"memory": "68719476737"}},
        "ResourcesTooLarge",
        "spec.resources.memory",
    ),
    (
        {"resources": {"ephemeralStorage": "50Gi"}},
        {"resources": {"ephemeralStorage": "51201Mi"}},
        "ResourcesTooLarge",
        "spec.resources.ephemeralStorage",
    ),
    (
        {"resources": {"ephemeralStorage": "51200Mi"}},
        {"resources": {"ephemeralStorage": "1Ti"}},
        "ResourcesTooLarge",
        "spec.resources.ephemeralStorage",
    ),
]


@pytest.mark.parametrize(
    ("at_limit", "over", "reason", "field"), BOUNDARIES, ids=[f"{b[3]}-{i}" for i, b in enumerate(BOUNDARIES)]
)
def test_each_policy_limit_admits_its_value_and_refuses_one_more(at_limit, over, reason, field):
    rules = [policy(**LIMITS)]
    assert admit(validation(), algorithm(**at_limit), dataset(), rules).admitted
    refused = admit(validation(), algorithm(**over), dataset(), rules)
    assert reasons(refused) == [reason]
    assert field in refused.problems[0].message


def test_a_run_needing_more_gpus_than_the_namespace_may_use_is_refused():
    # A policy from before the API server compared maxGpusInUse with maxGpusPerRun.
    rules = [policy(maxGpusPerRun=4, maxGpusInUse=3)]
    assert admit(validation(), algorithm(resources={"gpus": 3}), dataset(), rules).admitted
    refused = admit(validation(), algorithm(resources={"gpus": 4}), dataset(), rules)
    assert reasons(refused) == ["TooManyGPUs"]
    assert "maxGpusInUse" in refused.problems[0].message and "never start" in refused.problems[0].message


def test_unverified_dataset_blocks_and_names_the_attributes_found():
    ds = dataset(
        verified=False,
        phase="Rejected",
        violations=[{"keyword": "PatientName", "tag": "(0010,0010)", "occurrences": 4, "files": 4}],
    )
    result = admit(validation(), algorithm(), ds, [policy()])
    assert reasons(result) == ["DatasetNotVerified"]
    assert "PatientName in 4 files" in result.problems[0].message


def test_missing_references_are_all_reported():
    assert reasons(admit(validation(), None, None, [policy()])) == ["AlgorithmNotFound", "DatasetNotFound"]


def test_a_verified_dataset_without_a_content_hash_is_refused():
    # Without the hash the stage step cannot tell whether the studies changed since verification.
    assert check_dataset(dataset()) == []
    for missing in (None, ""):
        problems = check_dataset(dataset(content_hash=missing))
        assert [p.reason for p in problems] == ["DatasetNotVerified"]
    assert reasons(admit(validation(), algorithm(), dataset(content_hash=None), [policy()])) == ["DatasetNotVerified"]


# Spellings of the studies' folder, of a folder around it, or of one inside it.
OVERLAPPING = [
    ("chest/studies", "chest/studies"),
    ("chest/studies", "./chest/studies"),
    ("chest/studies", "chest/studies/"),
    ("chest/studies", "chest//studies"),
    ("chest/studies", "chest/./studies/."),
    ("chest/studies", "chest/truth/../studies"),
    ("chest/studies", "/chest/studies"),
    ("chest/studies", "CHEST/Studies"),
    ("chest/studies", "chest"),
    ("chest/studies", "chest/"),
    ("chest/studies", "chest/studies/truth"),
    ("chest/studies", "chest/studies/./truth/"),
    ("chest/studies", ""),
    ("chest/studies", "."),
    ("chest/studies", "/"),
    ("chest/studies", "//"),
    ("chest/studies", "chest/.."),
    ("chest/studies", "../truth"),  # climbs out of the claim: could reach anything
    ("chest/studies", "chest/../../chest/truth"),
    ("", "chest/truth"),
    (".", "chest/truth"),
    ("chest/truth/../studies/", "chest/studies/truth"),
]
DISJOINT = [
    ("chest/studies", "chest/truth"),
    ("chest/studies", "chest/studies-truth"),
    ("chest/studies", "chest/studie"),
    ("chest/studies", "chest/studies.truth"),
    ("chest/studies", "truth/chest/studies"),
    ("chest/studies/2025", "chest/studies/2026"),
]


@pytest.mark.parametrize(("studies", "truth"), OVERLAPPING)
def test_ground_truth_overlapping_the_studies_is_refused_however_it_is_spelt(studies, truth):
    problems = check_dataset(dataset(studies=studies, truth=truth))
    assert [p.reason for p in problems] == ["GroundTruthOverlapsStudies"]
    assert "spec.groundTruth" in problems[0].message and "spec.studies" in problems[0].message
    assert reasons(admit(validation(), algorithm(), dataset(studies=studies, truth=truth), [policy()])) == [
        "GroundTruthOverlapsStudies"
    ]


@pytest.mark.parametrize(("studies", "truth"), DISJOINT)
def test_disjoint_sub_paths_of_one_claim_are_admitted(studies, truth):
    assert check_dataset(dataset(studies=studies, truth=truth)) == []


def test_the_same_sub_path_on_two_claims_does_not_overlap():
    ds = dataset(studies="chest", truth="chest")
    ds.spec.ground_truth.claim_name = "imaging-truth"
    assert check_dataset(ds) == []


def test_no_policy_or_two_policies_deny():
    none = select_policy([], "region")
    assert isinstance(none, Problem) and none.reason == "NoSandboxPolicy"
    assert "'region'" in none.message
    assert reasons(admit(validation(), algorithm(), dataset(), [])) == ["NoSandboxPolicy"]
    both = [policy("a"), policy("b", namespaces=["region"])]
    assert reasons(admit(validation(), algorithm(), dataset(), both)) == ["AmbiguousPolicy"]


def test_policy_scoped_to_other_namespaces_does_not_apply():
    scoped = policy(namespaces=["elsewhere"])
    assert reasons(admit(validation(), algorithm(), dataset(), [scoped])) == ["NoSandboxPolicy"]


# Out of range, or croniter extensions that the API server's grammar leaves out
# (objects created before that grammar must not run on croniter's looser reading).
@pytest.mark.parametrize(
    "schedule",
    ["61 * * * *", "0 25 * * *", "0 0 32 * *", "0 0 0 * *", "0 0 1 13 *", "0 0 * * 8", "*/0 * * * *",
     "0 0 L * *", "0 0 * * 1#2", "0 0 ? * *", "0 0 3 * * 1", "@reboot", "0 0 * * *\n"],
)
def test_out_of_range_schedule_blocks_with_the_field_named(schedule):
    result = admit(validation(schedule=schedule), algorithm(), dataset(), [policy()])
    assert reasons(result) == ["InvalidSchedule"]
    assert "spec.schedule" in result.problems[0].message and "minute (0-59)" in result.problems[0].message


@pytest.mark.parametrize("schedule", ["0 0 31 2 *", "0 0 30 feb *", "0 0 31 4,6 *"])
def test_a_schedule_that_never_fires_is_refused(schedule):
    problems = check_schedule(validation(schedule=schedule))
    assert [p.reason for p in problems] == ["InvalidSchedule"]
    assert "never fires" in problems[0].message


def test_valid_schedules_are_admitted():
    for schedule in (
        "0 3 * * 1",
        "*/15 * * * *",
        "@daily",
        "*/5 1-3 * * MON-FRI",
        "0 0 * * 7",
        "0 0 29 2 *",
        "@midnight",
    ):
        assert admit(validation(schedule=schedule), algorithm(), dataset(), [policy()]).admitted, schedule
