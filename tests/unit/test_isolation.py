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
    r = run_isolated(
        ["sh", "-c", "head -c 5000000 /dev/zero; echo end >&2"], env=ENV, timeout=30, max_output_bytes=1000
    )
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
    r = run_isolated(
        [sys.executable, "-c", HOG.replace("time.sleep(30)", "time.sleep(1)"), "64"],
        env=ENV,
        timeout=20,
        max_memory_bytes=512 * MiB,
    )
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


def test_root_runs_without_user_namespace_and_others_in_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # Both code paths, whoever runs the tests (no skip: in CI a skip is a failure).
    monkeypatch.setattr(isolation.os, "geteuid", lambda: 0)
    assert "--map-root-user" not in isolation._unshare_command()
    monkeypatch.setattr(isolation.os, "geteuid", lambda: 1000)
    assert "--map-root-user" in isolation._unshare_command()


def test_read_only_inside_hidden_is_a_caller_error(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    with pytest.raises(ValueError, match="inside hidden"):
        run_isolated(["true"], env=ENV, timeout=5, read_only=[tmp_path / "in"], hidden=[tmp_path])


# -- a private root (View): what vendor check uses ----------------------------------------


def _view(tmp_path: Path, **kw: object) -> isolation.View:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return isolation.View(binds=kw.pop("binds", []), output_host=out, **kw)  # type: ignore[arg-type]


def _in_view(tmp_path: Path, script: str, **kw: object) -> isolation.IsolationResult:
    view = kw.pop("view", None) or _view(tmp_path)
    return run_isolated(["sh", "-c", script], env=ENV, timeout=kw.pop("timeout", 30), view=view, **kw)  # type: ignore[arg-type]


def test_view_shows_only_what_it_lists(tmp_path: Path) -> None:
    shown = tmp_path / "shown"
    shown.mkdir()
    (shown / "model.bin").write_text("weights")
    (tmp_path / "other.txt").write_text("HOST-FILE")
    view = _view(tmp_path, binds=[(shown, "/opt/model")])
    r = _in_view(
        tmp_path,
        f"ls /; echo --; ls /etc; echo --; cat /opt/model/model.bin; echo; cat {tmp_path}/other.txt; ls /run /sys "
        "/home /root",
        view=view,
    )
    top, etc, rest = r.stdout.decode().split("--\n")
    # the host's root has more (/home, /var, /run, /work, ...): only these are shown
    expected_top = {
        "bin",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "opt",
        "output",
        "proc",
        "sbin",
        "tmp",
        "usr",
    }
    assert set(top.split()) <= expected_top and {"opt", "output", "proc", "tmp", "usr", "etc", "dev"} <= set(
        top.split()
    )
    assert set(etc.split()) <= {"passwd", "group", "hosts", *isolation.ETC_ALLOWED}
    assert "shadow" not in etc and "hostname" not in etc
    assert rest.startswith("weights") and b"HOST-FILE" not in r.stdout


def test_view_runs_as_the_sandbox_user_without_capabilities_or_inherited_fds(tmp_path: Path) -> None:
    r = _in_view(
        tmp_path, "id -u; id -g; grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs)' /proc/self/status; ls /proc/self/fd"
    )
    lines = r.stdout.decode().split()
    assert lines[:2] == ["65532", "65532"]
    caps = dict(zip(lines[2:14:2], lines[3:14:2], strict=True))
    assert all(caps[k] == "0000000000000000" for k in ("CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:")), caps
    assert caps["NoNewPrivs:"] == "1"
    assert lines[14:] == ["0", "1", "2", "3"]  # 3: the directory ls reads; nothing of the supervisor's


# The supervisor (PID 1) holds an fd of the host's output directory: through /proc/1/fd it
# would be a way out of the view and past the output's limits.
THROUGH_PID1 = (
    "for n in 0 1 2 3 4 5 6 7 8 9; do echo x > /proc/1/fd/$n/escaped && echo WROTE$n; "
    "ls /proc/1/fd/$n/ >/dev/null 2>&1 && echo LISTED$n; done; cat /proc/1/environ >/dev/null 2>&1 && echo ENV; "
)


def test_view_supervisor_is_out_of_reach(tmp_path: Path) -> None:
    r = _in_view(tmp_path, THROUGH_PID1 + "kill -9 1; mount -t tmpfs x /tmp; echo rc=$?; echo done")
    text = r.stdout.decode()
    assert "WROTE" not in text and "LISTED" not in text and "ENV" not in text and "rc=0" not in text, text
    assert r.returncode == 0 and text.endswith("done\n")  # kill -9 1 did nothing
    assert list((tmp_path / "out").iterdir()) == []


def test_view_output_is_copied_back_with_links_as_links(tmp_path: Path) -> None:
    r = _in_view(tmp_path, "cd /output; echo hi > a; ln a hard; ln -s /etc/shadow link; mkdir -p d/e; echo x > d/e/f; "
                           "mkfifo pipe; echo t > /tmp/t")
    out = tmp_path / "out"
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a", "d", "hard", "link"]
    assert os.readlink(out / "link") == "/etc/shadow"  # a link, never the host file it names
    assert (out / "a").stat().st_ino == (out / "hard").stat().st_ino
    assert (out / "d" / "e" / "f").read_text() == "x\n"
    # a, hard, link, d, d/e, d/e/f, pipe: 7 (tmpfs charges a hard link a slot of its own, so
    # links cannot beat the file limit); the FIFO is not copied; /tmp/t is outside the output
    assert (r.output_files, r.left_behind, r.outside_files) == (7, 1, 1)


def test_view_bounds_processes_and_files(tmp_path: Path) -> None:
    view = _view(tmp_path, max_processes=16, max_output_files=20)
    # files first: the shell itself dies at the first fork refused
    r = _in_view(tmp_path, "j=0; while [ $j -lt 50 ]; do true > /output/f$j || break; j=$((j+1)); done; "
                           "i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done", view=view)
    assert r.process_limit_reached and r.peak_tasks == 16
    assert r.output_files_full and r.output_files == 20
    assert len(list((tmp_path / "out").iterdir())) == 20


def test_view_from_an_unprivileged_caller(tmp_path: Path) -> None:
    """Started by a user without privileges, the view runs in a user namespace; as root, this
    test plays that user (uid 65534, the system's own Python: the venv is root's)."""
    import tempfile

    # pytest's own folder is root's 0700: the unprivileged user gets a folder of its own
    with tempfile.TemporaryDirectory(prefix="lightbox-unprivileged-") as folder:
        _unprivileged(Path(folder))


def _unprivileged(work: Path) -> None:
    out = work / "out"
    out.mkdir()
    script = work / "run.py"
    script.write_text(
        "import importlib.util, json, os, pathlib, sys\n"
        f"spec = importlib.util.spec_from_file_location('iso', {str(Path(isolation.__file__))!r})\n"
        "iso = importlib.util.module_from_spec(spec); sys.modules['iso'] = iso; spec.loader.exec_module(iso)\n"
        "view = iso.View(binds=[], output_host=pathlib.Path(sys.argv[1]), max_processes=8)\n"
        f"r = iso.run_isolated(['sh', '-c', {THROUGH_PID1!r} + 'id -u; echo hi > /output/x; for i in 1 2 3 4 5 6 7 8 "
        "9; do sleep 9 & done'], "
        "env={'PATH': '/usr/bin:/bin'}, timeout=30, view=view)\n"
        "print(json.dumps({'uid': os.getuid(), 'out': r.stdout.decode(), 'limit': r.process_limit_reached, 'rc': "
        "r.returncode}))\n"
    )
    if os.geteuid() == 0:
        for p in (work, out, script):
            os.chown(p, 65534, 65534)
        argv = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-I",
            str(script),
            str(out),
        ]
    else:
        argv = [sys.executable, "-I", str(script), str(out)]
    import json
    import subprocess

    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["uid"] != 0 and report["out"] == "65532\n" and report["limit"]
    assert (out / "x").read_text() == "hi\n" and (out / "x").stat().st_uid == report["uid"]
    assert sorted(p.name for p in out.iterdir()) == ["x"]  # nothing written through the supervisor's fds


def test_view_plan_refuses_binds_over_its_own_mounts(tmp_path: Path) -> None:
    for target in ("/tmp", "/etc/passwd", "/proc/x", "/dev", "/output/x", "relative", "/"):
        with pytest.raises(ValueError, match="view path"):
            isolation.view_plan(_view(tmp_path, binds=[(tmp_path, target)]), (1, 1))


def test_view_plan_mirrors_system_links_and_skips_what_is_shown_already(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "usr" / "lib").mkdir(parents=True)
    (host / "lib").symlink_to("usr/lib")
    (host / "etc").mkdir()
    (host / "etc" / "ld.so.cache").write_text("")
    (host / "etc" / "shadow").write_text("root:$6$secret")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    plan = isolation.view_plan(
        _view(tmp_path, binds=[(deep, str(deep)), (tmp_path / "a", str(tmp_path / "a"))]), (7, 8),
        host_etc=host / "etc", host_root=host,
    )
    assert ["symlink", "/lib", "usr/lib"] in plan and ["bind", "/usr", str(host / "usr")] in plan
    assert ["bind", "/etc/ld.so.cache", str(host / "etc" / "ld.so.cache")] in plan
    assert not any("shadow" in step[1] for step in plan)
    binds = [step[1] for step in plan if step[0] == "bind" and step[1].startswith(str(tmp_path))]
    assert binds == [str(tmp_path / "a")]  # a/b is inside a: not bound twice
    output = next(step for step in plan if step[:2] == ["tmpfs", "/output"])
    assert "nr_inodes=10001" in output[2] and "uid=7,gid=8" in output[2]


def test_sockets_are_found_and_too_many_files_refused(tmp_path: Path) -> None:
    import socket

    nested = tmp_path / "x" / "y"
    nested.mkdir(parents=True)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(nested / "s.sock"))
    (tmp_path / "x" / "plain").write_text("")
    try:
        assert isolation.find_sockets(tmp_path) == [nested / "s.sock"]
        with pytest.raises(IsolationUnavailable, match="more than 2 files"):
            isolation.find_sockets(tmp_path, limit=2)
    finally:
        server.close()


def test_host_ipc_objects_are_out_of_reach(tmp_path: Path) -> None:
    import subprocess

    made = subprocess.run(["ipcmk", "-M", "4096", "-p", "0666"], capture_output=True, text=True, check=True).stdout
    shm_id = made.split()[-1]
    try:
        for r in (_sh(f"ipcs -m -i {shm_id}"), _in_view(tmp_path, f"ipcs -m -i {shm_id}")):
            assert b"shmid=" not in r.stdout and b"not found" in r.stderr, (r.stdout, r.stderr)
    finally:
        subprocess.run(["ipcrm", "-m", shm_id], check=True)
