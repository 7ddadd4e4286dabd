"""A photo Dataset (spec.format photo) reaches its gate and its stage path: the verify Job runs
the photo gate, the run pod's stage step is told the format, and the verify step's summary
carries the photo cohort (skinType, bodySite)."""

from __future__ import annotations

import json
from pathlib import Path

import photo_samples as ps
import pytest
from factories import algorithm, dataset, policy, validation

from lightbox.api import run as layout
from lightbox.api.dataset import Dataset
from lightbox.api.run import StagerConfig
from lightbox.operator import builders, verifystep
from lightbox.operator.config import OperatorConfig
from lightbox.sandbox.deid.photos_tree import deidentify_photo_tree

CONFIG = OperatorConfig(trusted_image="ghcr.io/lightbox-health/lightbox@sha256:" + "1" * 64)


def photo_dataset() -> Dataset:
    data = dataset()
    data.spec.format = "photo"
    data.metadata["uid"] = "ds-uid"
    return data


def _env(container: dict, name: str) -> str:  # type: ignore[type-arg]
    return next(e["value"] for e in container["env"] if e["name"] == name)


def test_the_verify_job_of_a_photo_dataset_runs_the_photo_gate() -> None:
    job = builders.verify_job(photo_dataset(), "chest-2025-verify-g1", CONFIG)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][-2:] == ["--format", "photo"]
    plain = dataset()
    plain.metadata["uid"] = "ds-uid"
    (dicom,) = builders.verify_job(plain, "chest-2025-verify-g1", CONFIG)["spec"]["template"]["spec"]["containers"]
    assert "--format" not in dicom["command"]


def test_the_stage_step_is_told_the_format() -> None:
    val, algo = validation(), algorithm()
    for obj in (val, algo):
        obj.metadata["uid"] = "uid-1"
    pod = builders.run_pod_spec(val, algo, photo_dataset(), policy(), CONFIG)
    stage = next(c for c in pod["initContainers"] if c["name"] == layout.STAGE_CONTAINER)
    config = StagerConfig.model_validate_json(_env(stage, layout.STAGER_CONFIG_ENV))
    assert config.format == "photo"


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    rows = ["case,skinType,bodySite"]
    for i, (skin, site) in enumerate((("I", "head/neck"), ("VI", "head/neck"), ("VI", "palms/soles"))):
        (raw / f"case{i}").mkdir(parents=True)
        (raw / f"case{i}" / "p.jpg").write_bytes(ps.planted_jpeg(seed=i))
        rows.append(f"case{i},{skin},{site}")
    (raw / "cohort.csv").write_text("\n".join(rows) + "\n")
    return raw


def test_the_verify_step_reports_the_photo_cohort(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dst = tmp_path / "deid"
    deidentify_photo_tree(photos, dst, key=b"operator-photo-key-0123456789abc", jobs=1)
    log = tmp_path / "termination"
    monkeypatch.setenv(layout.TERMINATION_LOG_ENV, str(log))
    assert verifystep.main([str(dst), "--format", "photo"]) == 0
    summary = json.loads(log.read_text())
    assert (summary["verified"], summary["caseCount"], summary["fileCount"]) == (True, 3, 4)
    assert summary["cohort"]["skinType"] == {"I": 1, "VI": 2}
    assert summary["cohort"]["bodySite"] == {"head/neck": 2, "palms/soles": 1}


def test_the_verify_step_rejects_raw_photos_by_name_and_count(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "termination"
    monkeypatch.setenv(layout.TERMINATION_LOG_ENV, str(log))
    assert verifystep.main([str(photos), "--format", "photo"]) == layout.EXIT_PHI_FOUND
    summary = json.loads(log.read_text())
    assert {"keyword": "GPSInfo", "tag": "EXIF 0x8825", "occurrences": 3, "files": 3} in summary["violations"]
    assert ps.SERIAL.decode() not in log.read_text()
