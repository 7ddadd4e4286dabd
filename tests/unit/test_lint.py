"""`make lint` (the first step of `make test`) fails on a new error of each kind it is there to catch.

Each test runs the real Makefile target with the real pyproject.toml on a small project in a
temporary folder laid out like this checkout (package-dir maps operator/ to lightbox.operator),
once clean and once with one injected error, and checks the exit status and the rule named.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightbox.devtools.typecheck import module_sources, package_dirs

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(
    shutil.which("make") is None or not (BIN / "ruff").exists(), reason="needs make and the test extra's ruff"
)

CLEAN = {
    "lightbox/__init__.py": "",
    "lightbox/api/__init__.py": "",
    "operator/__init__.py": "",
    "operator/typed.py": "def double(value: int) -> int:\n    return value * 2\n",
    "sandbox/__init__.py": "",
    "devtools/__init__.py": "",
    # Outside lightbox.api and lightbox.operator mypy is not strict: an unannotated function passes.
    "devtools/loose.py": "def double(value):\n    return value * 2\n",
}


def _branchy(branches: int) -> str:
    """A function with ``branches`` ifs: McCabe complexity is one more than its decision points."""
    body = "".join(f"    if value == {i}:\n        return {i}\n" for i in range(branches))
    return f"def pick(value: int) -> int:\n{body}    return -1\n"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("lintproject")
    shutil.copy(REPO / "Makefile", root / "Makefile")
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    # The checkout's own exemptions name its files; the small project must meet the rules themselves.
    start = text.index("[tool.ruff.lint.per-file-ignores]")
    end = text.index("\n[", start + 1)
    (root / "pyproject.toml").write_text(text[:start] + text[end + 1 :], encoding="utf-8")
    for name, body in CLEAN.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body, encoding="utf-8")
    # Newer than pyproject.toml, so make does not reinstall the environment.
    stamp = root / ".installed"
    stamp.touch()
    later = (root / "pyproject.toml").stat().st_mtime + 10
    os.utime(stamp, (later, later))
    yield root


def make_lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(root), "lint", f"BIN={BIN}", f"STAMP={root / '.installed'}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_clean_project_passes(project: Path) -> None:
    result = make_lint(project)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        # ruff
        ("devtools/unused.py", "import os\n", "F401"),
        ("sandbox/wide.py", "X = " + "1 + " * 29 + "1\n", "E501"),  # 4 + 4*29 + 1 = 121 characters
        ("sandbox/quiet.py", "def pairs(a: list[int], b: list[int]) -> list[tuple[int, int]]:\n"
         "    return list(zip(a, b))\n", "B905"),
        ("operator/branchy.py", _branchy(20), "C901 `pick` is too complex (21 > 20)"),
        # mypy, strict on the operator
        ("operator/untyped.py", "def double(value):\n    return value * 2\n", "[no-untyped-def]"),
        ("lightbox/api/generic.py", "def keys(d: dict) -> list[str]:\n    return list(d)\n", "[type-arg]"),
        # mypy everywhere
        ("sandbox/wrong.py", 'count: int = "one"\n', "[assignment]"),
        ("devtools/calls.py", "from lightbox.operator.typed import double\n\nhalf: str = double(2)\n",
         "devtools/calls.py:3: error"),
    ],
    ids=["unused-import", "line-121", "zip-strict", "complexity-21", "strict-untyped", "strict-generic",
         "wrong-type", "cross-package"],
)
def test_a_new_error_fails_make_lint(project: Path, name: str, body: str, expected: str) -> None:
    path = project / name
    path.write_text(body, encoding="utf-8")
    try:
        result = make_lint(project)
    finally:
        path.unlink()
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert expected in output, output
    assert name in output, output


def test_an_injected_error_one_below_the_complexity_limit_passes(project: Path) -> None:
    path = project / "operator" / "branchy.py"
    path.write_text(_branchy(19), encoding="utf-8")
    try:
        result = make_lint(project)
    finally:
        path.unlink()
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_file_gets_the_module_name_it_is_installed_as(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { "lightbox" = "lightbox", "lightbox.operator" = "operator" }\n',
        encoding="utf-8",
    )
    for name in ["lightbox/__init__.py", "lightbox/cli.py", "operator/__init__.py", "operator/kinds/__init__.py",
                 "operator/kinds/job.py"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    found = {module: str(path.relative_to(tmp_path)) for module, path in module_sources(package_dirs(
        tmp_path / "pyproject.toml"))}
    assert found == {
        "lightbox": "lightbox/__init__.py",
        "lightbox.cli": "lightbox/cli.py",
        "lightbox.operator": "operator/__init__.py",
        "lightbox.operator.kinds": "operator/kinds/__init__.py",
        "lightbox.operator.kinds.job": "operator/kinds/job.py",
    }
