"""``lightbox deid --format photo`` and ``lightbox deid verify --format photo``: exit codes and
what they print (names and counts, never values)."""

from __future__ import annotations

from pathlib import Path

import photo_samples as ps
import pytest

from lightbox.sandbox.deid.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "Jane_Doe").mkdir(parents=True)
    (src / "Jane_Doe" / "arm.jpg").write_bytes(ps.planted_jpeg(seed=1))
    (src / "cohort.csv").write_text("case,skinType,bodySite\nJane_Doe,III,upper extremity\n")
    (tmp_path / "key").write_bytes(b"cli-photo-test-key-0123456789abcdef")
    return src


def test_deid_then_verify(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--format", "photo", str(tree)]) == EXIT_REFUSED
    out = capsys.readouterr().out
    assert "EXIF 0x8825 GPSInfo: 1 occurrence(s) in 1 file(s)" in out
    assert ps.SERIAL.decode() not in out and "Jane" not in out
    dst = tmp_path / "dst"
    assert main(["--format", "photo", str(tree), str(dst), "--key-file", str(tmp_path / "key")]) == EXIT_OK
    assert "1 photo(s): 1 written, 0 refused" in capsys.readouterr().err
    assert main(["verify", "--format", "photo", str(dst)]) == EXIT_OK
    assert capsys.readouterr().out.startswith("OK: 2 file(s)")


def test_a_bad_sheet_is_a_usage_error_naming_the_column(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tree / "cohort.csv").write_text("case,skinType\nJane_Doe,7\n")
    code = main(["--format", "photo", str(tree), str(tmp_path / "dst"), "--key-file", str(tmp_path / "key")])
    assert code == EXIT_USAGE
    assert "cohort.csv line 2, column skinType: not an allowed value" in capsys.readouterr().err
    assert not (tmp_path / "dst").exists()  # refused before any photo was written


def test_a_refused_photo_makes_exit_status_1(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tree / "Jane_Doe" / "cut.png").write_bytes(ps.planted_png(seed=2)[:500])
    code = main(["--format", "photo", str(tree), str(tmp_path / "dst"), "--key-file", str(tmp_path / "key")])
    assert code == EXIT_REFUSED
    assert "refused Jane_Doe/cut.png: PNG" in capsys.readouterr().err
