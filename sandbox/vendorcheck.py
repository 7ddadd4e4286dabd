"""``lightbox vendor check``: what a vendor runs before shipping an algorithm.

    lightbox vendor check [--task classification] [--cases N] [--timeout S] -- COMMAND...

Generates a small de-identified sample input from pydicom's test images, runs COMMAND as the
run pod's unprivileged user (uid 65532) with no network, in a private root that shows only
/input (read-only), a bounded /output, a private /tmp and the runtime it needs (never the
sample's ground truth), with time, memory, process and file limits, then checks what it
wrote against vendor contract v1 and prints a verdict. Exit code 0 only when
the run conforms; 1 when it does not; 3 when the check itself could not run (e.g. no
namespace support: the command is never run un-isolated).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightbox.api.run import MANIFEST_FILE, OUTPUT_DIR_ENV, PREDICTIONS_FILE, ScorerConfig, StagerConfig
from lightbox.sandbox import safeio
from lightbox.sandbox.contract import (
    CONTRACT_VERSION,
    MAX_PREDICTIONS_BYTES,
    AlgorithmManifest,
    describe_errors,
    validate_predictions,
    vendor_environment,
)
from lightbox.sandbox.deidgate import verify_tree
from lightbox.sandbox.isolation import SYSTEM_DIRS, IsolationResult, IsolationUnavailable, View, run_isolated
from lightbox.sandbox.sampledata import make_sample_dataset
from lightbox.sandbox.segfile import SegError
from lightbox.sandbox.stager import stage

EXIT_CONFORMANT, EXIT_NOT_CONFORMANT, EXIT_USAGE, EXIT_CANNOT_CHECK = 0, 1, 2, 3
LOG_LIMIT = 1 << 20


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def conformant(self) -> bool:
        return not self.problems


def _tail(data: bytes, lines: int = 8) -> str:
    text = data.decode(errors="replace").rstrip().splitlines()[-lines:]
    return "\n".join("      | " + line[:200] for line in text)


def _scan_output(root: Path) -> tuple[int, int]:
    """(total bytes, largest file) of the regular files under ``root``: iterative, so a deep
    tree cannot exhaust the recursion limit, and never following a symbolic link."""
    total = largest = 0
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
                total, largest = total + size, max(largest, size)
    return total, largest


def sample_identifiers(input_dir: Path) -> dict[str, set[str]]:
    """Values in the sample input that identify a patient or study: they must not be logged."""
    import pydicom

    found: dict[str, set[str]] = {
        "PatientID": set(),
        "StudyInstanceUID": set(),
        "SeriesInstanceUID": set(),
        "SOPInstanceUID": set(),
    }
    for path in input_dir.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword, values in found.items():
            value = str(ds.get(keyword, "") or "")
            if len(value) >= 8:
                values.add(value)
    return found


_DUMP_PATTERN = re.compile(rb"\(0010,\s*[0-9a-fA-F]{4}\)|Patient(?:'s)?\s*(?:Name|ID|Birth)", re.IGNORECASE)


def check_logs(stdout: bytes, stderr: bytes, identifiers: dict[str, set[str]], verdict: Verdict) -> None:
    logs = stdout + b"\n" + stderr
    leaked = {k: sum(1 for v in values if v.encode() in logs) for k, values in identifiers.items()}
    leaked = {k: n for k, n in leaked.items() if n}
    if leaked:
        what = ", ".join(f"{n} distinct {k} value{'s' if n != 1 else ''}" for k, n in leaked.items())
        verdict.problems.append(
            f"printed patient or study identifiers to stdout/stderr ({what}). Container logs leave the sandbox: "
            "never log DICOM attribute values; log case ids from manifest.json instead."
        )
    elif _DUMP_PATTERN.search(logs):
        verdict.problems.append(
            "stdout/stderr contain what looks like a DICOM header dump (patient attributes). "
            "Container logs leave the sandbox: do not log DICOM headers."
        )
    else:
        verdict.passed.append("no patient or study identifiers in stdout/stderr")


def _check_classification(doc: Any, manifest: dict[str, Any], verdict: Verdict) -> None:
    labels = set(manifest.get("labels") or [])
    missing_labels = 0
    unknown_labels = 0
    for case in doc.cases.values():
        got = set(case.scores)
        missing_labels += bool(labels - got)
        unknown_labels += bool(got - labels) if labels else 0
    if missing_labels:
        verdict.problems.append(
            f"{missing_labels} cases lack a score for some of the labels {sorted(labels)}; give a probability for "
            "every label"
        )
    if unknown_labels:
        verdict.problems.append(f"{unknown_labels} cases have scores for labels not in the manifest {sorted(labels)}")


def _series_shape(manifest_case: dict[str, Any]) -> tuple[int, int, int]:
    s = manifest_case["series"][0]
    return (len(s["files"]), s["rows"], s["columns"])


def _check_segmentation(
    doc: Any, by_id: dict[str, dict[str, Any]], output: Path, staged: dict[str, dict[str, Any]], verdict: Verdict
) -> None:
    from lightbox.sandbox.scorer import load_vendor_mask

    problems: dict[str, list[str]] = {}
    for case_id, case in doc.cases.items():
        if case_id not in by_id:
            continue
        reason = None
        try:
            # the scorer's own reader: no links, regular files only, bounded before decoding
            arr = load_vendor_mask(
                output, case.mask, _series_shape(by_id[case_id]), staged[case_id]["sopInstanceUids"], reshape=False
            )
            if not str(case.mask).lower().endswith(".dcm") and arr.dtype.kind not in "biu":
                reason = f"dtype {arr.dtype} (use uint8 or bool)"
        except safeio.HostileOutput as exc:
            reason = f"refused, as the scorer refuses the whole run: {exc}"
        except SegError as exc:
            reason = f"is not a DICOM SEG of this case: {exc}"
        except safeio.Unreadable as exc:
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the vendor's to fix
            reason = f"not readable ({type(exc).__name__})"
        if reason:
            problems.setdefault(reason, []).append(case_id)
    for reason, cases in problems.items():
        verdict.problems.append(f"mask {reason}: {_names(cases)}")


def _check_detection(doc: Any, by_id: dict[str, dict[str, Any]], verdict: Verdict) -> None:
    bad: list[str] = []
    for case_id, case in doc.cases.items():
        if case_id not in by_id:
            continue
        slices, rows, cols = _series_shape(by_id[case_id])
        if any(f.location.slice >= slices or f.location.x >= cols or f.location.y >= rows for f in case.findings):
            bad.append(case_id)
    if bad:
        verdict.problems.append(
            f"findings outside the image (x < columns, y < rows, slice < number of files): {_names(bad)}"
        )


def _names(cases: list[str], limit: int = 8) -> str:
    shown = ", ".join(sorted(cases)[:limit])
    return shown + (f" and {len(cases) - limit} more" if len(cases) > limit else "") + f" ({len(cases)})"


def check_predictions(output: Path, manifest: dict[str, Any], task: str, verdict: Verdict, work: Path) -> Any:
    """``work``: the stage step's scorer-only folder, whose cases.json places DICOM SEG frames."""
    try:
        data = safeio.parse_json(
            safeio.read_beneath(output, PREDICTIONS_FILE, PREDICTIONS_FILE, MAX_PREDICTIONS_BYTES), PREDICTIONS_FILE
        )
    except (safeio.HostileOutput, safeio.Unreadable) as exc:
        written = not str(exc).endswith("was not written")
        verdict.problems.append(str(exc) if written else f"{exc} to the output directory (${OUTPUT_DIR_ENV})")
        return None
    if isinstance(data, dict) and data.get("task") not in (None, task):
        verdict.problems.append(f"{PREDICTIONS_FILE} says task {data.get('task')!r}; this check is for {task!r}")
        return None
    doc, errors = validate_predictions(data)
    if errors:
        verdict.problems.append(
            f"{PREDICTIONS_FILE} does not match the v1 schema:\n" + "\n".join(f"      - {e}" for e in errors)
        )
    if not isinstance(data, dict) or not isinstance(data.get("cases"), dict):
        return None
    expected = [c["id"] for c in manifest["cases"]]
    missing = [c for c in expected if c not in data["cases"]]
    extra = [c for c in data["cases"] if c not in set(expected)]
    if missing:
        verdict.problems.append(f"no prediction for {len(missing)} of {len(expected)} cases: {_names(missing)}")
    if extra:
        verdict.problems.append(
            f"predictions for case ids not in manifest.json: {_names([str(c)[:64] for c in extra])}"
        )
    if doc is None:
        return None
    by_id = {c["id"]: c for c in manifest["cases"]}
    if task == "classification":
        _check_classification(doc, manifest, verdict)
    elif task == "segmentation":
        from lightbox.sandbox.scorer import load_cases

        _check_segmentation(doc, by_id, output, load_cases(work), verdict)
    else:
        _check_detection(doc, by_id, verdict)
    if not errors and not missing and not extra:
        verdict.passed.append(
            f"{PREDICTIONS_FILE} conforms to contract {CONTRACT_VERSION} ({len(expected)}/{len(expected)} cases)"
        )
    return doc


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


@dataclass
class CheckSettings:
    task: str = "classification"
    cases: int = 12
    seed: int = 0
    timeout: float = 300.0
    max_output_bytes: int = 64 << 20
    max_memory_bytes: int | None = None
    keep: Path | None = None
    manifest: Path | None = None
    max_processes: int = 512
    max_output_files: int = 10000
    expose: tuple[Path, ...] = ()
    # `vendor check --image`: runs the image in the command's place (sandbox/imagecheck.py)
    runner: Any = None
    # monai-map or grand-challenge: staged and run once per case (sandbox/packaging_check.py)
    packaging: str = "lightbox"
    map_manifest: Any = None  # a MAP's manifests read from the image (--image oci-archive:PATH)
    map_manifest_error: str | None = None


# Where the command finds its input and output, as in the run pod.
VIEW_INPUT, VIEW_OUTPUT = "/input", "/output"


def _python_runtime() -> list[Path]:
    """The Python environment this checker runs in (its venv, base interpreter and the source
    of an editable install), which a command like ``python -m my_algorithm`` needs."""
    import importlib.util

    found = [Path(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)]
    found += [Path(p) for p in sys.path if p and Path(p).is_dir()]
    for name in ("lightbox", "lightbox.sandbox"):
        spec = importlib.util.find_spec(name)
        if spec is not None:
            found += [Path(p).parent for p in (spec.submodule_search_locations or [])]
    return found


def runtime_binds(
    command: list[str], cwd: Path, expose: tuple[Path, ...], secret: Path
) -> tuple[list[tuple[Path, str]], Path | None]:
    """Read-only binds (same path inside as outside) for the command's runtime, and the directory
    it starts in (None: the view's root). Nothing that is, holds or lies in ``secret`` (the
    checker's folder with the sample truth) and never the host's root."""
    secret = Path(os.path.realpath(secret))
    wanted = _python_runtime() + list(expose)
    if command and "/" in command[0]:  # empty with --image: the image's own CMD
        wanted.append(Path(os.path.realpath(cwd / command[0])).parent)
    real_cwd = Path(os.path.realpath(cwd))
    shown_cwd = (
        real_cwd
        if real_cwd != Path("/") and not secret.is_relative_to(real_cwd) and not real_cwd.is_relative_to(secret)
        else None
    )
    if shown_cwd is not None:
        wanted.append(shown_cwd)
    keep: list[Path] = []
    for path in wanted:
        real = Path(os.path.realpath(path))
        if real == Path("/") or not real.exists() or secret.is_relative_to(real) or real.is_relative_to(secret):
            continue
        if any(real.is_relative_to(Path(r)) for r in ("/proc", "/sys", "/dev", "/run", "/etc", *SYSTEM_DIRS)):
            continue  # the view's own, or visible through the system runtime already
        keep.append(real)
    # A path inside another one shown is visible already.
    shown = sorted({p for p in keep if not any(p != q and p.is_relative_to(q) for q in keep)})
    return [(p, str(p)) for p in shown], shown_cwd


def _limit_problems(result: Any, settings: CheckSettings, at_limit: bool, verdict: Verdict) -> None:
    """What the command tried against the sandbox's limits, as far as the kernel lets us see."""
    if result.process_limit_reached:
        verdict.problems.append(
            f"reached the limit of {settings.max_processes} processes and threads (peak {result.peak_tasks}): "
            "further forks were refused. A run pod's processes are bounded too; do not fork without bound."
        )
    if result.output_files_full:
        verdict.problems.append(
            f"created more files in the output directory than its limit of {settings.max_output_files}: further files "
            "were refused. Write predictions.json and one mask per case."
        )
    if result.output_space_full and not at_limit:
        verdict.problems.append(
            f"filled the output directory's limit of {settings.max_output_bytes >> 20} MiB: further writes failed "
            "(ENOSPC). "
            "Write only predictions.json and masks to the output directory."
        )
    if result.outside_files:
        verdict.problems.append(
            f"tried to write outside the output directory: left {result.outside_files} files in /tmp "
            f"({result.outside_bytes >> 10} KiB). In a run pod the root file system is read-only and only "
            f"{VIEW_OUTPUT} "
            "is writable (HOME and TMPDIR point there), so this would fail."
        )
    if result.left_behind:
        verdict.problems.append(
            f"the output directory held {result.left_behind} entries that are not regular files, directories or "
            "symbolic "
            "links (FIFOs, sockets) or whose paths are too long; they were not checked. Write only regular files."
        )


def _judge_exit(result: IsolationResult, settings: CheckSettings, verdict: Verdict, say: Callable[[str], None]) -> None:
    """How the command ended (memory limit, time limit, signal, exit code) into ``verdict``."""
    if result.memory_exceeded:
        limit = (settings.max_memory_bytes or 0) >> 20
        say(f"  ran {result.seconds:.1f} s: stopped at the memory limit")
        verdict.problems.append(
            f"went over the memory limit of {limit} MiB (resident memory reached {result.peak_memory_bytes >> 20} MiB) "
            "and was killed, as Kubernetes kills a container at its memory limit (OOMKilled). Use less memory, "
            "or declare what the algorithm needs in the Algorithm's resources.memory."
        )
    elif result.timed_out:
        say(f"  ran {result.seconds:.1f} s: stopped at the time limit")
        verdict.problems.append(
            f"did not exit within {settings.timeout:g} s and was killed. Exit when predictions are written; "
            "no background processes or servers. A run's limit is the Algorithm's timeoutSeconds."
        )
    else:
        code = result.returncode
        say(
            f"  ran {result.seconds:.1f} s, exit code {code}"
            if code is not None and code >= 0
            else f"  ran {result.seconds:.1f} s, killed by {_signal_name(-(code or 0))}"
        )
        if code == -signal.SIGXFSZ:
            verdict.problems.append(
                f"a file grew past the output limit of {settings.max_output_bytes >> 20} MiB and the process was "
                "killed "
                "(SIGXFSZ). Write only predictions.json and masks to the output directory."
            )
        elif code is not None and code < 0:
            verdict.problems.append(f"killed by {_signal_name(-code)}.\n{_tail(result.stderr)}")
        elif code == 127 and b"cannot start" in result.stderr:
            verdict.problems.append(
                f"could not be started in the sandbox:\n{_tail(result.stderr)}\n      It runs as uid 65532 and sees "
                "only "
                "the system runtime, this Python environment and the current directory: make the command readable "
                "by any user, or show it its files with --expose PATH."
            )
        elif code:
            verdict.problems.append(
                f"exited with code {code}; exit 0 after writing predictions. Last lines of "
                f"stderr:\n{_tail(result.stderr)}"
            )
        else:
            verdict.passed.append("exited with code 0")
        if settings.max_memory_bytes is not None:
            verdict.passed.append(
                f"resident memory peaked at {result.peak_memory_bytes >> 20} MiB of the "
                f"{settings.max_memory_bytes >> 20} MiB limit"
            )


def run_check(command: list[str], settings: CheckSettings, out: Any = None) -> int:
    if settings.packaging != "lightbox":
        from lightbox.sandbox import packaging_check

        return packaging_check.run_check(command, settings, out)

    def say(text: str = "") -> None:
        print(text, file=out or sys.stdout)

    workdir = Path(tempfile.mkdtemp(prefix="lightbox-vendor-check-"))
    try:
        sample = make_sample_dataset(workdir / "data", settings.cases, settings.seed, settings.task)  # type: ignore[arg-type]
        input_dir, output_dir, work_dir = workdir / "input", workdir / "output", workdir / "work"
        output_dir.mkdir(parents=True)
        stage(
            sample.studies_dir, input_dir, work_dir,
            StagerConfig(task=settings.task, labels=sample.labels, deid_options=sample.deid_options),  # type: ignore[arg-type]
            verifier=verify_tree,
        )
        manifest = json.loads((input_dir / MANIFEST_FILE).read_text())
        identifiers = sample_identifiers(input_dir)
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            **vendor_environment(settings.task, sample.labels, VIEW_INPUT, VIEW_OUTPUT),
        }
        binds, start_in = runtime_binds(command, Path.cwd(), settings.expose, workdir)
        view = View(
            binds=[(input_dir, VIEW_INPUT), *binds], output_host=output_dir, output=VIEW_OUTPUT,
            max_output_bytes=settings.max_output_bytes, max_output_files=settings.max_output_files,
            max_tmp_bytes=settings.max_output_bytes, max_processes=settings.max_processes,
        )
        say(
            f"lightbox vendor check: {settings.task}, {len(manifest['cases'])} sample cases, timeout "
            f"{settings.timeout:g} s"
        )
        say(f"  command: {' '.join(command)}")
        if settings.runner is None:
            say(
                f"  sandbox: uid {view.uid}, no network, {VIEW_INPUT} read-only, {VIEW_OUTPUT} writable "
                f"(≤ {settings.max_output_bytes >> 20} MiB, ≤ {settings.max_output_files} files), ≤ "
                f"{settings.max_processes} "
                "processes; also visible read-only: "
                f"{', '.join(sorted(t for _, t in binds)) or 'the system runtime only'}"
            )
        verdict = Verdict()
        if settings.manifest is not None:
            _check_manifest(settings.manifest, settings.task, verdict)
        try:
            result = (settings.runner or run_isolated)(
                command, env=env, hidden=[workdir], timeout=settings.timeout,
                max_output_bytes=LOG_LIMIT, cwd=start_in, max_file_bytes=settings.max_output_bytes,
                max_memory_bytes=settings.max_memory_bytes, view=view,
            )
        except IsolationUnavailable as exc:
            say(f"  cannot check: isolation unavailable: {exc.reason}")
            say(
                "  (the command was not run; vendor check needs Linux namespaces: run as root or enable user "
                "namespaces)"
            )
            return EXIT_CANNOT_CHECK
        _judge_exit(result, settings, verdict, say)
        if result.network_attempts:
            verdict.problems.append(
                f"tried to use the network ({result.network_attempts} blocked DNS lookups or connections). There is no "
                "network in the sandbox: remove licence checks, telemetry and model downloads; ship weights in the "
                "image."
            )
        else:
            verdict.passed.append("no network use")
        if result.output_truncated:
            verdict.notes.append(f"stdout/stderr exceeded {LOG_LIMIT >> 20} MiB and were truncated; keep logs short")
        check_logs(result.stdout, result.stderr, identifiers, verdict)
        size, largest = _scan_output(output_dir)
        at_limit = largest >= settings.max_output_bytes
        if at_limit and code_was_not_sigxfsz(result):
            verdict.problems.append(
                f"a file in the output directory reached the per-file limit of {settings.max_output_bytes >> 20} MiB "
                "and "
                "further writes failed (EFBIG). Write only predictions.json and masks to the output directory."
            )
        elif size > settings.max_output_bytes:
            verdict.problems.append(
                f"wrote {size >> 20} MiB to the output directory; the limit is {settings.max_output_bytes >> 20} MiB"
            )
        _limit_problems(result, settings, bool(at_limit and code_was_not_sigxfsz(result)), verdict)
        if not (result.timed_out or result.memory_exceeded):
            doc = check_predictions(output_dir, manifest, settings.task, verdict, work_dir)
            if doc is not None and verdict.conformant:
                _sample_score(settings, sample, output_dir, work_dir, verdict)
        for line in verdict.passed:
            say(f"  ok    {line}")
        for line in verdict.notes:
            say(f"  note  {line}")
        for line in verdict.problems:
            say(f"  FAIL  {line}")
        if verdict.conformant:
            say("verdict: CONFORMANT to vendor contract v1")
            return EXIT_CONFORMANT
        say(f"verdict: NOT CONFORMANT ({len(verdict.problems)} problem{'s' if len(verdict.problems) != 1 else ''})")
        return EXIT_NOT_CONFORMANT
    finally:
        if settings.keep is not None:
            settings.keep.mkdir(parents=True, exist_ok=True)
            shutil.copytree(workdir, settings.keep, dirs_exist_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)


def code_was_not_sigxfsz(result: Any) -> bool:
    return result.returncode != -signal.SIGXFSZ


def _check_manifest(path: Path, task: str, verdict: Verdict) -> None:
    try:
        manifest = AlgorithmManifest.model_validate_json(path.read_bytes())
    except OSError as exc:
        verdict.problems.append(f"image manifest {path}: {exc.strerror}")
        return
    except ValueError as exc:
        lines = describe_errors(exc) if hasattr(exc, "errors") else [str(exc)]  # type: ignore[arg-type]
        verdict.problems.append(
            f"image manifest {path} is not a valid algorithm.json:\n" + "\n".join(f"      - {e}" for e in lines)
        )
        return
    if manifest.task != task:
        verdict.problems.append(f"image manifest declares task {manifest.task!r}, checked as {task!r}")
    else:
        verdict.passed.append(f"image manifest {manifest.name} {manifest.version} is valid")


def _sample_score(settings: CheckSettings, sample: Any, output: Path, work: Path, verdict: Verdict) -> Any:
    """Score the sample output into ``verdict``; the report, or None when the scorer rejected it."""
    from lightbox.sandbox.scorer import ScoreError, score

    cfg = ScorerConfig(
        task=settings.task, labels=sample.labels, positive_label=sample.positive_label,  # type: ignore[arg-type]
        packaging=settings.packaging,  # type: ignore[arg-type]
        bootstrap={"resamples": 200, "level": "case"},  # type: ignore[arg-type]
        # synthetic data on the vendor's own machine: no cell to protect, and a handful of cases
        min_subgroup_size=1,
    )
    try:
        report, _ = score(cfg, output, sample.truth_dir, work)
    except ScoreError as exc:
        verdict.problems.append(f"the scorer rejected the output: {exc.message}")
        return None
    shown = {
        k: v.value
        for k, v in report.metrics.items()
        if k in ("auc", "sensitivity", "specificity", "dice", "hd95", "frocSensitivity")
    }
    if shown:
        verdict.notes.append(
            "on the synthetic sample (for information only): " + ", ".join(f"{k} {v:.3f}" for k, v in shown.items())
        )
    return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lightbox vendor check",
        description="Run an algorithm against a sample input and check it against vendor contract v1.",
    )
    p.add_argument("--task", choices=["classification", "detection", "segmentation"], default="classification")
    p.add_argument("--cases", type=int, default=12, help="sample cases to generate (default 12)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample data")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds before the command is killed (default 300)")
    p.add_argument("--max-output-mb", type=int, default=64, help="largest file / total output in MiB (default 64)")
    p.add_argument(
        "--memory-mb", type=int, help="kill the command when its resident memory goes over this many MiB "
        "(use the Algorithm's resources.memory; default: not limited)"
    )
    p.add_argument(
        "--max-output-files", type=int, default=10000, help="most files in the output directory (default 10000)"
    )
    p.add_argument("--max-processes", type=int, default=512, help="most processes and threads at once (default 512)")
    p.add_argument(
        "--expose", type=Path, action="append", default=[], metavar="PATH",
        help="also show PATH to the command, read-only (e.g. model weights outside the current directory); repeatable",
    )
    p.add_argument(
        "--packaging",
        choices=["lightbox", "monai-map", "grand-challenge"],
        default="lightbox",
        help="the packaging the algorithm follows (docs/packaging.md): other than lightbox, it runs once per case",
    )
    p.add_argument(
        "--manifest",
        type=Path,
        help="also validate this algorithm.json image manifest (monai-map: app.json, with pkg.json beside it)",
    )
    p.add_argument("--keep", type=Path, help="copy the sample input/output here for debugging")
    p.add_argument("--image", metavar="REF", help="run this image (a name the runtime has, or oci-archive:PATH) as the "
                   "run pod does; arguments after -- replace its CMD")
    p.add_argument(
        "--runtime",
        choices=["auto", "podman", "docker", "ctr"],
        default="auto",
        help="with --image (default: the first available)",
    )
    p.add_argument(
        "--containerd-address", type=Path, help="with --runtime ctr: this containerd's socket instead of a private one"
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    return p


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or args_in[0] != "check":
        print("usage: lightbox vendor check [--task T] [--cases N] [--timeout S] -- COMMAND...", file=sys.stderr)
        return EXIT_USAGE
    args = _parser().parse_args(args_in[1:])
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command and not args.image:
        print("lightbox vendor check: give the algorithm's command after --", file=sys.stderr)
        return EXIT_USAGE
    if args.cases < 2:
        print("lightbox vendor check: --cases must be at least 2", file=sys.stderr)
        return EXIT_USAGE
    settings = CheckSettings(
        task=args.task, cases=args.cases, seed=args.seed, timeout=args.timeout,
        max_output_bytes=args.max_output_mb << 20, keep=args.keep, manifest=args.manifest,
        max_memory_bytes=args.memory_mb << 20 if args.memory_mb is not None else None,
        max_processes=args.max_processes, max_output_files=args.max_output_files, expose=tuple(args.expose),
        packaging=args.packaging,
    )
    if args.image:
        from lightbox.sandbox.imagecheck import check_image

        return check_image(
            args.image, command, settings, runtime=args.runtime, containerd_address=args.containerd_address
        )
    return run_check(command, settings)


if __name__ == "__main__":
    sys.exit(main())
