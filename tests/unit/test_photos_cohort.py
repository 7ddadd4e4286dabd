"""The cohort sheet: strict, closed lists; errors name the line, the column and what is
allowed, never the offending value."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightbox.sandbox.cohortsheet import CohortSheetError, load_sheet, parse_sheet

SECRET = "Jane Planted Doe"  # typed into the wrong column: must never be echoed


def test_a_valid_sheet_reads_every_column() -> None:
    sheet = parse_sheet(
        "\ufeffcase,patient,modality,bodySite,skinType,sex,ageBand,laterality,manufacturer\n"
        "c1,LBAAAAAAAAAAAAAAAA,OP,eye,,F,60-79,R,Topcon\n"
        "c2,,,lower extremity,VI,,,,\n"
    )
    c1, c2 = sheet.get("c1"), sheet.get("c2")
    assert (c1.modality, c1.body_site, c1.skin_type, c1.sex, c1.age_band, c1.laterality, c1.manufacturer) == (
        "OP", "eye", "unknown", "F", "60-79", "R", "Topcon"
    )
    assert c2.cohort() == {
        "sex": "unknown", "ageBand": "unknown", "manufacturer": "unknown", "modality": "XC",
        "bodySite": "lower extremity", "skinType": "VI",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"case,skinType\nc1,{SECRET}\n", "line 2, column skinType: not an allowed value; allowed: I, II, III, IV,"),
        ("case,skinType\nc1,7\n", "line 2, column skinType: not an allowed value; allowed: I, II, III, IV, V, VI"),
        ("case,skinType\nc1,iv\n", "column skinType"),  # Roman numerals, upper case: one spelling
        (f"case,bodySite\nc1,{SECRET}\n", "line 2, column bodySite: not an allowed value; allowed: head/neck, upper"),
        ("case,modality\nc1,CT\n", "column modality: not an allowed value; allowed: XC, OP or empty"),
        ("case,sex\nc1,female\n", "column sex: not an allowed value; allowed: M, F, O or empty"),
        ("case,ageBand\nc1,45\n", "column ageBand: not an allowed value; allowed: 0-17, 18-39, 40-59, 60-79, 80+"),
        ("case,laterality\nc1,left\n", "column laterality: not an allowed value; allowed: L, R"),
        (f"case,manufacturer\nc1,{SECRET}; DROP\n", "line 2, column manufacturer: at most 64 letters"),
        (f"case,patient\nc1,{SECRET}\n", "line 2, column patient: at most 64 letters, digits"),
        ("case,skintype\nc1,V\n", "line 1: column 2 is not a known column; allowed columns: case, patient, modality"),
        (f"case,{SECRET}\nc1,V\n", "line 1: column 2 is not a known column"),
        ("bodySite\nhead/neck\n", "line 1: the column case is required"),
        ("case,case\nc1,c1\n", "line 1: a column is named twice"),
        ("case,skinType\nc1,V\nc1,IV\n", "line 3, column case: the case is listed twice"),
        ("case,skinType\nc1,V,extra\n", "line 2: 3 cells, the header has 2"),
        (f"case\n{SECRET}\n", "line 2, column case: a case folder name"),
        ("case\n../escape\n", "line 2, column case: a case folder name"),
        ("", "empty; the first line must name the columns"),
        ('case,skinType\nc1,"V\n', "not valid CSV"),
    ],
)
def test_sheet_errors_name_the_field_and_what_is_allowed(text: str, expected: str) -> None:
    with pytest.raises(CohortSheetError) as refused:
        parse_sheet(text)
    assert expected in str(refused.value)
    assert SECRET not in str(refused.value)


def test_every_case_folder_needs_a_row_and_every_row_a_folder(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    (tmp_path / "cohort.csv").write_text("case,skinType\na,I\n")
    with pytest.raises(CohortSheetError, match="1 case folder\\(s\\) have no row"):
        load_sheet(tmp_path, ["a", "b"])
    (tmp_path / "cohort.csv").write_text("case,skinType\na,I\nb,II\nc,III\n")
    with pytest.raises(CohortSheetError, match="1 row\\(s\\) name no case folder"):
        load_sheet(tmp_path, ["a", "b"])


def test_no_sheet_means_every_attribute_unknown(tmp_path: Path) -> None:
    assert load_sheet(tmp_path, ["a"]).get("a").cohort()["skinType"] == "unknown"


def test_a_sheet_that_is_a_link_or_not_utf8_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.csv").write_text("case\n")
    (tmp_path / "cohort.csv").symlink_to(tmp_path / "elsewhere.csv")
    with pytest.raises(CohortSheetError, match="must be a regular file"):
        load_sheet(tmp_path)
    (tmp_path / "cohort.csv").unlink()
    (tmp_path / "cohort.csv").write_bytes(b"case,skinType\nc1,\xff\xfe\n")
    with pytest.raises(CohortSheetError, match="not UTF-8"):
        load_sheet(tmp_path)
