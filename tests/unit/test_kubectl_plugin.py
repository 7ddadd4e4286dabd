"""`kubectl lightbox`'s pure parts: kubectl's namespace defaulting, rows, table, formats, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lightbox.kubectl_plugin import STATUS_COLUMNS, context_namespace, main, render, status_rows, table
from lightbox.report import output_choice

CONTEXTS = [{"name": "a", "context": {"namespace": "radiology"}}, {"name": "b", "context": {}}]


def test_the_namespace_is_the_contexts_as_kubectl_picks_it() -> None:
    assert context_namespace(CONTEXTS, CONTEXTS[0], None) == "radiology"
    assert context_namespace(CONTEXTS, CONTEXTS[0], "b") == "default"  # --context b: no namespace there
    assert context_namespace([], None, None) == "default"
    with pytest.raises(ValueError, match="--context: no context named 'c'"):
        context_namespace(CONTEXTS, CONTEXTS[0], "c")


def test_status_rows_take_the_latest_run_and_sort_by_namespace_then_name() -> None:
    v = [
        {"metadata": {"namespace": "b", "name": "x"}, "spec": {}, "status": None},
        {
            "metadata": {"namespace": "a", "name": "y"},
            "spec": {"schedule": "@daily"},
            "status": {
                "verdict": "Failed",
                "runs": [{"name": "y-r1", "phase": "Failed"}, {"name": "y-r2", "phase": "Running"}],
            },
        },
    ]
    rows = status_rows(v)
    assert [(r["namespace"], r["name"], r["latestRun"], r["latestRunPhase"]) for r in rows] == [
        ("a", "y", "y-r2", "Running"),
        ("b", "x", None, None),
    ]
    assert json.loads(render(rows, STATUS_COLUMNS, "json"))["items"] == rows
    assert yaml.safe_load(render(rows, STATUS_COLUMNS, "yaml"))["items"] == rows


def test_the_table_pads_like_kubectl_and_strips_control_sequences() -> None:
    text = table(
        [{"name": "ok", "phase": "\x1b[31mRed"}, {"name": "longer-name"}], (("NAME", "name"), ("PHASE", "phase"))
    )
    lines = text.splitlines()
    assert lines[0] == "NAME          PHASE"  # 11 wide + 3 spaces
    assert lines[2] == "longer-name   <none>"
    assert "\x1b" not in text


def test_logs_of_the_vendor_step_are_refused_with_the_reason(capsys) -> None:
    assert main(["logs", "r1", "-n", "x", "--step", "vendor"]) == 2
    err = capsys.readouterr().err
    assert "--step vendor refused" in err and "covert-channel" in err
    assert main(["logs", "r1", "-n", "x", "--step", "anything"]) == 2
    assert "allowed: stage, score" in capsys.readouterr().err


def test_report_output_conventions_and_the_old_o_file() -> None:
    assert output_choice(None, None, None) == ("markdown", None, None)
    assert output_choice("html", None, Path("r.html")) == ("html", Path("r.html"), None)
    assert output_choice(None, Path("r.html"), None) == ("html", Path("r.html"), None)
    fmt, path, note = output_choice("report.md", None, None)  # as before: -o FILE
    assert (fmt, path) == ("markdown", Path("report.md")) and note and "deprecated" in note
    assert output_choice("old.html", None, None)[:2] == ("html", Path("old.html"))
