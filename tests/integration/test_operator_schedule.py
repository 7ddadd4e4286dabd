"""Continuous monitoring on the real control plane: cron ticks become runs, history is pruned.

Cron has minute resolution, so this test waits for two real ticks (one to two
minutes); everything about tick arithmetic is in the unit tests of runs.py.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from operator_harness import (
    Operator,
    apply_sample,
    delete_policy,
    get,
    jobs,
    local_runner,
    network_policies,
    runs_of,
    validation,
    wait_for,
)

pytestmark = pytest.mark.integration


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _succeeded(number: int):
    def check(obj) -> bool:
        done = [r for r in runs_of(obj) if r["phase"] in {"Succeeded", "Failed"}]
        return bool(done) and done[-1]["number"] >= number

    return check


def test_each_tick_runs_once_and_history_keeps_the_latest(
    api_client, kubeconfig, kubectl, namespace, claim, tmp_path
):
    ns, pol = namespace, f"monitor-{namespace}"
    operator = Operator(kubeconfig, ns, tmp_path / "operator.log").start()
    try:
        with local_runner(api_client, claim, tmp_path / "runner"):
            apply_sample(kubectl, ns, pol, validation("monitor", "classifier", schedule="* * * * *", historyLimit=1))
            created = _time(get(api_client, "validations", ns, "monitor")["metadata"]["creationTimestamp"])

            # Scheduled, not run at creation: it waits for its first tick.
            waiting = wait_for(
                lambda: get(api_client, "validations", ns, "monitor"),
                lambda v: ((v or {}).get("status") or {}).get("nextRunTime"),
                timeout=60,
                what="the next run time in status",
                operator=operator,
            )
            next_run = _time(waiting["status"]["nextRunTime"])
            assert next_run > created and next_run.second == 0, waiting["status"]

            first = wait_for(
                lambda: get(api_client, "validations", ns, "monitor"),
                _succeeded(1),
                timeout=150,
                what="the first tick's run",
                operator=operator,
            )
            (r1,) = runs_of(first)
            assert (r1["name"], r1["phase"]) == ("monitor-r1", "Succeeded"), (r1, operator.tail())
            tick1 = _time(r1["scheduledFor"])
            assert tick1.second == 0 and tick1 > created
            (job,) = jobs(api_client, ns)
            assert _time(job["metadata"]["annotations"]["lightbox.dev/scheduled-for"]) == tick1

            second = wait_for(
                lambda: get(api_client, "validations", ns, "monitor"),
                _succeeded(2),
                timeout=150,
                what="the second tick's run",
                operator=operator,
            )
            # historyLimit 1: only the latest run is kept, in status and as a Job.
            (r2,) = runs_of(second)
            assert (r2["name"], r2["phase"]) == ("monitor-r2", "Succeeded"), (r2, operator.tail())
            assert (_time(r2["scheduledFor"]) - tick1).total_seconds() == 60
            assert second["status"]["phase"] == "Scheduled"
            assert _time(second["status"]["nextRunTime"]) > _time(r2["scheduledFor"])
            wait_for(
                lambda: sorted(j["metadata"]["name"] for j in jobs(api_client, ns)),
                lambda names: names == ["monitor-r2"],
                timeout=60,
                what="the first run's Job to be pruned",
                operator=operator,
            )
            wait_for(
                lambda: [
                    n["metadata"]["name"]
                    for n in network_policies(api_client, ns)
                    if n["metadata"]["name"].startswith("monitor-r")
                ],
                lambda names: names == ["monitor-r2"],
                timeout=60,
                what="the first run's NetworkPolicy to be pruned",
                operator=operator,
            )
    finally:
        operator.stop()
        delete_policy(api_client, pol)
