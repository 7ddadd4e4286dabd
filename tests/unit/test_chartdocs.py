"""The chart README generated from values.yaml (devtools/chartdocs.py), and its drift check."""

from __future__ import annotations

import shutil

from lightbox.devtools import chartdocs

SAMPLE = """\
# The image.
image:
  # Registry and name.
  repository: localhost/x
  digest: ""

# Pod placement.
nodeSelector: {}
tolerations:
  - key: a
    operator: Exists

list: [a, b]
# dangling comment, then a blank line

plain: 3
"""


def test_values_are_read_with_the_comment_directly_above_them():
    got = [(v.key, v.default, v.description) for v in chartdocs.values_of(SAMPLE)]
    # hand-written from SAMPLE: parents with a comment get a row without default, leaves their
    # default; list items are not keys; a comment cut off by a blank line belongs to no key
    assert got == [
        ("image", None, "The image."),
        ("image.repository", "localhost/x", "Registry and name."),
        ("image.digest", "", ""),
        ("nodeSelector", {}, "Pod placement."),
        ("tolerations", [{"key": "a", "operator": "Exists"}], ""),
        ("list", ["a", "b"], ""),
        ("plain", 3, ""),
    ]


def test_schema_description_fills_a_row_without_comment_and_pipes_are_escaped():
    chart = "description: d\nkubeVersion: '>=1.30.0-0'\nversion: 1.0.0\nappVersion: '1'\n"
    schema = '{"properties": {"image": {"properties": {"digest": {"description": "sha256 | digest"}}}}}'
    out = chartdocs.render(SAMPLE, chart, schema)
    assert '| `image.digest` | `""` | sha256 \\| digest |' in out
    assert "Requires Kubernetes >=1.30.0-0" in out


def test_readme_in_the_repository_is_what_values_yaml_makes():
    assert chartdocs.main(["--check"]) == 0


def test_check_fails_when_a_value_is_added_without_regenerating(tmp_path):
    chart = tmp_path / "lightbox"
    shutil.copytree(chartdocs.CHART, chart)
    with (chart / "values.yaml").open("a") as f:
        f.write("\n# A new knob.\nnewKnob: 1\n")
    assert chartdocs.main(["--check", "--chart", str(chart)]) == 1
    assert chartdocs.main(["--chart", str(chart)]) == 0
    assert "| `newKnob` | `1` | A new knob. |" in (chart / "README.md").read_text()
    assert chartdocs.main(["--check", "--chart", str(chart)]) == 0
