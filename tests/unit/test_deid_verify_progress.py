"""``lightbox deid verify`` over a tree shows progress on a terminal's stderr, and nothing elsewhere."""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

FILES = 40
LIGHTBOX = Path(sys.executable).parent / "lightbox"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    for i in range(FILES):
        (root / f"s{i % 4}").mkdir(exist_ok=True)
        shutil.copy(get_testdata_file("CT_small.dcm"), root / f"s{i % 4}" / f"{i}.dcm")
    return root


def _run_with_tty_stderr(*args: str) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (as a user at a shell has it); stdout piped."""
    master, slave = pty.openpty()
    # A terminal 24 rows by 100 columns: a new pty has 0 columns, in which tqdm draws nothing.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([str(LIGHTBOX), *args], stdout=subprocess.PIPE, stderr=slave, text=True,
                            env={**os.environ, "PYTHONSAFEPATH": "1"})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out = proc.stdout.read() if proc.stdout else ""
    os.close(master)
    return proc.wait(), out, b"".join(chunks).decode(errors="replace")


def test_progress_on_a_terminal_counts_every_file(tree: Path) -> None:
    code, out, err = _run_with_tty_stderr("deid", "verify", str(tree), "--jobs", "1")
    assert code == 1  # the test files carry a PatientName: violations, and the exit code says so
    assert f"VIOLATIONS FOUND: {FILES} file(s)" in out
    assert "deid verify" in err and f"{FILES}/{FILES}" in err and "file/s" in err
    assert "deid verify" not in out  # the report on stdout stays clean for pipes


def test_quiet_on_a_terminal_shows_none(tree: Path) -> None:
    code, out, err = _run_with_tty_stderr("deid", "verify", str(tree), "--jobs", "1", "--quiet")
    assert code == 1 and f"{FILES} file(s)" in out
    assert "file/s" not in err and f"{FILES}/{FILES}" not in err


def test_no_terminal_no_progress(tree: Path) -> None:
    proc = subprocess.run([str(LIGHTBOX), "deid", "verify", str(tree), "--jobs", "1"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONSAFEPATH": "1"})
    assert proc.returncode == 1 and f"{FILES} file(s)" in proc.stdout
    assert proc.stderr == ""
