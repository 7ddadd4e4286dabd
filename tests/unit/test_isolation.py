"""run_isolated: no network, read-only and hidden paths that the command cannot undo,
timeouts that kill the whole namespace, capped output, and refusal when isolation is
impossible."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from lightbox.sandbox import isolation
from lightbox.sandbox.isolation import IsolationUnavailable, run_isolated

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}


def _sh(script: str, **kw: object) -> isolation.IsolationResult:
    return run_isolated(["sh", "-c", script], env=ENV, timeout=kw.pop("timeout", 20), **kw)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _needs_namespaces(tmp_path: Path) -> None:
    try:
        run_isolated(["true"], env=ENV, timeout=20)
    except IsolationUnavailable as exc:
        pytest.skip(f"namespaces unavailable here: {exc.reason}")


def test_runs_with_exactly_the_given_environment_and_cwd(tmp_path: Path) -> None:
    r = run_isolated(["sh", "-c", "env | sort; pwd"], env={**ENV, "LIGHTBOX_X": "1"}, timeout=20, cwd=tmp_path)
    assert r.returncode == 0 and not r.timed_out
    lines = r.stdout.decode().splitlines()
    assert "LIGHTBOX_X=1" in lines and lines[-1] == str(tmp_path)
    assert not any(line.startswith("HOME=") for line in lines)


def test_exit_code_and_stderr(tmp_path: Path) -> None:
    r = _sh("echo oops >&2; exit 7")
    assert r.returncode == 7 and r.stderr == b"oops\n"


def test_read_only_input_cannot_be_written_or_remounted(tmp_path: Path) -> None:
    ro = tmp_path / "input"
    ro.mkdir()
    (ro / "a.txt").write_text("data")
    out = tmp_path / "output"
    out.mkdir()
    r = _sh(
        f"cat {ro}/a.txt; echo x > {ro}/b.txt; echo rc1=$?; rm {ro}/a.txt; echo rc2=$?; "
        f"mount -o remount,rw {ro}; echo rc3=$?; umount -l {ro}; echo rc4=$?; echo x > {ro}/c.txt; echo rc5=$?; "
        f"echo ok > {out}/o.txt",
        read_only=[ro],
    )
    text = r.stdout.decode()
    assert text.startswith("data")
    for key in ("rc1", "rc2", "rc3", "rc4", "rc5"):
        assert f"{key}=0" not in text, text
    assert sorted(p.name for p in ro.iterdir()) == ["a.txt"]
    assert (out / "o.txt").read_text() == "ok\n"


def test_hidden_paths_are_empty_and_stay_hidden(tmp_path: Path) -> None:
    truth = tmp_path / "truth"
    truth.mkdir()
    (truth / "labels.json").write_text("SECRET-LABELS")
    single = tmp_path / "key.txt"
    single.write_text("SECRET-KEY")
    r = _sh(f"ls -A {truth}; cat {truth}/labels.json {single}; umount {truth}; cat {truth}/labels.json; "
            f"cat /proc/1/root{truth}/labels.json; echo done", hidden=[truth, single])
    assert b"SECRET" not in r.stdout + r.stderr
    assert r.stdout.decode().strip().endswith("done")
    assert (truth / "labels.json").read_text() == "SECRET-LABELS"


def test_no_network_and_attempts_are_counted() -> None:
    code = (
        "import socket\n"
        "for target in [('93.184.216.34', 443), ('127.0.0.1', 22)]:\n"
        "    try: socket.create_connection(target, timeout=2)\n"
        "    except OSError as e: print(e.errno)\n"
        "try: socket.getaddrinfo('example.com', 80)\n"
        "except OSError as e: print('dns', e.errno)\n"
        "print(sorted(n for _, n in socket.if_nameindex()))\n"
    )
    r = run_isolated([sys.executable, "-c", code], env=ENV, timeout=30)
    lines = r.stdout.decode().splitlines()
    assert lines[0] == lines[1] == "101"  # ENETUNREACH, even to loopback
    assert lines[2].startswith("dns")
    assert lines[3] == "['lo']"
    assert r.network_attempts >= 3


def test_quiet_command_has_no_network_attempts() -> None:
    assert _sh("echo hi").network_attempts == 0


def test_timeout_kills_the_whole_process_tree(tmp_path: Path) -> None:
    marker = tmp_path / "survivor"
    started = time.monotonic()
    r = _sh(f"(sleep 3; touch {marker}) & setsid sh -c 'sleep 3; touch {marker}' & sleep 100", timeout=1)
    assert r.timed_out and r.returncode is None
    assert time.monotonic() - started < 10
    time.sleep(3.5)
    assert not marker.exists()


def test_background_children_die_with_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "late"
    r = _sh(f"(sleep 2; touch {marker}) & echo started")
    assert r.returncode == 0 and r.seconds < 2
    time.sleep(2.5)
    assert not marker.exists()


def test_output_is_capped_but_drained() -> None:
    r = run_isolated(["sh", "-c", "head -c 5000000 /dev/zero; echo end >&2"], env=ENV, timeout=30, max_output_bytes=1000)
    assert r.returncode == 0 and len(r.stdout) == 1000 and r.output_truncated
    assert r.stderr == b"end\n"


def test_file_size_limit(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    r = _sh(f"head -c 3000000 /dev/zero > {out}/big", max_file_bytes=1 << 20)
    assert r.returncode != 0
    assert (out / "big").stat().st_size == 1 << 20


# Allocates MiB in 16 MiB steps, each written so it is resident, then waits.
HOG = "import sys, time; keep = [b'x' * (16 << 20) for _ in range(int(sys.argv[1]) // 16)]; time.sleep(30)"
MiB = 1 << 20


def test_memory_over_the_limit_kills_the_whole_tree_even_from_a_setsid_child(tmp_path: Path) -> None:
    marker = tmp_path / "survivor"
    started = time.monotonic()
    # The allocation happens in a grandchild that left the session: the tree still counts it.
    r = _sh(f"setsid {sys.executable} -c \"{HOG}\" 400 & (sleep 5; touch {marker}) & wait", max_memory_bytes=128 * MiB)
    assert r.memory_exceeded and not r.timed_out and r.returncode is None
    assert r.peak_memory_bytes > 128 * MiB
    assert time.monotonic() - started < 15
    time.sleep(5.5)
    assert not marker.exists()


def test_memory_under_the_limit_runs_to_the_end() -> None:
    r = run_isolated([sys.executable, "-c", HOG.replace("time.sleep(30)", "time.sleep(1)"), "64"], env=ENV, timeout=20, max_memory_bytes=512 * MiB)
    assert r.returncode == 0 and not r.memory_exceeded
    assert 64 * MiB < r.peak_memory_bytes < 512 * MiB


def test_tree_rss_counts_children(tmp_path: Path) -> None:
    import subprocess

    ready = tmp_path / "ready"
    script = f"import pathlib, time; keep = b'x' * (96 << 20); pathlib.Path({str(ready)!r}).touch(); time.sleep(30)"
    parent = subprocess.Popen(["sh", "-c", f"{sys.executable} -c \"{script}\"; true"], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists()
        assert isolation.tree_rss_bytes(parent.pid) > 96 * MiB
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def test_no_capabilities_in_the_command() -> None:
    r = _sh("grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status")
    assert all(line.split()[1] == "0000000000000000" for line in r.stdout.decode().splitlines()), r.stdout


def test_missing_command_reports_127() -> None:
    r = run_isolated(["/nonexistent/algorithm"], env=ENV, timeout=20)
    assert r.returncode == 127 and b"cannot start" in r.stderr


def test_refuses_when_unshare_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation.shutil, "which", lambda name: None)
    with pytest.raises(IsolationUnavailable, match="unshare"):
        run_isolated(["true"], env=ENV, timeout=5)


def test_refuses_when_namespace_setup_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    fake = tmp_path / "unshare"
    fake.write_text("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(isolation.shutil, "which", lambda name: str(fake))
    with pytest.raises(IsolationUnavailable, match="Operation not permitted"):
        run_isolated(["touch", str(marker)], env=ENV, timeout=5)
    assert not marker.exists()


def test_refuses_missing_read_only_path(tmp_path: Path) -> None:
    with pytest.raises(IsolationUnavailable, match="does not exist"):
        run_isolated(["true"], env=ENV, timeout=5, read_only=[tmp_path / "absent"])


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the root code path")
def test_root_runs_without_user_namespace() -> None:
    assert "--map-root-user" not in isolation._unshare_command()


def test_read_only_inside_hidden_is_a_caller_error(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    with pytest.raises(ValueError, match="inside hidden"):
        run_isolated(["true"], env=ENV, timeout=5, read_only=[tmp_path / "in"], hidden=[tmp_path])
