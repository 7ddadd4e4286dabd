"""``lightbox vendor check`` passes the reference algorithms and fails each misbehaving one
with a message a vendor can act on."""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

from lightbox.sandbox import vendorcheck
from lightbox.sandbox.isolation import IsolationUnavailable, run_isolated
from lightbox.sandbox.vendorcheck import CheckSettings, run_check

PY = sys.executable


@pytest.fixture(autouse=True)
def _needs_namespaces() -> None:
    try:
        run_isolated(["true"], env={"PATH": "/usr/bin:/bin"}, timeout=20)
    except IsolationUnavailable as exc:
        pytest.skip(f"namespaces unavailable here: {exc.reason}")


def check(command: list[str], **settings: object) -> tuple[int, str]:
    out = io.StringIO()
    defaults: dict[str, object] = {"cases": 8, "timeout": 60.0}
    code = run_check(command, CheckSettings(**{**defaults, **settings}), out)  # type: ignore[arg-type]
    return code, out.getvalue()


def module(name: str, *args: str) -> list[str]:
    return [PY, "-m", f"lightbox.sandbox.reference.{name}", *args]


def test_honest_classifier_is_conformant() -> None:
    code, text = check(module("classifier"))
    assert code == 0, text
    assert "verdict: CONFORMANT" in text and "(8/8 cases)" in text and "no network use" in text


def test_segmenter_writing_dicom_seg_is_conformant() -> None:
    code, text = check(module("segmenter", "--dicom-seg"), task="segmentation")
    assert code == 0, text
    assert "dice" in text


def test_a_dicom_seg_that_names_other_images_is_named_as_the_problem() -> None:
    script = (
        "import glob, os, pydicom\n"
        "from lightbox.sandbox.reference import segmenter\n"
        "segmenter.main(['--dicom-seg'])\n"
        "f = sorted(glob.glob(os.path.join(os.environ['LIGHTBOX_OUTPUT_DIR'], 'masks', '*.dcm')))[0]\n"
        "ds = pydicom.dcmread(f)\n"
        "ds.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]"
        ".ReferencedSOPInstanceUID = '1.2.3'\n"
        "ds.save_as(f)\n"
    )
    code, text = check([PY, "-c", script], task="segmentation")
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    assert (
        "mask is not a DICOM SEG of this case: frame 1 refers to an image that is not in the case's first series: "
        "case-0001"
        in text
    ), text


def test_honest_segmenter_is_conformant() -> None:
    code, text = check(module("segmenter"), task="segmentation")
    assert code == 0, text
    assert "dice" in text


@pytest.mark.parametrize(
    ("mode", "fragments"),
    [
        ("network", ["tried to use the network", "ship weights in the image"]),
        ("read-truth", ["exited with code 1", "cannot read ground truth", "predictions.json was not written"]),
        ("malformed", ["predictions.json is not valid JSON", "line 1, column"]),
        (
            "schema",
            [
                "does not match the v1 schema",
                "cases.case-0001.scores.abnormal: Input should be less than or equal to 1",
                "no prediction for 4 of 8 cases: case-0005",
            ],
        ),
        (
            "leak-phi",
            ["printed patient or study identifiers", "distinct PatientID values", "never log DICOM attribute values"],
        ),
    ],
)
def test_misbehaving_algorithms_fail_with_actionable_messages(mode: str, fragments: list[str]) -> None:
    code, text = check(module("misbehave", mode))
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    assert "verdict: NOT CONFORMANT" in text
    for fragment in fragments:
        assert fragment in text, text


def test_flood_is_stopped_at_the_file_limit() -> None:
    code, text = check(module("misbehave", "flood"), max_output_bytes=2 << 20)
    assert code == vendorcheck.EXIT_NOT_CONFORMANT
    assert "reached the per-file limit of 2 MiB" in text


def test_hang_is_killed_at_the_time_limit() -> None:
    code, text = check(module("misbehave", "hang"), timeout=4.0)
    assert code == vendorcheck.EXIT_NOT_CONFORMANT
    assert "did not exit within 4 s and was killed" in text


def test_memory_hog_is_killed_at_the_memory_limit() -> None:
    code, text = check(module("misbehave", "hog"), max_memory_bytes=256 << 20)
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    assert "went over the memory limit of 256 MiB" in text and "OOMKilled" in text


def test_peak_memory_is_reported_under_a_limit() -> None:
    code, text = check(module("classifier"), max_memory_bytes=1 << 30)
    assert code == 0, text
    assert "resident memory peaked at" in text and "of the 1024 MiB limit" in text


def test_tampering_is_contained(tmp_path: Path) -> None:
    code, text = check(module("misbehave", "tamper"), keep=tmp_path / "kept")
    # the attempts fail inside the sandbox, so the honest predictions it then writes conform
    assert code == 0, text
    manifest = json.loads((tmp_path / "kept" / "input" / "manifest.json").read_text())
    assert len(manifest["cases"]) == 8


def test_missing_cases_are_named() -> None:
    script = (
        "import json, os\n"
        "m = json.load(open(os.path.join(os.environ['LIGHTBOX_INPUT_DIR'], 'manifest.json')))\n"
        "cases = {c['id']: {'scores': {'normal': 0.5, 'abnormal': 0.5}} for c in m['cases'][:5]}\n"
        "json.dump({'task': 'classification', 'cases': cases}, open(os.path.join(os.environ['LIGHTBOX_OUTPUT_DIR'], "
        "'predictions.json'), 'w'))\n"
    )
    code, text = check([PY, "-c", script])
    assert code == 1 and "no prediction for 3 of 8 cases: case-0006, case-0007, case-0008 (3)" in text


def test_wrong_mask_shape_is_explained() -> None:
    script = (
        "import json, os, numpy as np\n"
        "m = json.load(open(os.path.join(os.environ['LIGHTBOX_INPUT_DIR'], 'manifest.json')))\n"
        "out = os.environ['LIGHTBOX_OUTPUT_DIR']\n"
        "np.savez(os.path.join(out, 'm.npz'), mask=np.zeros((2, 2), np.uint8))\n"
        "json.dump({'task': 'segmentation', 'cases': {c['id']: {'mask': 'm.npz'} for c in m['cases']}}, "
        "open(os.path.join(out, 'predictions.json'), 'w'))\n"
    )
    code, text = check([PY, "-c", script], task="segmentation", cases=3)
    assert code == 1 and "mask shape (2, 2) != (slices, rows, columns) (3," in text


def test_cli_usage_errors() -> None:
    assert vendorcheck.main([]) == vendorcheck.EXIT_USAGE
    assert vendorcheck.main(["check"]) == vendorcheck.EXIT_USAGE
    assert vendorcheck.main(["check", "--cases", "1", "--", "true"]) == vendorcheck.EXIT_USAGE


def test_cli_runs_through_the_dispatcher(capsys: pytest.CaptureFixture[str]) -> None:
    from lightbox.cli import main

    assert main(["vendor", "check", "--cases", "4", "--", *module("classifier")]) == 0
    assert "CONFORMANT" in capsys.readouterr().out


def test_cannot_check_without_isolation(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*args: object, **kwargs: object) -> None:
        raise IsolationUnavailable("no namespaces")

    monkeypatch.setattr(vendorcheck, "run_isolated", unavailable)
    code, text = check(["true"])
    assert code == vendorcheck.EXIT_CANNOT_CHECK and "no namespaces" in text and "not run" in text


def test_image_manifest_is_validated(tmp_path: Path) -> None:
    good = tmp_path / "algorithm.json"
    good.write_text(
        json.dumps({"name": "demo", "version": "1", "task": "classification", "labels": ["normal", "abnormal"]})
    )
    code, text = check(module("classifier"), manifest=good)
    assert code == 0 and "image manifest demo 1 is valid" in text
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "demo", "task": "classification", "resources": {"cpu": "lots"}}))
    code, text = check(module("classifier"), manifest=bad)
    assert code == 1 and "version: Field required" in text and "resources.cpu" in text


def test_honest_detector_is_conformant() -> None:
    code, text = check(module("detector"), task="detection")
    assert code == 0, text
    assert "frocSensitivity" in text


def test_relative_command_runs_from_the_callers_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "algo.sh"
    script.write_text(f"#!/bin/sh\nexec {PY} -m lightbox.sandbox.reference.classifier\n")
    script.chmod(0o755)
    tmp_path.chmod(0o755)  # the command runs as uid 65532, as in the run pod: pytest's folder is 0700
    monkeypatch.chdir(tmp_path)
    code, text = check(["./algo.sh"])
    assert code == 0, text


def test_a_command_the_sandbox_user_cannot_read_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "algo.sh"
    script.write_text(f"#!/bin/sh\nexec {PY} -m lightbox.sandbox.reference.classifier\n")
    script.chmod(0o000)  # unreadable without privileges, whoever runs the tests
    tmp_path.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    code, text = check(["./algo.sh"])
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    assert "could not be started in the sandbox" in text and "cannot start ./algo.sh: Permission denied" in text, text
    assert "runs as uid 65532" in text and "--expose PATH" in text


# -- escapes: each is tried as root would, and must fail, be named, and leave the host as it was


def _escape(folder: Path, body: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A command that runs ``body`` with os, sys, socket and the honest classifier imported,
    started from ``folder`` (the current directory is what the command is shown of the caller's)."""
    folder.chmod(0o755)
    script = folder / "escape.py"
    script.write_text("import os, socket, sys\nfrom lightbox.sandbox.reference import classifier\n" + body)
    script.chmod(0o644)
    monkeypatch.chdir(folder)
    return [PY, "escape.py"]


def _processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and token.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _listener(address: str | bytes) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(address)
    server.listen(8)
    server.setblocking(False)
    return server


def test_host_unix_sockets_are_out_of_reach(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One socket where the command is not shown, one inside the current directory, which it is
    # shown read-only (a read-only mount does not stop connect()), one abstract.
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    for d in (project, elsewhere):
        d.mkdir(mode=0o755)
    paths = [str(elsewhere / "host.sock"), str(project / "agent.sock")]
    abstract = f"\0lightbox-test-{uuid.uuid4().hex}".encode()
    servers = [_listener(p) for p in paths] + [_listener(abstract)]
    for p in paths:
        os.chmod(p, 0o777)  # so only the sandbox, not permissions, can keep the command out
    body = (
        f"reached = []\nfor target in {paths!r} + [{abstract!r}]:\n"
        "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "    try:\n        s.connect(target)\n        reached.append(target)\n"
        "    except OSError as exc:\n        print('refused', exc.strerror, file=sys.stderr)\n"
        "if reached:\n    print('CONNECTED', reached, file=sys.stderr)\n    classifier.main([])\n    sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    try:
        code, text = check(_escape(project, body, monkeypatch))
        assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
        assert "exited with code 3" in text and "CONNECTED" not in text, text
        # outside the view: no such file; covered in the view (by /dev/null) or abstract: refused
        assert (
            "| refused No such file or directory\n      | refused Connection refused\n      | refused Connection "
            "refused"
            in text
        )
        for server in servers:
            with pytest.raises(BlockingIOError):
                server.accept()
    finally:
        for server in servers:
            server.close()
    assert sorted(os.listdir(project)) == ["agent.sock", "escape.py"]


def test_writes_outside_the_output_fail_and_leave_the_host_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = uuid.uuid4().hex
    host_tmp = Path("/tmp") / f"lightbox-escape-{token}"
    host_etc = Path("/etc") / f"lightbox-escape-{token}"
    package = Path(vendorcheck.__file__).parent / f"lightbox-escape-{token}.py"
    targets = [host_tmp, host_etc, package]
    body = (
        f"for target in {[str(t) for t in targets]!r}:\n"
        "    try:\n        open(target, 'w').write('pwned')\n        print('wrote', target, file=sys.stderr)\n"
        "    except OSError as exc:\n        print('refused', target, exc.strerror, file=sys.stderr)\n"
        "classifier.main([])\nsys.exit(7)  # so the check shows what it printed\n"
    )
    try:
        code, text = check(_escape(tmp_path, body, monkeypatch))
        assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
        # /tmp is private and writable (the write succeeds there and is named); /etc and the
        # checker's own package are read-only
        assert "tried to write outside the output directory: left 1 files in /tmp" in text, text
        assert f"| wrote {host_tmp}\n" in text
        assert (
            f"| refused {host_etc} Read-only file system\n" in text
            and f"| refused {package} Read-only file system\n" in text
        )
    finally:
        leaked = [t for t in targets if t.exists()]
        for t in leaked:
            t.unlink()
    assert leaked == []


def test_host_files_and_the_sample_truth_are_not_in_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir(mode=0o755)
    secret = secret_dir / "key.txt"
    secret.write_text("HOST-SECRET")
    secret.chmod(0o644)
    body = (
        "import glob\n"
        f"found = glob.glob('/tmp/lightbox-vendor-check-*/**', recursive=True) + glob.glob({str(secret)!r})\n"
        "found += [p for p in ('/etc/shadow', '/etc/hostname', '/root/.bash_history') if os.path.exists(p)]\n"
        "print('visible', len(found), sorted(found)[:5], file=sys.stderr)\n"
        "sys.exit(4 if not found else 0)\n"
    )
    project = tmp_path / "project"
    project.mkdir()
    code, text = check(_escape(project, body, monkeypatch), keep=tmp_path / "kept")
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    assert "exited with code 4" in text and "visible 0 []" in text, text
    # the truth existed all along, where the command looked (the check's folder, kept here)
    assert (tmp_path / "kept" / "data" / "truth" / "labels.json").is_file()


def test_fork_bomb_is_bounded_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = (
        "import time\nforked = 0\ntry:\n    for _ in range(2000):\n"
        "        if os.fork() == 0:\n            time.sleep(120)\n            os._exit(0)\n        forked += 1\n"
        "except OSError as exc:\n    print('fork refused after', forked, exc.strerror, file=sys.stderr)\n"
        "sys.exit(5)\n"
    )
    token = f"bomb-{uuid.uuid4().hex}"
    code, text = check([*_escape(tmp_path, body, monkeypatch), token], max_processes=64)
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    assert _processes_with(token) == []  # none of the 63 sleepers outlived the check
    # 64 = the command and 63 children; the 64th fork is refused
    assert "fork refused after 63 Resource temporarily unavailable" in text, text
    assert "reached the limit of 64 processes and threads (peak 64): further forks were refused" in text, text


def test_thirty_thousand_files_stop_at_the_file_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = (
        "classifier.main([])\n"
        "many = os.path.join(os.environ['LIGHTBOX_OUTPUT_DIR'], 'many')\nos.mkdir(many)\nmade = 0\n"
        "try:\n    for i in range(30000):\n        open(os.path.join(many, str(i)), 'w').close()\n        made += 1\n"
        "except OSError as exc:\n    print('stopped after', made, exc.strerror, file=sys.stderr)\n"
        "sys.exit(6)\n"
    )
    project = tmp_path / "project"
    project.mkdir()
    code, text = check(_escape(project, body, monkeypatch), max_output_files=1000, keep=tmp_path / "kept")
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    # 1000 = predictions.json, the folder "many" and 998 files
    assert "stopped after 998 No space left on device" in text, text
    assert "created more files in the output directory than its limit of 1000: further files were refused" in text, text
    assert len(os.listdir(tmp_path / "kept" / "output" / "many")) == 998


def test_a_working_directory_the_sandbox_user_cannot_enter_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tmp_path.chmod(0o000)  # no one may enter without privileges, whoever runs the tests
    try:
        code, text = check(module("classifier"))
    finally:
        tmp_path.chmod(0o700)
    assert code == vendorcheck.EXIT_NOT_CONFORMANT, text
    assert f"cannot enter the working directory {tmp_path}: Permission denied" in text, text
