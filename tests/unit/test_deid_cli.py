"""``lightbox deid`` and ``lightbox deid verify`` as a user runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from lightbox.cli import main as lightbox
from lightbox.sandbox.deid.cli import main


@pytest.fixture()
def layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "ct.dcm")
    shutil.copy(get_testdata_file("MR_small_implicit.dcm"), src / "mr.dcm")
    key = tmp_path / "key"
    key.write_text("a-secret-key-from-a-kubernetes-secret\n")
    return src, tmp_path / "out", key


def test_deid_then_verify(layout: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    src, out, key = layout
    assert main([str(src), str(out), "--key-file", str(key), "--jobs", "1"]) == 0
    assert "2 written" in capsys.readouterr().err
    assert main(["verify", str(out)]) == 0
    assert "OK: 2 file(s)" in capsys.readouterr().out
    assert main(["verify", str(src)]) == 1
    printed = capsys.readouterr().out
    assert "(0010,0010) PatientName" in printed and "VIOLATIONS FOUND" in printed
    assert "CompressedSamples" not in printed  # the value of MR_small's PatientName never appears


def test_dispatcher_routes_deid(layout: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    src, out, key = layout
    assert (
        lightbox(
            [
                "deid",
                str(src),
                str(out),
                "--key-file",
                str(key),
                "-j",
                "1",
                "-o",
                "retainUIDs,retainPatientCharacteristics",
            ]
        )
        == 0
    )
    assert (
        lightbox(["deid", "verify", str(out), "--json", "--option", "retainUIDs", "-o", "retainPatientCharacteristics"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["files"] == 2
    assert report["options"] == ["retainPatientCharacteristics", "retainUIDs"]


def test_refusals_make_the_exit_status_non_zero(
    layout: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src, out, key = layout
    (src / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    shutil.copy(get_testdata_file("SC_rgb_small_odd.dcm"), src / "screen.dcm")
    assert main([str(src), str(out), "--key-file", str(key), "-j", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "broken.dcm" in err and "secondary capture" in err
    assert "2 written, 1 quarantined, 1 error(s)" in err
    quarantine = out.with_name("out-quarantine")
    assert len(list(quarantine.rglob("*.reason.txt"))) == 1


def test_usage_errors(
    layout: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, out, key = layout
    monkeypatch.delenv("LIGHTBOX_DEID_KEY_FILE", raising=False)
    assert main([str(src), str(out)]) == 2
    assert "secret key is required" in capsys.readouterr().err
    assert main([str(src), str(out), "--key-file", str(key), "-o", "retainEverything"]) == 2
    assert "unknown de-identification option" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere"), str(out), "--key-file", str(key)]) == 2
    assert main(["verify", str(tmp_path / "nowhere")]) == 2
    monkeypatch.setenv("LIGHTBOX_DEID_KEY_FILE", str(key))
    assert main([str(src), str(out), "-j", "1"]) == 0
