"""A photo or slide Dataset given to a MAP or grand-challenge Algorithm is refused before any pod,
with a reason naming the Algorithm's packaging, the Dataset's format and what is allowed (the
stage step would otherwise fail with only StageFailed)."""

from __future__ import annotations

import pytest
from factories import algorithm, dataset, policy, validation

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
