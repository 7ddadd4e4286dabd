"""A photo or slide Dataset given to a MAP or grand-challenge Algorithm is refused before any pod,
with a reason naming the Algorithm's packaging, the Dataset's format and what is allowed (the
stage step would otherwise fail with only StageFailed)."""

from __future__ import annotations

import pytest
from factories import algorithm, dataset, policy, validation
from test_reconcile import clock  # noqa: F401  (the fixture)

from lightbox.operator.admission import admit


def _with_format(fmt: str):
    ds = dataset()
    ds.spec.format = fmt  # type: ignore[assignment]
    return ds


@pytest.mark.parametrize("packaging", ["monai-map", "grand-challenge"])
@pytest.mark.parametrize("fmt", ["photo", "slide-tiff"])
def test_per_case_packagings_refuse_photo_and_slide_datasets_naming_both(packaging: str, fmt: str) -> None:
    result = admit(validation(), algorithm(packaging=packaging), _with_format(fmt), [policy()])
    assert [p.reason for p in result.problems] == ["PackagingDoesNotTakeFormat"]
    assert result.problems[0].message == (
        f"Algorithm spec.packaging '{packaging}' takes Dataset spec.format 'dicom' only (its input is laid out "
        f"from DICOM series); a Dataset of spec.format '{fmt}' needs spec.packaging 'lightbox'"
    )


@pytest.mark.parametrize(
    "packaging, fmt",
    [("lightbox", "photo"), ("lightbox", "slide-tiff"), ("lightbox", "dicom"), ("monai-map", "dicom"),
     ("grand-challenge", "dicom")],
)
def test_the_combinations_the_stage_step_lays_out_are_admitted(packaging: str, fmt: str) -> None:
    result = admit(validation(), algorithm(packaging=packaging), _with_format(fmt), [policy()])
    assert result.admitted, result.problems


@pytest.mark.usefixtures("clock")
def test_the_validation_is_blocked_with_the_reason_and_no_pod_starts() -> None:
    """Through the operator's pass (the in-memory API server of test_reconcile): the Admitted
    condition carries the reason and message; no Job is made, so no StageFailed run."""
    from test_reconcile import NS, make_runtime, run, setup_cluster, status

    from lightbox.operator import validations

    kube = setup_cluster()
    kube.objects[("algorithms", NS, "chest")]["spec"]["packaging"] = "grand-challenge"
    kube.objects[("datasets", NS, "data")]["spec"]["format"] = "slide-tiff"
    run(validations.reconcile_validation(make_runtime(kube), NS, "val"))
    st = status(kube)
    admitted = {c["type"]: c for c in st["conditions"]}["Admitted"]
    assert (st["phase"], admitted["reason"]) == ("Blocked", "PackagingDoesNotTakeFormat")
    assert "spec.packaging 'grand-challenge'" in admitted["message"]
    assert "spec.format 'slide-tiff' needs spec.packaging 'lightbox'" in admitted["message"]
    assert not [k for k in kube.objects if k[0] in ("jobs", "pods")]
