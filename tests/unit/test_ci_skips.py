"""tests/unit/conftest.py: in CI a skip in the unit tier fails and says why; locally it stays a skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")
TESTS = '''
import pytest

def test_runtime_skip():
    pytest.skip("user namespaces are not available: EPERM")

@pytest.mark.skipif(True, reason="needs the verifier")
def test_marked_skip():
    pass

@pytest.mark.xfail(reason="known bug", strict=True)
def test_expected_failure():
    assert False

def test_passes():
    pass
'''
MODULE_SKIP = 'import pytest\npytest.skip("no GPU here", allow_module_level=True)\n'


def _run(tmp_path: Path, ci: str | None, tests: str = TESTS) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "test_some.py").write_text(tests)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("ci", ["true", "1", "TRUE"])
def test_skips_fail_in_ci_naming_the_reason(tmp_path: Path, ci: str) -> None:
    r = _run(tmp_path, ci)
    out = r.stdout
    assert r.returncode == 1, out
    # both skips fail (a skip marker acts in setup, which pytest counts as an error);
    # xfail and the passing test are untouched
    assert "1 failed, 1 passed, 1 xfailed, 1 error" in out, out
    assert (
        "skipped in CI (call), which the unit tier treats as a failure: user namespaces are not available: EPERM" in out
    )
    assert "skipped in CI (setup), which the unit tier treats as a failure: needs the verifier" in out


def test_a_module_level_skip_is_a_collection_error_in_ci(tmp_path: Path) -> None:
    r = _run(tmp_path, "true", MODULE_SKIP)
    assert r.returncode == 2, r.stdout  # pytest's "interrupted": collection errors stop the run
    assert "skipped in CI (collection), which the unit tier treats as a failure: no GPU here" in r.stdout
    assert _run(tmp_path, None, MODULE_SKIP).returncode == 5  # locally: nothing ran, nothing failed


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_skips_stay_skips_outside_ci(tmp_path: Path, ci: str | None) -> None:
    r = _run(tmp_path, ci)
    assert r.returncode == 0, r.stdout
    assert "1 passed, 2 skipped, 1 xfailed" in r.stdout, r.stdout
