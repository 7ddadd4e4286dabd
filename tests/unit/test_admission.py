import pytest

from lightbox.operator.admission import admit, check_algorithm, image_repository, registry_allowed, select_policy

from factories import DIGEST, algorithm, dataset, policy, validation


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


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"resources": {"gpus": 3}}, "TooManyGPUs"),
        ({"timeoutSeconds": 100000}, "TimeoutTooLong"),
        ({"resources": {"memory": "100Gi"}}, "ResourcesTooLarge"),
        ({"resources": {"cpu": "9"}}, "ResourcesTooLarge"),
    ],
)
def test_limits_of_the_policy(spec, reason):
    assert reasons(admit(validation(), algorithm(**spec), dataset(), [policy()])) == [reason]


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


def test_no_policy_or_two_policies_deny():
    assert isinstance(select_policy([], "region"), object)
    assert reasons(admit(validation(), algorithm(), dataset(), [])) == ["NoSandboxPolicy"]
    both = [policy("a"), policy("b", namespaces=["region"])]
    assert reasons(admit(validation(), algorithm(), dataset(), both)) == ["AmbiguousPolicy"]


def test_policy_scoped_to_other_namespaces_does_not_apply():
    scoped = policy(namespaces=["elsewhere"])
    assert reasons(admit(validation(), algorithm(), dataset(), [scoped])) == ["NoSandboxPolicy"]


@pytest.mark.parametrize("schedule", ["61 * * * *", "0 25 * * *", "0 0 32 * *"])
def test_out_of_range_schedule_blocks_with_the_field_named(schedule):
    result = admit(validation(schedule=schedule), algorithm(), dataset(), [policy()])
    assert reasons(result) == ["InvalidSchedule"]
    assert "spec.schedule" in result.problems[0].message and "minute (0-59)" in result.problems[0].message


def test_valid_schedules_are_admitted():
    for schedule in ("0 3 * * 1", "*/15 * * * *", "@daily"):
        assert admit(validation(schedule=schedule), algorithm(), dataset(), [policy()]).admitted
