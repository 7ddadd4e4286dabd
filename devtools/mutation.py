"""Mutation testing of the trust-critical modules: ``make mutation`` (a benchmark, not a test).

mutmut 3 derives a mutant's module name from its file path and copies the tree into
``mutants/``, while Lightbox maps import packages from folders (``operator/`` is
``lightbox.operator``). So the run happens in a scratch folder (``.mutation/``) laid out as
the import names say (``src/lightbox/operator/...``, mapping read from pyproject.toml), from
the HEAD commit, never in the checkout: mutants are written to disk, and nothing else working
in this checkout must import them. Each group of modules is one mutmut run over the unit-tier
files that import it (and its ``test_mutation_kills_*.py``); per mutant, mutmut runs only the
tests that called the mutated function (recorded in one instrumented run first).

mutmut mutates code inside functions only. Module-level tables (e.g. verdict's comparison
operators) and whole-statement deletions are covered by NAMED_MUTANTS: the plausible bugs of
issue 14, each applied by text substitution to its own scratch copy, with the tests that must
kill it. A substitution that no longer matches the source is reported as such, not as killed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

#: The modules a region's trust rests on (import paths as laid out under src/), in groups
#: that share their tests; each group is one mutmut run.
GROUPS: dict[str, tuple[str, ...]] = {
    "verdict": ("lightbox/operator/verdict.py",),
    "admission": ("lightbox/operator/admission.py",),
    "builders": ("lightbox/operator/builders.py",),
    "outcome": ("lightbox/operator/outcome.py",),
    "scorer": ("lightbox/sandbox/scorer.py",),
    "metrics": ("lightbox/sandbox/metrics/*.py",),
    "pseudonyms": ("lightbox/sandbox/deid/pseudonyms.py",),
    "phi-gate": ("lightbox/sandbox/deidgate.py", "lightbox/sandbox/stager.py"),
}

#: Unit-tier files left out of every run: they start process trees or vendor containers, or
#: simulate thousands of data sets (seconds each); run for every mutant of a function they
#: touch, they would cost hours. The unit tier keeps them; a mutant they alone kill shows
#: here as a survivor, so the score errs low, not high.
SLOW_TESTS = (
    "test_vendorcheck.py",
    "test_metrics_coverage.py",
    "test_deid_leaks.py",
    "test_reference.py",
    "test_isolation.py",
    "test_localrunner_execution.py",
)

# mutmut's exit codes for a mutant (mutmut.stats.status_by_exit_code).
KILLED = {
    1: "killed",
    3: "killed",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    37: "type check",
}
NOT_KILLED = {
    0: "survived",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    35: "suspicious",
    -11: "segfault",
    -9: "segfault",
}


@dataclass(frozen=True)
class NamedMutant:
    """One plausible bug: replace ``old`` by ``new`` in ``path`` (repository path)."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


NAMED_MUTANTS = (
    NamedMutant(
        "verdict: <= becomes >=",
        "operator/verdict.py",
        '"<=": op.le',
        '"<=": op.ge',
        ("tests/unit/test_verdict.py",),
    ),
    NamedMutant(
        "admission: ephemeral-storage limit not checked",
        "operator/admission.py",
        '        ("ephemeralStorage", spec.resources.ephemeral_storage, rules.max_ephemeral_storage),\n',
        "",
        ("tests/unit/test_admission.py", "tests/unit/test_mutation_kills_admission.py"),
    ),
    NamedMutant(
        "admission: verified Dataset without content hash admitted",
        "operator/admission.py",
        "if status is None or not status.verified or not status.content_hash:",
        "if status is None or not status.verified:",
        ("tests/unit/test_admission.py", "tests/unit/test_mutation_kills_admission.py"),
    ),
    NamedMutant(
        "classification: Wilson intervals fixed at 95%",
        "sandbox/metrics/classification.py",
        "lo, hi = wilson_interval(successes, trials, confidence_level)",
        "lo, hi = wilson_interval(successes, trials, 0.95)",
        ("tests/unit/test_metrics_classification.py", "tests/unit/test_mutation_kills_metrics.py"),
    ),
    NamedMutant(
        "scorer: suppression n < min becomes n <= min",
        "sandbox/scorer.py",
        "if n < cfg.min_subgroup_size:",
        "if n <= cfg.min_subgroup_size:",
        ("tests/unit/test_scorer.py", "tests/unit/test_mutation_kills_scorer.py"),
    ),
    NamedMutant(
        "pseudonyms: output names from an unkeyed hash",
        "sandbox/deid/pseudonyms.py",
        'return self.digest("path-" + purpose, value)[:10].hex()',
        'return hashlib.sha256(("path-" + purpose).encode() + b"\\0" + value.encode()).digest()[:10].hex()',
        ("tests/unit/test_deid_pseudonyms.py", "tests/unit/test_deid_behaviour.py"),
    ),
    NamedMutant(
        "stager: spacing (row, col, slice) instead of (slice, row, col)",
        "sandbox/stager.py",
        "return [round(slice_gap, 6), row, col]",
        "return [row, col, round(slice_gap, 6)]",
        ("tests/unit/test_stager.py", "tests/unit/test_scorer.py", "tests/unit/test_mutation_kills_stager.py"),
    ),
)


def package_dirs(repo: Path) -> dict[str, str]:
    """Import package -> folder, as pyproject.toml maps them for setuptools."""
    config = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(config["tool"]["setuptools"]["package-dir"])


def snapshot(repo: Path, dest: Path, worktree: bool) -> Path:
    """The committed tree (HEAD) as files under ``dest``; the checkout itself with ``worktree``.

    HEAD by default: others' uncommitted edits in a shared checkout must not make a test fail
    (mutmut then refuses to run) or, worse, pass for the wrong reason."""
    if worktree or not (repo / ".git").exists():
        return repo
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", "HEAD"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def commit_of(repo: Path) -> str:
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def lay_out(repo: Path, dest: Path) -> None:
    """Copy sources under ``dest/src`` as their import names say, plus what the tests read."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    mapping = package_dirs(repo)
    # Parents first, so lightbox/ exists before lightbox/operator is put into it.
    for package in sorted(mapping, key=lambda p: p.count(".")):
        target = dest / "src" / Path(*package.split("."))
        shutil.copytree(repo / mapping[package], target, ignore=ignore, dirs_exist_ok=True)
    # Tests read docs, examples, charts and CRDs from the repository root: copy all of it.
    for entry in extras(repo):
        if (repo / entry).is_dir():
            shutil.copytree(repo / entry, dest / entry, ignore=ignore, symlinks=True)
        else:
            shutil.copy2(repo / entry, dest / entry)


def extras(repo: Path) -> list[str]:
    """Top-level entries other than the packages' folders, version control and scratch."""
    skip = set(package_dirs(repo).values()) | {".git", ".venv", ".mutation", ".lightbox", "mutants", "pyproject.toml"}
    return sorted(p.name for p in repo.iterdir() if p.name not in skip and not p.name.endswith(".egg-info"))


def mutmut_config(modules: Sequence[str], tests: Sequence[str], also_copy: Sequence[str]) -> str:
    def toml_list(items: Iterable[str]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["src/lightbox"]\n'
        f"only_mutate = {toml_list('src/' + m for m in modules)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n'
        f"also_copy = {toml_list(also_copy)}\n"
        # Results are recomputed from scratch every run: a benchmark must not reuse verdicts.
        "use_git_change_detection = false\n"
    )


def relevant_tests(work: Path, modules: Sequence[str]) -> list[str]:
    """Unit-tier files that import one of ``modules``, plus its test_mutation_kills_<stem>.py."""
    names = []
    for module in modules:
        dotted = module.removesuffix(".py").replace("/", ".")
        parent, _, stem = dotted.rpartition(".")
        pattern = re.compile(rf"\b{re.escape(dotted)}\b|from {re.escape(parent)} import [^\n]*\b{stem}\b")
        names.append(pattern)
    chosen = []
    for path in sorted((work / "tests" / "unit").glob("test_*.py")):
        if path.name in SLOW_TESTS:
            continue
        text = path.read_text(encoding="utf-8")
        stems = {Path(m).stem for m in modules}
        if any(p.search(text) for p in names) or path.stem.removeprefix("test_mutation_kills_") in stems:
            chosen.append(path.relative_to(work).as_posix())
    return chosen


def expand(src: Path, patterns: Sequence[str]) -> list[str]:
    files = sorted({p.relative_to(src).as_posix() for pattern in patterns for p in src.glob(pattern)})
    return [f for f in files if not f.endswith("__init__.py")]


@dataclass
class Tally:
    killed: int = 0
    total: int = 0

    @property
    def score(self) -> float:
        return self.killed / self.total if self.total else float("nan")


def read_results(mutants: Path) -> dict[str, dict[str, int | None]]:
    """Per mutated file (import path), mutant name -> exit code, from mutmut's .meta files."""
    results = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        data = json.loads(meta.read_text(encoding="utf-8"))
        module = meta.relative_to(mutants / "src").as_posix().removesuffix(".meta")
        results[module] = data.get("exit_code_by_key", {})
    return results


def status(code: int | None) -> str:
    if code is None:
        return "not checked"
    return KILLED.get(code) or NOT_KILLED.get(code, f"exit {code}")


_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
print(json.dumps({name: get_diff_for_mutant(name) for name in json.load(sys.stdin)}))
"""


def survivor_diffs(work: Path, names: Sequence[str], env: dict[str, str]) -> dict[str, str]:
    """Each mutant's change as -/+ lines; one process for all (``mutmut show`` is one per mutant)."""
    if not names:
        return {}
    done = subprocess.run(
        [sys.executable, "-c", _DIFFS], input=json.dumps(list(names)), cwd=work, env=env, capture_output=True, text=True
    )
    try:
        diffs = json.loads(done.stdout)
    except ValueError:
        diffs = {}
        for name in names:  # mutmut's internals moved: ask it one mutant at a time
            shown = subprocess.run(
                [sys.executable, "-m", "mutmut", "show", name], cwd=work, env=env, capture_output=True, text=True
            )
            diffs[name] = shown.stdout
    return {
        name: "\n".join(
            f"    {line}"
            for line in diffs.get(name, "").splitlines()
            if line[:1] in "+-" and not line.startswith(("+++", "---"))
        )
        for name in names
    }


def _run_mutmut(work: Path, repo: Path, modules: Sequence[str], selection: Sequence[str], children: int) -> bool:
    """Configure and run mutmut in ``work``; False when it could not start (a test failed)."""
    (work / "pyproject.toml").write_text(
        (repo / "pyproject.toml").read_text(encoding="utf-8") + mutmut_config(modules, selection, extras(repo)),
        encoding="utf-8",
    )
    mutmut = Path(sys.executable).with_name("mutmut")
    if not mutmut.exists():
        raise SystemExit(f"{mutmut} not found: pip install -e '.[test,mutation]'")
    shutil.rmtree(work / "mutants", ignore_errors=True)
    with (work / "mutmut.log").open("w") as out:
        # mutmut's exit status says nothing about the score; its results files do.
        subprocess.run(
            [str(mutmut), "run", "--max-children", str(children)],
            cwd=work,
            env={**os.environ, "PYTHONSAFEPATH": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    results = read_results(work / "mutants")
    return bool(results) and any(code is not None for codes in results.values() for code in codes.values())


def run_group(repo: Path, work: Path, patterns: Sequence[str], children: int, tests: Sequence[str]) -> dict[str, Any]:
    """One mutmut run; per module: [killed, total, [(mutant, status, diff), ...]]."""
    if work.exists():
        shutil.rmtree(work)
    lay_out(repo, work)
    modules = expand(work / "src", patterns)
    selection = list(tests) or relevant_tests(work, modules)
    print(f"  mutating {', '.join(modules)}; tests: {' '.join(Path(t).name for t in selection)}", flush=True)
    excluded: list[str] = []
    if not _run_mutmut(work, repo, modules, selection, children):
        # mutmut needs every selected test to pass unmutated. One that fails anyway can kill
        # nothing: leave it out, say so, and try once more.
        _, excluded_set, tail = _pytest(work, [t for t in selection if not t.startswith("-")])
        excluded = sorted(excluded_set)
        if not excluded:
            print(
                f"  mutmut could not run and no test fails on its own ({tail}); see {work / 'mutmut.log'}", flush=True
            )
            return {}
        print(f"  these tests fail without any mutant and are left out: {', '.join(excluded)}", flush=True)
        if not _run_mutmut(work, repo, modules, [*selection, *(f"--deselect={t}" for t in excluded)], children):
            print(f"  mutmut could not run; see {work / 'mutmut.log'}", flush=True)
            return {}
    return {"modules": summarize(work), "excluded_tests": excluded, "tests": selection}


def save_group(work: Path, group: str, found: dict[str, Any], seconds: float, commit: str) -> None:
    record = {"group": group, "commit": commit, "seconds": round(seconds), **found}
    (work / "summary.json").write_text(json.dumps(record, indent=1), encoding="utf-8")


def summarize(work: Path) -> dict[str, Any]:
    """Per module: [killed, total, [(mutant, status, diff), ...]] from mutmut's files in ``work``."""
    results = read_results(work / "mutants")
    not_killed = [
        name for codes in results.values() for name, code in codes.items() if code not in KILLED and code is not None
    ]
    diffs = survivor_diffs(work, not_killed, {**os.environ, "PYTHONSAFEPATH": "1"})
    summary: dict[str, Any] = {}
    for module, codes in results.items():
        left = [(name, status(code), diffs.get(name, "")) for name, code in sorted(codes.items()) if code not in KILLED]
        summary[module] = [len(codes) - len(left), len(codes), left]
    return summary


def print_report(bases: Sequence[Path], groups: Sequence[str]) -> Tally:
    """The table over every group's last run (the first of ``bases`` holding one), and the survivors.

    A run stopped before the end still counts what it checked: its mutants not checked are
    shown as such, and the score is over the mutants checked."""
    summary: dict[str, list] = {}
    lines = []
    for group in groups:
        finished = [b / group for b in bases if (b / group / "summary.json").exists()]
        stopped = [b / group for b in bases if (b / group / "mutants").is_dir()]
        if not finished and not stopped:
            lines.append(f"  {group}: not run")
            continue
        # The latest finished run, else the latest one stopped on the way.
        if finished:
            work = max(finished, key=lambda w: (w / "summary.json").stat().st_mtime)
        else:
            work = max(stopped, key=lambda w: (w / "mutants").stat().st_mtime)
        if (work / "summary.json").exists():
            record = json.loads((work / "summary.json").read_text(encoding="utf-8"))
            excluded = record["excluded_tests"]
            lines.append(
                f"  {group}: at {record['commit']}, {record['seconds']} s"
                + (f"; left out as failing unmutated: {', '.join(excluded)}" if excluded else "")
            )
            summary.update(record["modules"])
        else:
            lines.append(f"  {group}: stopped before the end (mutants not checked are listed as such)")
            summary.update(summarize(work))
    overall = Tally()
    checked = 0
    width = max((len(m) for m in summary), default=10)
    print(f"\n{'module':<{width}}  killed/checked  score   not killed")
    for module, (killed, total, left) in summary.items():
        kinds = Counter(why for _, why, _ in left)
        done = total - kinds.get("not checked", 0)
        overall.killed += killed
        overall.total += total
        checked += done
        detail = ", ".join(f"{n} {why}" for why, n in sorted(kinds.items()))
        print(f"{module:<{width}}  {killed:>6}/{done:<6}  {Tally(killed, done).score:6.1%}  {detail}")
    print(f"{'overall':<{width}}  {overall.killed:>6}/{checked:<6}  {Tally(overall.killed, checked).score:6.1%}")
    print("\nruns:\n" + "\n".join(lines))
    survivors = [
        (name, why, diff) for _, _, left in summary.values() for name, why, diff in left if why != "not checked"
    ]
    print(f"\n{len(survivors)} mutants checked and not killed:")
    for name, why, diff in survivors:
        print(f"- {name} ({why})\n{diff}")
    unchecked = overall.total - checked
    tail = f"; {unchecked} not checked" if unchecked else ""
    print(f"\nmutmut: {overall.killed}/{checked} killed ({Tally(overall.killed, checked).score:.1%}){tail}", flush=True)
    return overall


def run_mutmut(repo: Path, work: Path, only: Sequence[str], children: int, tests: Sequence[str], commit: str) -> int:
    unknown = set(only) - set(GROUPS)
    if unknown:
        raise SystemExit(f"unknown group(s) {sorted(unknown)}; choose among {list(GROUPS)}")
    started = time.monotonic()
    for group in only or GROUPS:  # in the order asked for
        patterns = GROUPS[group]
        group_started = time.monotonic()
        print(f"\n[{group}]", flush=True)
        found = run_group(repo, work / group, patterns, children, tests)
        if not found:
            continue
        for module, (killed, total, _) in found["modules"].items():
            print(f"  {module}: {killed}/{total} killed", flush=True)
        seconds = time.monotonic() - group_started
        print(f"  {seconds:.0f} s", flush=True)
        save_group(work / group, group, found, seconds, commit)
    overall = print_report([work], list(GROUPS))
    print(f"this run: {time.monotonic() - started:.0f} s", flush=True)
    return 0 if overall.total else 1


def _pytest(work: Path, tests: Sequence[str]) -> tuple[int, set[str], str]:
    """(exit status, failed test ids, last line) of the tests run against ``work/src``."""
    env = {**os.environ, "PYTHONSAFEPATH": "1", "PYTHONPATH": str(work / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", "--rootdir", str(work), *tests],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    failed = {line.split(" ")[1] for line in done.stdout.splitlines() if line.startswith("FAILED ")}
    tail = (done.stdout.strip().splitlines() or ["no output"])[-1]
    return done.returncode, failed, tail


def run_named(repo: Path, work: Path) -> int:
    """Apply each named mutant to a fresh copy and run its tests; report which kill it.

    A test counts as killing a mutant only if it passes on the unmutated copy."""
    print("\nnamed mutants (issue 14):", flush=True)
    failures = 0
    mapping = {folder: package for package, folder in package_dirs(repo).items()}
    baselines: dict[tuple[str, ...], tuple[int, set[str], str]] = {}
    for mutant in NAMED_MUTANTS:
        if work.exists():
            shutil.rmtree(work)
        lay_out(repo, work)
        tests = tuple(t for t in mutant.tests if (work / t).exists())
        if tests not in baselines:
            baselines[tests] = _pytest(work, tests)
        base_code, base_failed, base_tail = baselines[tests]
        folder, _, rest = mutant.path.partition("/")
        target = work / "src" / Path(*mapping[folder].split(".")) / rest
        source = target.read_text(encoding="utf-8")
        if source.count(mutant.old) != 1:
            print(f"  NOT APPLIED  {mutant.name}: the text to change is not in {mutant.path} exactly once", flush=True)
            failures += 1
            continue
        target.write_text(source.replace(mutant.old, mutant.new), encoding="utf-8")
        code, failed, tail = _pytest(work, tests)
        killers = sorted(failed - base_failed)
        if killers:
            more = f" and {len(killers) - 3} more" if len(killers) > 3 else ""
            print(f"  killed       {mutant.name}: by {', '.join(killers[:3])}{more}", flush=True)
        else:
            failures += 1
            print(f"  SURVIVED     {mutant.name} (pytest exit {code}: {tail})", flush=True)
        if base_failed:
            print(
                f"               (these tests fail without the mutant too: {', '.join(sorted(base_failed))})",
                flush=True,
            )
        elif base_code != 0:
            print(
                f"               (the tests do not pass without the mutant: exit {base_code}, {base_tail})", flush=True
            )
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help=f"group(s) to mutate, of {list(GROUPS)}")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--work", type=Path, default=REPO / ".mutation", help="scratch folder (deleted first)")
    parser.add_argument(
        "--tests", nargs="*", default=[], help="pytest selection instead of each group's tests (trials)"
    )
    parser.add_argument("--skip-named", action="store_true", help="only the mutmut run")
    parser.add_argument("--named-only", action="store_true", help="only the named mutants of issue 14")
    parser.add_argument("--report", action="store_true", help="only print the table of the groups' last runs")
    parser.add_argument(
        "--also", type=Path, action="append", default=[], help="with --report: more scratch folders to read"
    )
    parser.add_argument("--worktree", action="store_true", help="use the checkout as it is, not its HEAD commit")
    args = parser.parse_args(argv)
    if args.report:
        bases = [args.work / "mutmut", *(a / "mutmut" for a in args.also)]
        return 0 if print_report(bases, list(GROUPS)).total else 1
    source = snapshot(REPO, args.work / "source", args.worktree)
    commit = commit_of(REPO) + (" with uncommitted changes" if source == REPO else "")
    print(f"sources: commit {commit}", flush=True)
    status_code = 0
    if not args.named_only:
        status_code |= run_mutmut(source, args.work / "mutmut", args.only, args.max_children, args.tests, commit)
    if not args.skip_named:
        status_code |= 1 if run_named(source, args.work / "named") else 0
    return status_code


if __name__ == "__main__":
    sys.exit(main())
