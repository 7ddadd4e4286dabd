"""Unit-tier policy: in CI a skipped test is a failure.

A skip hides a missing prerequisite (no user namespaces, no de-identification
verifier, ...) behind a green run, and production treats the same missing
prerequisite as fail-closed. So when the ``CI`` environment variable is set to a
true value (GitHub Actions and most CI systems set ``CI=true``), every skip in
this directory, at collection or at run time, is reported as a failure that
names the skip's reason. ``xfail`` is left alone: it is an expected failure, not
a skip. Locally (``CI`` unset) skips stay skips.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

_TRUE = {"1", "true", "yes", "on"}


def ci_enabled(environ: Any = os.environ) -> bool:
    return str(environ.get("CI", "")).strip().lower() in _TRUE


def _skip_reason(longrepr: Any) -> str:
    # A skip's longrepr is (path, lineno, "Skipped: reason"); keep just the reason.
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_skip(report: Any, where: str) -> None:
    reason = _skip_reason(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped in CI ({where}), which the unit tier treats as a failure: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and ci_enabled():
        _fail_skip(report, report.when)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and ci_enabled():
        _fail_skip(report, "collection")
