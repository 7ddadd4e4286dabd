"""The README's first command: `lightbox demo` runs a validation end to end on its own control plane."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_prints_a_verdict_and_leaves_the_control_plane_running(tmp_path):
    state = tmp_path / "demo"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "lightbox", "demo", "--dir", str(state), "--cases", "40"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        out = result.stdout
        # The report: a verdict, the device, the data's hash, and the run in the audit trail.
        assert any(f"Verdict: **{v}**" in out for v in ("Passed", "Inconclusive", "Failed")), out[-3000:]
        assert "| Vendor | Lightbox |" in out and "| Content hash | `" in out
        assert "| 1 | " in out.split("## History (audit trail)")[1]
        # The sample has patients with several studies: the AUC interval is the clustered one.
        assert "| auc | " in out and "obuchowski" in out and "wilson" in out
        assert f"export KUBECONFIG={state / 'control-plane' / 'kubeconfig'}" in out
        status = subprocess.run(
            [sys.executable, "-m", "lightbox", "control-plane", "status", "--dir", str(state / "control-plane")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        subprocess.run(
            [sys.executable, "-m", "lightbox", "control-plane", "down", "--dir", str(state / "control-plane")],
            capture_output=True,
            timeout=120,
        )
