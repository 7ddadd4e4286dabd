"""``lightbox vendor check --packaging monai-map|grand-challenge``: the same sandbox and verdict
lines as for Lightbox's contract, with the run pod's layout for these packagings: the sample is
staged as the packaging expects and the command (or image) runs once per case, seeing only that
case's input at /input and its own /output; then each case's result is read as the scorer reads it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lightbox.api.run import StagerConfig
from lightbox.sandbox import packaging
from lightbox.sandbox.deidgate import verify_tree
from lightbox.sandbox.isolation import IsolationUnavailable, View, run_isolated
from lightbox.sandbox.packaging_map import ManifestError, MapManifest, read_from_folder
from lightbox.sandbox.sampledata import make_sample_dataset
from lightbox.sandbox.stager import stage


def _manifest_lines(settings: Any, verdict: Any) -> None:
    """``--manifest DIR`` (or the image's, read from its layers): a MAP's app.json and pkg.json."""
    manifest: MapManifest | None = getattr(settings, "map_manifest", None)
    if settings.manifest is not None:
        folder = settings.manifest if settings.manifest.is_dir() else settings.manifest.parent
        try:
            manifest = read_from_folder(folder)
        except OSError as exc:
            verdict.problems.append(f"MAP manifest {folder}/app.json: {exc.strerror}")
            return
        except ManifestError as exc:
            verdict.problems.append(f"MAP manifest: {exc}")
            return
    if manifest is not None:
        verdict.passed.append(
            f"MAP manifest (spec {manifest.spec_version}): command {' '.join(manifest.command)[:120]}; "
            f"needs cpu {manifest.cpu:g}, "
            f"memory {manifest.memory}, gpu {manifest.gpu} (the Algorithm's resources must be at least these)"
        )
    elif getattr(settings, "map_manifest_error", None):
        verdict.problems.append(f"MAP manifest: {settings.map_manifest_error}")


def _run_case(command: list[str], settings: Any, case_in: Path, case_out: Path, workdir: Path) -> Any:
    from lightbox.sandbox.vendorcheck import LOG_LIMIT, VIEW_INPUT, VIEW_OUTPUT, runtime_binds

    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        **packaging.vendor_environment(settings.packaging, VIEW_INPUT, VIEW_OUTPUT),
    }
    binds, start_in = runtime_binds(command, Path.cwd(), settings.expose, workdir)
    view = View(
        binds=[(case_in, VIEW_INPUT), *binds],
        output_host=case_out,
        output=VIEW_OUTPUT,
        max_output_bytes=settings.max_output_bytes,
        max_output_files=settings.max_output_files,
        max_tmp_bytes=settings.max_output_bytes,
        max_processes=settings.max_processes,
    )
    return (settings.runner or run_isolated)(
        command,
        env=env,
        hidden=[workdir],
        timeout=settings.timeout,
        max_output_bytes=LOG_LIMIT,
        cwd=start_in,
        max_file_bytes=settings.max_output_bytes,
        max_memory_bytes=settings.max_memory_bytes,
        view=view,
    )


def _case_problems(result: Any, settings: Any) -> list[str]:
    from lightbox.sandbox.vendorcheck import _signal_name, _tail

    if result.memory_exceeded:
        return [
            f"went over the memory limit of {(settings.max_memory_bytes or 0) >> 20} MiB and was killed "
            "(OOMKilled in a run pod)"
        ]
    if result.timed_out:
        return [
            f"did not exit within {settings.timeout:g} s and was killed; "
            "the Algorithm's timeoutSeconds bounds all cases together"
        ]
    code = result.returncode
    if code is not None and code < 0:
        return [f"killed by {_signal_name(-code)}.\n{_tail(result.stderr)}"]
    if code:
        return [
            f"exited with code {code}; a run pod stops at the first case that fails. "
            f"Last lines of stderr:\n{_tail(result.stderr)}"
        ]
    return []


def run_check(command: list[str], settings: Any, out: Any = None) -> int:
    from lightbox.sandbox import vendorcheck as vc

    def say(text: str = "") -> None:
        print(text, file=out or __import__("sys").stdout)

    workdir = Path(tempfile.mkdtemp(prefix="lightbox-vendor-check-"))
    try:
        sample = make_sample_dataset(workdir / "data", settings.cases, settings.seed, settings.task)
        input_dir, output_dir, work_dir = workdir / "input", workdir / "output", workdir / "work"
        config = StagerConfig(
            task=settings.task,
            packaging=settings.packaging,
            labels=sample.labels,
            deid_options=sample.deid_options,  # type: ignore[arg-type]
        )
        stage(sample.studies_dir, input_dir, work_dir, config, verifier=verify_tree, output_dir=output_dir)
        from lightbox.sandbox.scorer import load_cases

        cases = load_cases(work_dir)
        identifiers = vc.sample_identifiers(sample.studies_dir)
        say(
            f"lightbox vendor check: {settings.task}, packaging {settings.packaging}, {len(cases)} sample cases, "
            f"one run per case, timeout {settings.timeout:g} s each"
        )
        say(f"  command: {' '.join(command) or '(the image entry point)'}")
        verdict = vc.Verdict()
        _manifest_lines(settings, verdict)
        failed: dict[str, list[str]] = {}
        network = 0
        for case in cases:
            try:
                result = _run_case(command, settings, input_dir / case, output_dir / case, workdir)
            except IsolationUnavailable as exc:
                say(f"  cannot check: isolation unavailable: {exc.reason}")
                return vc.EXIT_CANNOT_CHECK
            for problem in _case_problems(result, settings):
                failed.setdefault(problem, []).append(case)
            network += result.network_attempts
            vc.check_logs(result.stdout, result.stderr, identifiers, verdict)
            vc._limit_problems(result, settings, False, verdict)
        for problem, names in failed.items():
            verdict.problems.append(f"{problem} (cases {vc._names(names)})")
        if not failed:
            verdict.passed.append(f"exited with code 0 for each of {len(cases)} cases")
        if network:
            verdict.problems.append(
                f"tried to use the network ({network} blocked DNS lookups or connections); "
                "there is no network in the sandbox"
            )
        else:
            verdict.passed.append("no network use")
        # one log check per case: report each distinct line once
        verdict.passed = list(dict.fromkeys(verdict.passed))
        verdict.problems = list(dict.fromkeys(verdict.problems))
        positive = sample.positive_label
        try:
            collected = packaging.collect(settings.packaging, settings.task, output_dir, cases, positive)
        except Exception as exc:  # noqa: BLE001 - safeio.HostileOutput: what the scorer refuses the run for
            verdict.problems.append(f"refused, as the scorer refuses the whole run: {exc}")
            collected = None
        if collected is not None:
            by_reason: dict[str, list[str]] = {}
            for case, reason in collected.reasons.items():
                by_reason.setdefault(reason, []).append(case)
            for reason, names in by_reason.items():
                verdict.problems.append(f"result {reason}: {vc._names(names)}")
            if collected.reasons:
                readable = len(cases) - len(collected.reasons)
                verdict.problems.append(
                    f"a readable {settings.packaging} result for {readable} of {len(cases)} cases; "
                    "in a run the others count as failures"
                )
            else:
                verdict.passed.append(f"a readable {settings.packaging} result for each of {len(cases)} cases")
            # Scored even when some results are missing, as a run scores them: the vendor sees the
            # count a run would report, not only the first missing file.
            _sample_score(settings, sample, output_dir, work_dir, verdict)
        for line in verdict.passed:
            say(f"  ok    {line}")
        for line in verdict.notes:
            say(f"  note  {line}")
        for line in verdict.problems:
            say(f"  FAIL  {line}")
        if verdict.conformant:
            say(f"verdict: CONFORMANT to packaging {settings.packaging} as Lightbox runs it")
            return vc.EXIT_CONFORMANT
        say(f"verdict: NOT CONFORMANT ({len(verdict.problems)} problem{'s' if len(verdict.problems) != 1 else ''})")
        return vc.EXIT_NOT_CONFORMANT
    finally:
        if settings.keep is not None:
            settings.keep.mkdir(parents=True, exist_ok=True)
            shutil.copytree(workdir, settings.keep, dirs_exist_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)


def _sample_score(settings: Any, sample: Any, output: Path, work: Path, verdict: Any) -> None:
    """vendorcheck's scoring of the sample, plus: every case of a per-case packaging must be scored."""
    from lightbox.sandbox.vendorcheck import _sample_score as score_sample

    report = score_sample(settings, sample, output, work, verdict)
    if report is not None and report.scored != report.cases:
        verdict.problems.append(f"the scorer scored {report.scored} of {report.cases} cases")
